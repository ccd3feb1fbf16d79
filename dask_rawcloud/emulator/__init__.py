"""Rehearse an AWS cluster on one machine: EC2 answered by moto on 127.0.0.1, nodes that really boot.

- ``Emulator`` (machines.py): a moto control plane whose tagged instances boot
  from their own user-data as local process groups, each on its own loopback
  address, with an instance metadata service and spot interruptions.
- ``FaultProxy`` (faults.py): sits in front of moto and answers chosen calls
  as AWS does under capacity shortages, quotas and throttling.
- ``MetadataService`` (metadata.py): IMDSv2 for the emulated instances.

Needs moto: ``pip install "dask-rawcloud[emulator]"``.
"""

from .faults import FaultProxy
from .machines import REHEARSAL, Emulator, Instance
from .metadata import MetadataService

__all__ = ["REHEARSAL", "Emulator", "FaultProxy", "Instance", "MetadataService"]
