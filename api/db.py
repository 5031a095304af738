"""The async database engine and sessions (asyncpg for PostgreSQL, aiosqlite for SQLite).

Every wait on PostgreSQL is bounded, so that an unreachable database costs a request a
fraction of a second and a clear ``503 database_unavailable`` instead of a hang (see
"Failure behaviour" in docs/operations.md):

- opening a connection: ``CITYKEY_DB_CONNECT_TIMEOUT_S`` (TCP, TLS and the start-up handshake);
- waiting for a free pooled connection: ``CITYKEY_DB_POOL_TIMEOUT_S``;
- checking a pooled connection before lending it: ``CITYKEY_DB_PING_TIMEOUT_S``. A pooled
  connection can be dead without knowing it (a partition sends no reset), and SQLAlchemy's own
  pre-ping would wait for the statement timeout, seconds, before giving up;
- one statement: ``CITYKEY_DB_COMMAND_TIMEOUT_S``;
- rolling back and returning a session's connection: ``CLEANUP_TIMEOUT_S``, then the connection
  is thrown away instead of waited for; after a database failure it is thrown away at once.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from api.settings import Settings

log = logging.getLogger(__name__)

UNIT_STARTED = "citykey.started"
"""Key in ``AsyncSession.info``: ``time.perf_counter()`` when the unit of work (for a request:
the request) began. Deadlines that span the whole request count from here."""

CLEANUP_TIMEOUT_S = 0.25
"""How long a failed unit of work may spend rolling back and returning its connection before
the connection is discarded instead (a rollback on a healthy database takes about 1 ms)."""

_FRESH = "citykey.fresh"


class DatabaseUnavailableError(Exception):
    """The database did not answer in time, or could not be reached."""


def create_engine(settings: Settings) -> AsyncEngine:
    """Engine with pooled connections; SQLite gets WAL and foreign keys."""
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    engine = create_async_engine(
        settings.database_url,
        # At most twice CITYKEY_DB_POOL_SIZE connections, as before, but all of them kept
        # open once opened: "overflow" connections were closed on return and reopened by the
        # next burst (TLS probe, start-up, codecs: ~5 % of the API's CPU at 100 unlocks/s).
        # LIFO: the connections in use stay few and warm; the rest idle at the bottom.
        pool_size=2 * settings.db_pool_size,
        max_overflow=0,
        pool_use_lifo=True,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "command_timeout": settings.db_command_timeout_s,
        },
    )
    _install_bounded_ping(engine, settings.db_ping_timeout_s)
    return engine


def _install_bounded_ping(engine: AsyncEngine, timeout_s: float) -> None:
    """Check every pooled connection with ``SELECT 1`` bounded by ``timeout_s`` before lending
    it; a connection that fails is thrown away and the pool opens a new one under the connect
    timeout. A broken connection never costs more than that: it is aborted, not closed
    politely, and only that one connection is dropped (see ``_one_at_a_time``)."""

    @event.listens_for(engine.sync_engine.pool, "connect")
    def _mark_fresh(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        record.info[_FRESH] = True

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _ping(dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        if record.info.pop(_FRESH, False):
            return  # just opened: the handshake was the check
        driver: asyncpg.Connection = dbapi.driver_connection
        try:
            # Simple-query protocol (no statement cache, no parameters, no result decoding):
            # the same round trip as a prepared SELECT 1 at a fraction of its CPU.
            await_only(driver.execute("SELECT 1", timeout=timeout_s))
        except Exception as exc:  # any failure: this connection must not be lent
            log.warning("pooled database connection failed its check: %r", exc)
            raise sa_exc.DisconnectionError(f"ping failed: {exc!r}") from exc

    @event.listens_for(engine.sync_engine.pool, "invalidate")
    def _drop_now(dbapi: Any, _record: ConnectionPoolEntry, _exc: BaseException | None) -> None:
        # SQLAlchemy closes an invalidated connection "gracefully", waiting up to 2 s for the
        # server to acknowledge; across a partition that wait is pure delay added to a request
        # that already failed. Abort the socket first, so that the close returns at once.
        if dbapi is not None:
            dbapi.driver_connection.terminate()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _one_at_a_time(context: ExceptionContext) -> None:
        # On a disconnect SQLAlchemy would also mark every other pooled connection for a
        # "recycle", which closes each of them politely (up to 2 s of waiting across a
        # partition) inside some later request. Each one is checked (and, if dead, aborted) by
        # the bounded ping on its next checkout instead.
        context.invalidate_pool_on_disconnect = False


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the block succeeds, roll back when it raises.

    Ending it never hangs: after a database failure the connection is discarded without a
    word to the server (it just failed: it must not be reused, and waiting on it would hang the
    request that already has its answer), and any other rollback and return of the connection
    is bounded by ``CLEANUP_TIMEOUT_S``."""
    session = factory()
    session.info[UNIT_STARTED] = time.perf_counter()
    try:
        yield session
        await session.commit()
    except BaseException as exc:
        await _end(session, exc)
        raise
    else:
        await _end(session, None)


async def _end(session: AsyncSession, exc: BaseException | None) -> None:
    if exc is None or not is_database_unavailable(exc):
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                if exc is not None:
                    await session.rollback()
                await session.close()
            return
        except Exception as cleanup_error:
            log.warning("database session did not close in time (%r)", cleanup_error)
    with contextlib.suppress(Exception):
        await session.invalidate()


_DRIVER_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite")


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database cannot be reached or did not answer in time", as
    opposed to a bug or a refused statement (which stay 500 / their own error)."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # no free pooled connection in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        original: BaseException | None = exc.orig
        # The asyncpg adapter wraps driver errors; look at what the driver said.
        cause = getattr(original, "__cause__", None) or original
        return cause is not None and _is_connectivity_error(cause)
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        # A bare OSError or TimeoutError is ours only when the driver raised it; a timeout
        # reading a key file is a bug, not a database outage.
        return _raised_by_driver(exc.__traceback__)
    return _is_connectivity_error(exc)


def _is_connectivity_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InterfaceError,
    )


def _raised_by_driver(tb: TracebackType | None) -> bool:
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.split(".", 1)[0] in _DRIVER_MODULES:
            return True
        tb = tb.tb_next
    return False


DATABASE_ERROR_TYPES: tuple[type[Exception], ...] = (
    DatabaseUnavailableError,
    OSError,  # includes TimeoutError
    sa_exc.SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""Exception types that can mean "database unavailable"; the API's error handler asks
``is_database_unavailable`` about each one it catches."""
