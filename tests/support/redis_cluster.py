"""A real Redis Cluster on local ports: three ``redis-server`` masters in cluster mode, joined by ``redis-cli --cluster
create`` (no replicas), each in its own directory with its client and bus ports free ones; a node can be killed and
restarted on its ports with its config file.

For the cluster tests and the cluster bench; nothing is persisted (``--save ''``, no AOF), so a restarted node
comes back with its slots and without its keys.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import redis

from tests.support.ports import free_port

START_TIMEOUT_S = 30.0


def _wait(check, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


class LocalCluster:
    """Three cluster-mode redis-servers under `root` on free ports; `url` names all of them (REDIS_URL syntax)."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        chosen: list[int] = []
        while len(chosen) < 2 * size:
            if (port := free_port()) not in chosen:
                chosen.append(port)
        # Each node's client port and its cluster bus port (given, as the default, port + 10000, may be taken).
        self.ports = chosen[:size]
        self.bus_ports = dict(zip(self.ports, chosen[size:], strict=True))
        self.processes: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start_node(self, port: int) -> None:
        """Start (or restart) the node of `port` with its own directory and cluster config file."""
        node_dir = self.root / f"node-{port}"
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_ports[port]),
            "--cluster-config-file",
            str(node_dir / "nodes.conf"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(node_dir),
        ]
        with open(node_dir / "redis.log", "ab") as log:
            self.processes[port] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _node(port).ping(), f"redis-server on port {port} did not answer")

    def kill_node(self, port: int) -> None:
        """SIGKILL the node of `port` (no shutdown, no save) and wait until it is gone."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def state_ok(self) -> bool:
        """Whether every node reports all slots served."""
        return all(_node(port).execute_command("CLUSTER INFO")["cluster_state"] == "ok" for port in self.ports)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(self.state_ok, "the cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for port in list(self.processes):
            process = self.processes.pop(port)
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_ok(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every node reports cluster_state:ok (after a restart)."""
        _wait(self.state_ok, "the cluster did not reach cluster_state:ok", timeout)

    def flush(self) -> None:
        """Empty every node."""
        for port in self.ports:
            _node(port).flushall()

    def keys_per_node(self) -> dict[int, int]:
        """How many keys each node holds."""
        return {port: cast(int, _node(port).dbsize()) for port in self.ports}


@contextlib.contextmanager
def local_cluster(root: Path) -> Iterator[LocalCluster]:
    """A started three-node cluster under `root`, stopped at the end."""
    cluster = LocalCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
