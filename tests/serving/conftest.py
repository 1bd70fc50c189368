"""The Ray cluster the serving tests share (one start for both modules): 2 nodes of one CPU each on 127.0.0.1, and
the port of Serve's proxy."""

import os
import socket

import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray starts: no usage report sent

import ray  # noqa: E402
from ray import serve  # noqa: E402


@pytest.fixture(scope="package")
def cluster():
    """Two Ray nodes of one CPU each on this machine, so two one-thread replicas land on different nodes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        yield cluster
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="package")
def port(cluster) -> int:
    """The proxy's port: Serve's HTTP options are fixed once it has started, so every deployment here uses it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
