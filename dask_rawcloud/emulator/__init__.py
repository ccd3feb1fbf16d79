"""Rehearse an AWS cluster on one machine: EC2 answered by moto on 127.0.0.1, with faults on demand.

``FaultProxy`` sits in front of the moto server and answers chosen calls as
AWS does under capacity shortages, quotas and throttling.
"""

from .faults import FaultProxy

__all__ = ["FaultProxy"]
