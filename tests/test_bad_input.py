"""Bad input gets a clear error naming the problem and the fix, fast, and starts nothing."""

from __future__ import annotations

import math

import pytest

from dask_rawcloud import (
    ClusterExists,
    ClusterNotFound,
    InvalidRequest,
    NodeTooLarge,
    RawCloudCluster,
    UnknownProvider,
)
from dask_rawcloud.manage import remove_cluster, state_dir
from dask_rawcloud.providers.local import node_processes

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"worker_cpu": -1}, ["worker cpu", "-1"]),
        ({"worker_cpu": "four"}, ["worker cpu", "'four'"]),
        ({"worker_cpu": 1.5}, ["worker cpu", "1.5"]),
        ({"worker_memory": "-2GiB"}, ["worker memory", "-2GiB"]),
        ({"worker_memory": "lots"}, ["worker memory", "'lots'"]),
        ({"worker_memory": 0}, ["worker memory"]),
        ({"n_workers": -3}, ["n_workers", "-3"]),
        ({"name": "Bad Name!"}, ["cluster name", "lowercase"]),
    ],
)
def test_invalid_sizes_and_names(kwargs, words, state_dir):
    with pytest.raises(InvalidRequest) as info:
        RawCloudCluster(**kwargs)
    for word in words:
        assert word in str(info.value)
    assert not node_processes()
    assert not list(state_dir.iterdir())


def test_node_larger_than_this_machine(state_dir):
    with pytest.raises(NodeTooLarge, match=r"does not fit this machine, which has \d+ cpu") as info:
        RawCloudCluster(worker_cpu=100_000)
    assert "worker_cpu=" in str(info.value)
    with pytest.raises(NodeTooLarge, match="does not fit"):
        RawCloudCluster(worker_memory="100PiB")
    assert not node_processes()
    assert not list(state_dir.iterdir())


def test_unknown_provider(state_dir):
    with pytest.raises(UnknownProvider, match="unknown provider 'azure': choose one of .*local"):
        RawCloudCluster(provider="azure")
    assert not list(state_dir.iterdir())


def test_adapt_minimum_above_maximum():
    with RawCloudCluster() as cluster:
        with pytest.raises(InvalidRequest, match=r"minimum \(5\) is larger than maximum \(2\)"):
            cluster.adapt(minimum=5, maximum=2)
        with pytest.raises(InvalidRequest, match="maximum must be a number >= 0"):
            cluster.adapt(minimum=0, maximum=-1)
        with pytest.raises(InvalidRequest, match=r"unseen_share must be a number in \(0, 1\], got 0"):
            cluster.adapt(unseen_share=0)
        with pytest.raises(InvalidRequest, match="budget must be a number of USD >= 0"):
            cluster.adapt(minimum=1, maximum=3, budget=-5)
        assert (cluster.pool.minimum, cluster.pool.maximum) == (0, math.inf)  # unchanged
        assert not cluster.worker_spec


def test_name_in_use_is_refused_and_the_first_cluster_is_untouched():
    with RawCloudCluster(name="taken") as first:
        with pytest.raises(ClusterExists, match="dask-rawcloud down taken"):
            RawCloudCluster(name="taken")
        assert first.scheduler.node.id in {n.id for n in first.sync(first.nodes)}
        assert (state_dir().root / "taken" / "cluster.json").exists()


async def test_removing_an_unknown_cluster_names_the_known_ones():
    with pytest.raises(ClusterNotFound, match="no cluster named 'nope'.*dask-rawcloud ls"):
        await remove_cluster(state_dir(), "nope")


def test_a_scheduler_that_cannot_boot_fails_fast_with_its_log(tmp_path, monkeypatch, state_dir):
    """A broken environment on the node: the error shows the node's own log, nothing is left."""
    from dask_rawcloud import BootError

    broken = tmp_path / "distributed"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('broken environment on the node')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(BootError, match="exited before it was ready") as info:
        RawCloudCluster(name="cannot-boot")
    assert "broken environment on the node" in info.value.log
    assert not node_processes("cannot-boot")
    assert not (state_dir / "cannot-boot").exists()
