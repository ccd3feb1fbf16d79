"""Shared fixtures: an isolated state directory, no cloud credentials, a moto server, no leaks."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import uuid

# moto reads these when it is imported: a bad AMI or instance type is refused, as on AWS.
os.environ["MOTO_ENABLE_AMI_VALIDATION"] = "true"
os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "true"

import logging

import dask.config
import psutil
import pytest

from dask_rawcloud.providers.aws import TAG_CLUSTER
from dask_rawcloud.providers.local import node_processes

# The moto server logs every request; a failing test's report needs none of that.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

#: Regions the tests may use; the leak check looks in each.
TEST_REGIONS = ("us-east-1", "us-east-2", "us-west-2")

_STATE = pathlib.Path(tempfile.mkdtemp(prefix="rawcloud-test-state-"))
# Set before anything reads it, and inherited by every subprocess a test starts.
os.environ["DASK_RAWCLOUD__STATE_DIR"] = str(_STATE)
dask.config.set({"rawcloud.state-dir": str(_STATE)})
# Inherited by every node this session starts, so the leak check counts only ours.
_SESSION = uuid.uuid4().hex
os.environ["RAWCLOUD_TEST_SESSION"] = _SESSION
# Nodes run tasks from tests/tasks.py, so they import from here as any user's
# workers import the user's modules: the environment is the same.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(pathlib.Path(__file__).parent), os.environ.get("PYTHONPATH")])
)


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_the_suite():
    """After every test: no node process and no recorded cluster may remain."""
    yield
    leaked = {}
    for p in node_processes():
        try:
            if p.environ().get("RAWCLOUD_TEST_SESSION") == _SESSION:
                leaked[p.pid] = " ".join(p.cmdline())
                p.kill()
        except psutil.Error:
            pass  # ended meanwhile
    leftover = sorted(p.name for p in _STATE.iterdir())
    shutil.rmtree(_STATE, ignore_errors=True)
    assert not leaked, f"node processes leaked: {leaked}"
    assert not leftover, f"cluster state left behind: {leftover}"


@pytest.fixture(autouse=True)
def no_cloud_credentials(monkeypatch, tmp_path):
    """No test can reach a real cloud account, whatever the machine has set up."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    # botocore would otherwise look for credentials at 169.254.169.254.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _ec2(url: str, region: str):
    import boto3

    return boto3.client("ec2", endpoint_url=url, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def moto_url():
    """A real moto server over HTTP on 127.0.0.1; after the suite, nothing tagged may remain."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url
        leaks = []
        tagged = [{"Name": "tag-key", "Values": [TAG_CLUSTER]}]
        for region in TEST_REGIONS:
            ec2 = _ec2(url, region)
            live = ec2.describe_instances(Filters=[*tagged, {
                "Name": "instance-state-name",
                "Values": ["pending", "running", "shutting-down", "stopping", "stopped"]}])
            leaks += [i["InstanceId"] for r in live["Reservations"] for i in r["Instances"]]
            leaks += [g["GroupId"] for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]]
            leaks += [t["LaunchTemplateId"]
                      for t in ec2.describe_launch_templates(Filters=tagged)["LaunchTemplates"]]
        assert not leaks, f"EC2 resources left behind: {leaks}"
    finally:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch):
    """Credentials that only the local moto server accepts."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def ec2(moto_url):
    """A plain boto3 view of the moto server, to check what the provider really did."""
    return lambda region="us-east-1": _ec2(moto_url, region)


@pytest.fixture
def state_dir() -> pathlib.Path:
    return _STATE
