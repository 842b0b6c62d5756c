"""Connecting to Redis: one server (`redis://`, `rediss://`, `unix://`), or the primary that Redis Sentinel
names (`redis+sentinel://`), so that the workers, the dispatcher and the API follow a failover.

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=...]

The hosts are the sentinels (26379 when a port is left out), `service` the name they monitor, `db` the
database number (0). The user and password are the primary's; `sentinel_password` is the sentinels' own
when they require one. A client made here asks the sentinels for the primary whenever it (re)connects, so
after a failover its next command goes to the promoted replica; `redis.exceptions.ConnectionError` or
`ReadOnlyError` in between is what every caller already handles as "Redis is away".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379

# Connection-pool keys that belong to one pool instance (or are derived from others): not copied.
_POOL_INTERNAL = frozenset(
    {
        "himport_registry",
        "maint_notifications_pool_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
        "connection_pool",
    }
)


class RedisURLError(ValueError):
    """A Redis URL that cannot be used; the message never holds its password."""


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a `redis+sentinel://` URL (see the module's docstring)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise RedisURLError(f"not a {SENTINEL_SCHEME}:// URL (scheme {parts.scheme!r})")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) or None)
    sentinels = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise RedisURLError(f"{SENTINEL_SCHEME}:// needs at least one sentinel host:port")
        try:
            number = int(port) if port else SENTINEL_PORT
        except ValueError:
            raise RedisURLError(f"sentinel port {port!r} of {host} is not a number") from None
        if not 0 < number < 65536:
            raise RedisURLError(f"sentinel port {number} of {host} is out of range")
        sentinels.append((host, number))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise RedisURLError(f"{SENTINEL_SCHEME}:// needs the service name the sentinels monitor: .../NAME")
    if len(path) > 2:
        raise RedisURLError(f"{SENTINEL_SCHEME}:// path is /service[/db], not {len(path)} parts")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise RedisURLError(f"database {path[1]!r} is not a number")
        db = int(path[1])
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"sentinel_password"})
    if unknown:
        raise RedisURLError(f"unknown {SENTINEL_SCHEME}:// option(s): {', '.join(unknown)}")
    sentinel_password = query.get("sentinel_password", [None])[-1]
    return SentinelTarget(tuple(sentinels), unquote(path[0]), db, username, password, sentinel_password)


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for `url` with `options` (socket_timeout, health_check_interval, retry...); for a
    `redis+sentinel://` URL, one that finds the primary through the sentinels."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": options.get("socket_timeout") or 2,
        "socket_connect_timeout": options.get("socket_connect_timeout") or 2,
    }
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )


def with_options(client: redis.Redis, **options: Any) -> redis.Redis:
    """A client to the same server as `client` (or the same Sentinel service) with `options` replacing its
    own (timeouts, retry); `client` itself when its connection settings cannot be copied."""
    pool = client.connection_pool
    kwargs: dict[str, Any] = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_INTERNAL}
    kwargs.update(options)
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("is_master", None)
        kwargs.pop("check_connection", None)
        return pool.sentinel_manager.master_for(pool.service_name, **kwargs)
    try:
        pool.connection_class(**kwargs)  # builds the object only; connecting is lazy
    except TypeError:
        return client
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
