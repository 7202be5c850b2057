"""The Redis online store's address, one server or a Redis Cluster, and the clients the project opens on it.

``REDIS_URL`` is ``redis://[[user]:password@]host:port[/db]`` (``rediss://`` for
TLS) for one server. With ``COINFLOW_REDIS_TYPE=redis_cluster`` it names a Redis
Cluster by one or more of its nodes, comma-separated:
``redis://[[user]:password@]host1:port1,host2:port2,...`` (the client finds the
other nodes from any of them; a cluster has only database 0). The type is a
setting, not read off the URL, because one seed node is as valid a cluster
address as several. Feast (``redis_type``) and the project's own clients (the
health checks, the API's readiness probe) are built from the same parse, so
nothing else needs to know which one it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from coinflow.redact import redact

RedisType = Literal["redis", "redis_cluster"]
URL_SYNTAX = "redis://[[user]:password@]host:port[,host:port...][/db] (rediss:// for TLS)"
# What a client raises when the store cannot be reached or the cluster cannot serve (RedisClusterException is no
# RedisError: redis-py raises it when no node answers the cluster's discovery, or a slot has no node).
REDIS_ERRORS = (redis.RedisError, RedisClusterException, OSError)


class RedisUrlError(ValueError):
    """REDIS_URL is not an address the configured Redis type can use; the message says why and the syntax."""


@dataclass(frozen=True)
class RedisAddress:
    """Where the online store is: its nodes (one for a single server), database, credentials, TLS, whether a
    cluster."""

    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    cluster: bool = False


def _node(text: str, url: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not colon:
        return (text or "127.0.0.1", 6379)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"REDIS_URL {redact(url)}: {text!r} has no valid port; expected {URL_SYNTAX}")
    return (host or "127.0.0.1", int(port))


def parse_redis_url(url: str, redis_type: RedisType = "redis") -> RedisAddress:
    """The address in `url` for a server of `redis_type` (see the module's docstring), or a RedisUrlError."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise RedisUrlError(f"REDIS_URL {redact(url)} is not a Redis URL; expected {URL_SYNTAX}")
    if "?" in rest or "#" in rest:
        raise RedisUrlError(f"REDIS_URL {redact(url)}: query options are not supported; expected {URL_SYNTAX}")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    items = hosts.split(",")
    if len(items) > 1 and not all(items):
        raise RedisUrlError(f"REDIS_URL {redact(url)} has an empty node; expected {URL_SYNTAX}")
    nodes = tuple(_node(item.strip(), url) for item in items)
    db_text = path.strip("/") or "0"
    if not db_text.isdigit():
        raise RedisUrlError(f"REDIS_URL {redact(url)}: the database {db_text!r} is not a number; expected {URL_SYNTAX}")
    db, cluster = int(db_text), redis_type == "redis_cluster"
    if len(nodes) > 1 and not cluster:
        raise RedisUrlError(
            f"REDIS_URL {redact(url)} names {len(nodes)} nodes: set COINFLOW_REDIS_TYPE=redis_cluster for a Redis "
            "Cluster, or name one server"
        )
    if cluster and db != 0:
        raise RedisUrlError(f"REDIS_URL {redact(url)}: a Redis Cluster has only database 0, not {db}")
    return RedisAddress(nodes, db, unquote(username) or None, unquote(password) or None, scheme == "rediss", cluster)


def feast_connection_string(address: RedisAddress) -> str:
    """Feast's Redis connection string: ``host:port,db=N[,...]`` for a server, ``host1:port1,host2:port2[,...]``
    for a cluster (with ``redis_type: redis_cluster``; a cluster takes no ``db``)."""
    parts = [f"{host}:{port}" for host, port in address.nodes]
    if not address.cluster:
        parts.append(f"db={address.db}")
    if address.username:
        parts.append(f"username={address.username}")
    if address.password:
        parts.append(f"password={address.password}")
    if address.ssl:
        parts.append("ssl=true")
    return ",".join(parts)


def feast_redis_type(address: RedisAddress) -> str:
    """Feast's ``redis_type`` for the address."""
    return "redis_cluster" if address.cluster else "redis"


def _options(address: RedisAddress, timeout: float) -> dict:
    return {
        "username": address.username,
        "password": address.password,
        "ssl": address.ssl,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


def sync_client(address: RedisAddress, timeout: float) -> redis.Redis | RedisCluster:
    """A client of the address answering within `timeout` and not retrying (a probe's, not a writer's).

    A cluster client discovers the cluster's nodes when it is made, so making one can raise (REDIS_ERRORS)."""
    if address.cluster:
        nodes = [ClusterNode(host, port) for host, port in address.nodes]
        return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **_options(address, timeout))
    host, port = address.nodes[0]
    return redis.Redis(host=host, port=port, db=address.db, retry=Retry(NoBackoff(), 0), **_options(address, timeout))


def async_client(address: RedisAddress, timeout: float) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """An asyncio client of the address answering within `timeout` and not retrying (it connects at first use)."""
    if address.cluster:
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in address.nodes]
        return redis.asyncio.RedisCluster(
            startup_nodes=nodes, retry=redis.asyncio.retry.Retry(NoBackoff(), 0), **_options(address, timeout)
        )
    host, port = address.nodes[0]
    return redis.asyncio.Redis(
        host=host,
        port=port,
        db=address.db,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **_options(address, timeout),
    )


def answers(client: redis.Redis | RedisCluster) -> bool:
    """Whether the store serves: a server answers PING; a cluster's every node does and it reports its slots all
    served (``cluster_state:ok``). Raises REDIS_ERRORS when a node does not answer."""
    if isinstance(client, RedisCluster):
        pinged = client.ping(target_nodes=RedisCluster.ALL_NODES)
        return bool(pinged) and cast(dict, client.cluster_info())["cluster_state"] == "ok"
    return bool(client.ping())


async def answers_async(client: redis.asyncio.Redis | redis.asyncio.RedisCluster) -> bool:
    """`answers` for an asyncio client."""
    if isinstance(client, redis.asyncio.RedisCluster):
        # redis.asyncio shares the sync client's command types, which say a command may return a plain value
        pinged = await client.ping(target_nodes=redis.asyncio.RedisCluster.ALL_NODES)  # type: ignore[misc]
        return bool(pinged) and (await client.cluster_info())["cluster_state"] == "ok"
    # redis.asyncio shares the sync client's command types, which say ping() may return a plain bool
    return bool(await client.ping())  # type: ignore[misc]
