"""The parts on their own: batching, the meter, certificates, the local provider."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from distributed import Client

import dask_rawcloud
from dask_rawcloud import RawCloudCluster, WorkerPool
from dask_rawcloud.cost import Meter, busy_worker_seconds, last_task_end
from dask_rawcloud.launcher import Coalescer
from dask_rawcloud.model import LaunchRequest, NodeSpec, NodeState
from dask_rawcloud.providers.local import LocalProvider, node_processes
from dask_rawcloud.security import CertificateAuthority
from poll import wait_for


def test_public_names_are_explicit():
    assert sorted(dask_rawcloud.__all__) == sorted(
        n for n in dir(dask_rawcloud) if not n.startswith("_") and n[0].isupper() or n == "connect"
    )


async def test_calls_in_one_event_loop_turn_become_one_batch():
    batches = []

    async def run(items):
        batches.append(list(items))
        return [i * 10 for i in items]

    c = Coalescer(run)
    assert await asyncio.gather(*(c.submit(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert await c.submit(7) == 70
    assert batches == [[0, 1, 2, 3, 4], [7]]


async def test_a_failed_batch_fails_every_caller():
    async def run(items):
        raise RuntimeError("provider down")

    c = Coalescer(run)
    results = await asyncio.gather(c.submit(1), c.submit(2), return_exceptions=True)
    assert [str(r) for r in results] == ["provider down", "provider down"]


def test_meter_integrates_worker_count_over_time():
    m = Meter()
    for t, n in [(0, 0), (1, 2), (3, 2), (4, 1), (6, 0), (9, 0)]:
        m.sample(t, n)
    assert m.worker_s == pytest.approx(2 * 2 + 1 * 2 + 1 * 2)  # 0 for 1s, 2 for 3s, 1 for 2s
    assert m.peak == 2
    assert m.timeline == [(0, 0), (1, 2), (4, 1), (6, 0)]


def test_busy_seconds_count_compute_time_per_thread():
    stream = [
        {"worker": "a", "startstops": [{"action": "compute", "start": 1.0, "stop": 3.0}]},
        {"worker": "b", "startstops": [{"action": "transfer", "start": 0.0, "stop": 9.0},
                                       {"action": "compute", "start": 2.0, "stop": 6.0}]},
    ]
    assert busy_worker_seconds(stream, {"a": 1, "b": 2}) == pytest.approx(2 + 2)
    assert last_task_end(stream) == 6.0
    assert last_task_end([]) is None


def test_certificates_chain_to_the_cluster_ca_only(tmp_path):
    from cryptography import x509

    ca, other = CertificateAuthority.create("a"), CertificateAuthority.create("b")
    pair = ca.issue("default-0")
    cert = x509.load_pem_x509_certificate(pair.cert.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem.encode()))
    with pytest.raises(Exception):
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other.cert_pem.encode()))
    assert "PRIVATE KEY" not in repr(pair) and "PRIVATE KEY" not in repr(ca)
    ca.save(tmp_path)
    assert oct((tmp_path / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert CertificateAuthority.load(tmp_path).cert_pem == ca.cert_pem


@pytest.mark.timeout(60)
async def test_tls_is_mutual_and_keys_are_never_logged(state_dir):
    async with RawCloudCluster(n_workers=1, asynchronous=True) as cluster:
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=60)
        address = cluster.scheduler_address
        # Plain TCP, and TLS with a certificate from another CA, are both refused.
        plain = address.replace("tls://", "tcp://")
        with pytest.raises(OSError):
            await asyncio.wait_for(Client(plain, asynchronous=True, timeout="2s"), 10)
        stranger = CertificateAuthority.create("stranger").client_security()
        with pytest.raises(OSError):
            await asyncio.wait_for(
                Client(address, security=stranger, asynchronous=True, timeout="2s"), 10
            )
        nodes_dir = state_dir / cluster.name / "nodes"
        logs = "".join(p.read_text() for p in nodes_dir.glob("*.log"))
        assert "Scheduler at:" in logs
        assert "PRIVATE KEY" not in logs
        assert not list(nodes_dir.glob("*.spec")), "the agent deletes its spec once read"


def _scheduler_spec(name: str) -> NodeSpec:
    return NodeSpec(cluster_id=name, role="scheduler", name="scheduler", no_client_timeout_s=30)


@pytest.mark.timeout(60)
async def test_a_repeated_launch_token_starts_nothing_new(state_dir):
    provider = LocalProvider(state_dir=state_dir, terminate_grace_s=5)
    name = "token-test"
    request = LaunchRequest(name, "tok-1", "scheduler", WorkerPool(name="scheduler"),
                            _scheduler_spec(name), ("scheduler",))
    try:
        first = (await provider.launch(request)).nodes
        again = (await provider.launch(request)).nodes
        assert [n.id for n in first] == [n.id for n in again]
        nodes = await wait_for(
            lambda: _running(provider, name), 30, "the node to report ready"
        )
        assert len(nodes) == 1 and nodes[0].address.startswith("tcp://127.0.0.1:")
        await provider.terminate([first[0].id, "local-unknown"])
        assert await provider.list(name) == []
        assert not node_processes(name)
    finally:
        await provider.terminate([n.id for n in await provider.list(name)])
        provider.state.remove(name)


async def _running(provider, name):
    nodes = await provider.list(name)
    return nodes if nodes and all(n.state is NodeState.running for n in nodes) else None


@pytest.mark.timeout(60)
async def test_terminate_kills_a_node_that_does_not_stop_on_sigterm(state_dir):
    """After the grace, SIGKILL ends the node's whole process group."""
    provider = LocalProvider(state_dir=state_dir, terminate_grace_s=0.5)
    name = "stubborn"
    try:
        (node,) = (await provider.launch(
            LaunchRequest(name, "t", "scheduler", WorkerPool(name="scheduler"),
                          _scheduler_spec(name), ("scheduler",))
        )).nodes
        await wait_for(lambda: _running(provider, name), 30, "the node to be ready")
        (agent,) = node_processes(name)
        agent.suspend()  # a stopped process cannot act on SIGTERM, as a hung one would not
        await provider.terminate([node.id])
        assert not node_processes(name)
        assert await provider.list(name) == []
    finally:
        await provider.terminate([n.id for n in await provider.list(name)])
        provider.state.remove(name)


def test_environment_variables_configure_rawcloud(tmp_path):
    code = "from dask_rawcloud.config import settings; s = settings(); print(s.state_dir, s.no_client_timeout_s, s.worker_cpu)"
    env = {**os.environ, "DASK_RAWCLOUD__STATE_DIR": str(tmp_path),
           "DASK_RAWCLOUD__SCHEDULER__NO_CLIENT_TIMEOUT": "7s", "DASK_RAWCLOUD__WORKER__CPU": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path), "7.0", "2"]
