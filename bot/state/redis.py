"""The Redis state store: what several bot processes share. Each method is one command or one Lua script, so
it is atomic across processes (https://redis.io/docs/latest/develop/programmability/eval-intro/).

Calls that arrive while a round trip is on the wire go out together in one pipeline, as the SQLite store's group
commit does: a pipeline is not a transaction, each command and each script in it stays atomic on its own, exactly
as when sent alone (https://redis.io/docs/latest/develop/use/pipelining/). Sent one by one, redis-py costs about
0.1 ms of the event loop's time per command; 200 commands arriving together were 200 round trips and a second of
acknowledgements (`bin/bench`, two instances).

Keys: `counter:<key>` (a string INCRed), `board:<board>` (a sorted set of scores) with `board-total:<board>`,
`value:<key>` (a string), `claim:<key>` (a string set once), `list:<key>` (a list), `entries:<collection>` (a
hash), one hash `settings`, and `schema` (the schema version). Expiry is Redis's own (PEXPIREAT, milliseconds);
PEXPIRETIME needs Redis 7.0 or later. One Redis node, not a cluster (a script's keys may span slots).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit

import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from bot.state.store import Quota, StateStoreError

CONNECT_TIMEOUT_S = 5.0  # an unreachable server fails `open` within this, not the TCP default of minutes
MAX_CONNECTIONS = 32  # per process; a call waits up to COMMAND_TIMEOUT_S for a free one
PIPELINES_AT_ONCE = 4  # round trips on the wire together; calls arriving meanwhile wait for the next pipeline
MAX_PIPELINE = 500  # commands in one pipeline
COMMAND_TIMEOUT_S = 5.0  # a server that stops answering fails the command (StateStoreError), never hangs it
# Version 1: the keys above (a key type added later, like `entries:`, is created on first write and needs no
# migration); a newer version that rewrites data appends a migration to `_MIGRATIONS`.
SCHEMA_VERSION = 1
_SCHEMA_KEY = "schema"
_SETTINGS_KEY = "settings"

_P = ParamSpec("_P")
_T = TypeVar("_T")

# KEYS: the counters; ARGV: limit, expiry (ms) per counter. Returns 0, or the 1-based index of the full one.
_TAKE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[2 * i - 1]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  local at = tonumber(ARGV[2 * i])
  local stored = redis.call('PEXPIRETIME', key)
  if stored < 0 or stored < at then redis.call('PEXPIREAT', key, at) end
end
return 0
"""
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""
# KEYS: board, total; ARGV: member, amount, expiry (ms).
_ADD_RANKED = """
redis.call('ZINCRBY', KEYS[1], ARGV[2], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[2])
local at = tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  local stored = redis.call('PEXPIRETIME', key)
  if stored < 0 or stored < at then redis.call('PEXPIREAT', key, at) end
end
return 0
"""
# KEYS: the list; ARGV: item, expiry (ms). Returns the list's new length.
_APPEND = """
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
local at = tonumber(ARGV[2])
local stored = redis.call('PEXPIRETIME', KEYS[1])
if stored < 0 or stored < at then redis.call('PEXPIREAT', KEYS[1], at) end
return length
"""
# KEYS: board; ARGV: limit. Every member scoring at least the limit-th score (so ties at the edge can be ordered
# by member: ZREVRANGE orders equal scores in reverse member order), as member, score, member, score, ...
_TOP = """
local limit = tonumber(ARGV[1])
local edge = redis.call('ZREVRANGE', KEYS[1], limit - 1, limit - 1, 'WITHSCORES')
if #edge == 0 then return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES') end
return redis.call('ZRANGEBYSCORE', KEYS[1], edge[2], '+inf', 'WITHSCORES')
"""


def without_credentials(url: str) -> str:
    """The URL as an operator may see it in a log: no user or password, and of the query only `db`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    database = [value for name, value in parse_qsl(parts.query) if name == "db"]
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?db={database[0]}" if database else "")


def _redis_errors_as_store_errors(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """A lost or failing server reaches callers as one StateStoreError."""

    @wraps(method)
    async def translated(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except RedisError as error:
            raise StateStoreError(f"the Redis state store failed: {type(error).__name__}: {error}") from error

    return translated


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class _Pipelines:
    """Calls gathered into pipelines: each call queues one command (or script) on the pipeline it is given, and
    gets that command's reply (or its error) back."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pending: list[tuple[Callable[[Pipeline], object], asyncio.Future[Any]]] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def call(self, queue: Callable[[Pipeline], object]) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, done))
        if len(self._pumps) < PIPELINES_AT_ONCE:
            pump = asyncio.get_running_loop().create_task(self._send_pending(), name="redis-state")
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)
        return await done

    async def _send_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_PIPELINE], self._pending[MAX_PIPELINE:]
            sent: list[asyncio.Future[Any]] = []  # the calls whose command is in the pipeline, in its order
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for queue, done in batch:
                        try:
                            queued = queue(pipe)
                            if inspect.isawaitable(queued) and not isinstance(queued, Pipeline):
                                await queued  # a script (`AsyncScript.__call__` queues it when awaited)
                        except (RedisError, ValueError, TypeError) as error:  # this call alone was malformed
                            _fail(done, error)
                            continue
                        sent.append(done)
                    replies = await pipe.execute(raise_on_error=False) if sent else []
            except (RedisError, OSError) as error:  # the connection failed: every call sent fails with it
                replies = [error] * len(sent)
            except BaseException as error:  # cancelled (shutdown): the callers hear of it, then it goes on up
                for _, done in batch:
                    _fail(done, RedisError(f"the state store call was interrupted: {error!r}"))
                raise
            for done, reply in zip(sent, replies, strict=True):
                if isinstance(reply, Exception):
                    _fail(done, reply)
                elif not done.done():  # else its caller went away; the command ran all the same
                    done.set_result(reply)


def _fail(done: asyncio.Future[Any], error: BaseException) -> None:
    if not done.done():
        done.set_exception(error)


class RedisStore:
    """The `StateStore` on one Redis database. Open it with `RedisStore.open`; close it with `aclose`."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._redis = client
        self._pipelines = _Pipelines(client)
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        self._add_ranked = client.register_script(_ADD_RANKED)
        self._top = client.register_script(_TOP)
        self._append = client.register_script(_APPEND)

    @classmethod
    async def open(cls, url: str) -> RedisStore:
        """Connect (`redis://host:port/db`, `rediss://…`, `unix:///path?db=N`), check and migrate the schema."""
        where = without_credentials(url)
        try:
            # A blocking pool: calls beyond its connections wait for one (redis-py's default pool raises "Too
            # many connections" past 100, which a burst of 200 commands reached); Redis runs one command at a time
            # anyway, so a few dozen connections keep it busy.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=MAX_CONNECTIONS, timeout=COMMAND_TIMEOUT_S, decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S)
            client = redis.asyncio.Redis.from_pool(pool)  # closing the client closes the pool too
        except ValueError as error:
            raise StateStoreError(f"the Redis state store URL {where} is not valid: {error}") from error
        store = cls(client)
        try:
            await client.ping()
            await store._migrate(where)
        except RedisError as error:
            await client.aclose()
            raise StateStoreError(f"cannot reach the Redis state store at {where}: {error}") from error
        except BaseException:
            await client.aclose()
            raise
        return store

    async def _migrate(self, where: str) -> None:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise StateStoreError(
                f"the Redis state store at {where} has schema version {version}, newer than this bot's "
                f"{SCHEMA_VERSION}: an older bot must not write to it: run the newer bot, or use another database")
        for number in range(version, SCHEMA_VERSION):
            await _MIGRATIONS[number](self._redis)
            await self._redis.set(_SCHEMA_KEY, number + 1)

    @_redis_errors_as_store_errors
    async def schema_version(self) -> int:
        """The version in the `schema` key (0 for a database no bot has used)."""
        stored = await self._redis.get(_SCHEMA_KEY)
        return int(stored) if stored is not None else 0

    @_redis_errors_as_store_errors
    async def take(self, quotas: Sequence[Quota]) -> Quota | None:
        limits_and_expiries = [value for quota in quotas for value in (quota.limit, _ms(quota.expires_at))]
        keys = [f"counter:{quota.key}" for quota in quotas]
        full = int(await self._call(lambda pipe: self._take(keys=keys, args=limits_and_expiries, client=pipe)))
        return quotas[full - 1] if full else None

    @_redis_errors_as_store_errors
    async def give_back(self, keys: Sequence[str]) -> None:
        counters = [f"counter:{key}" for key in keys]
        await self._call(lambda pipe: self._give_back(keys=counters, args=[], client=pipe))

    @_redis_errors_as_store_errors
    async def count(self, key: str) -> int:
        stored = await self._call(lambda pipe: pipe.get(f"counter:{key}"))
        return int(stored) if stored is not None else 0

    @_redis_errors_as_store_errors
    async def add_ranked(self, board: str, member: str, amount: int, expires_at: float) -> None:
        await self._call(lambda pipe: self._add_ranked(keys=[f"board:{board}", f"board-total:{board}"],
                                                       args=[member, amount, _ms(expires_at)], client=pipe))

    @_redis_errors_as_store_errors
    async def top(self, board: str, limit: int) -> list[tuple[str, int]]:
        if limit <= 0:
            return []
        flat = await self._call(lambda pipe: self._top(keys=[f"board:{board}"], args=[limit], client=pipe))
        scored = [(str(member), int(float(score))) for member, score in zip(flat[::2], flat[1::2], strict=True)]
        return sorted(scored, key=lambda entry: (-entry[1], entry[0]))[:limit]

    @_redis_errors_as_store_errors
    async def score(self, board: str, member: str) -> int:
        stored = await self._call(lambda pipe: pipe.zscore(f"board:{board}", member))
        return int(stored) if stored is not None else 0

    @_redis_errors_as_store_errors
    async def total(self, board: str) -> int:
        stored = await self._call(lambda pipe: pipe.get(f"board-total:{board}"))
        return int(stored) if stored is not None else 0

    @_redis_errors_as_store_errors
    async def get_settings(self, prefix: str = "") -> Mapping[str, str]:
        # str, not bytes: the client decodes responses
        every = await self._call(lambda pipe: pipe.hgetall(_SETTINGS_KEY))
        return {str(name): str(value) for name, value in every.items() if str(name).startswith(prefix)}

    @_redis_errors_as_store_errors
    async def put_setting(self, name: str, value: str | None) -> None:
        if value is None:
            await self._call(lambda pipe: pipe.hdel(_SETTINGS_KEY, name))
        else:
            await self._call(lambda pipe: pipe.hset(_SETTINGS_KEY, name, value))

    @_redis_errors_as_store_errors
    async def put_value(self, key: str, value: str, expires_at: float) -> None:
        await self._call(lambda pipe: pipe.set(f"value:{key}", value, pxat=_ms(expires_at)))

    @_redis_errors_as_store_errors
    async def get_value(self, key: str) -> str | None:
        stored = await self._call(lambda pipe: pipe.get(f"value:{key}"))
        return str(stored) if stored is not None else None

    @_redis_errors_as_store_errors
    async def claim(self, key: str, expires_at: float) -> bool:
        # SET NX is one command: of several processes racing, exactly one sees OK (https://redis.io/docs/latest/commands/set/).
        return bool(await self._call(lambda pipe: pipe.set(f"claim:{key}", 1, nx=True, pxat=_ms(expires_at))))

    @_redis_errors_as_store_errors
    async def append_item(self, key: str, item: str, expires_at: float) -> int:
        return int(await self._call(lambda pipe: self._append(keys=[f"list:{key}"], args=[item, _ms(expires_at)],
                                                             client=pipe)))

    @_redis_errors_as_store_errors
    async def items(self, key: str) -> list[str]:
        return [str(item) for item in await self._call(lambda pipe: pipe.lrange(f"list:{key}", 0, -1))]

    @_redis_errors_as_store_errors
    async def put_entry(self, collection: str, key: str, value: str) -> None:
        await self._call(lambda pipe: pipe.hset(f"entries:{collection}", key, value))

    @_redis_errors_as_store_errors
    async def get_entry(self, collection: str, key: str) -> str | None:
        stored = await self._call(lambda pipe: pipe.hget(f"entries:{collection}", key))
        return str(stored) if stored is not None else None

    @_redis_errors_as_store_errors
    async def delete_entry(self, collection: str, key: str) -> bool:
        # HDEL is one command: of racing deleters exactly one removes the field
        # (https://redis.io/docs/latest/commands/hdel/).
        return bool(await self._call(lambda pipe: pipe.hdel(f"entries:{collection}", key)))

    @_redis_errors_as_store_errors
    async def entries(self, collection: str) -> Mapping[str, str]:
        every = await self._call(lambda pipe: pipe.hgetall(f"entries:{collection}"))
        return {str(key): str(value) for key, value in every.items()}

    async def _call(self, queue: Callable[[Pipeline], object]) -> Any:
        return await self._pipelines.call(queue)

    async def purge_expired(self) -> int:
        """Redis deletes expired keys itself: nothing to do."""
        return 0

    async def aclose(self) -> None:
        """Close the client and its connection pool."""
        await self._redis.aclose()


async def _create_nothing(client: redis.asyncio.Redis) -> None:
    """Version 1: keys are created on first write; recording the version is the whole migration."""


# Version N is the first N applied in order. A later migration that rewrites data must be safe to run twice
# (two processes may open an old database at once).
_MIGRATIONS: tuple[Callable[[redis.asyncio.Redis], Awaitable[None]], ...] = (_create_nothing,)
assert len(_MIGRATIONS) == SCHEMA_VERSION
