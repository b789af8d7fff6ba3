"""One poller per deployment: a PostgreSQL advisory lock held on a connection of its own.

The replica holding the lock polls Stripe; the others only recount from the database. A
replica that dies closes its connection, so PostgreSQL releases the lock and another replica
takes it at its next cycle (within one interval). SQLite is a single-process database: the
one process always holds the lease.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

#: The advisory lock's key (any 64-bit number the deployment uses for nothing else).
LEASE_KEY = 0x6B617374_706F6C6C  # "kastpoll"


class Lease:
    def __init__(self, engine: Engine, key: int = LEASE_KEY) -> None:
        self._engine = engine
        self._key = key
        self._conn: Connection | None = None
        self._single_process = engine.dialect.name != "postgresql"

    @property
    def held(self) -> bool:
        return self._single_process or self._conn is not None

    def hold(self) -> bool:
        """Whether this replica holds the lease now (taking it if free). Blocking: call it
        from a worker thread."""
        if self._single_process:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError:  # the session and its lock are gone: try to take it again
                self._drop()
        conn = self._engine.connect()
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            )
            conn.commit()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn  # basketball_api_poller_lease_held says which replica holds it
        return True

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
            self._conn.close()
        except DBAPIError:
            self._drop()
        self._conn = None

    def _drop(self) -> None:
        """Forget a broken connection; closing it for real ends the session and its lock."""
        if self._conn is not None:
            self._conn.invalidate()
            self._conn.close()
        self._conn = None
