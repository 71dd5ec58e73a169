"""Building blocks of the SQLite adapters: connections, transactions, and translating SQLite errors
into the error tree."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingestion.errors import TransientError


def open_sqlite(path: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode (we BEGIN IMMEDIATE ourselves), WAL, a busy timeout.

    ``check_same_thread=False``: adapters share one connection between threads behind a lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        with sqlite_errors(str(path)):
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable against a crashed process in WAL mode; only power loss may drop
            # the last commits, which the reconciler recovers from.
            db.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def sqlite_errors(subject: str) -> Iterator[None]:
    """Translate SQLite's lock and I/O failures into ``TransientError``; other errors are bugs."""
    try:
        yield
    except sqlite3.OperationalError as error:
        text = str(error).lower()
        if any(word in text for word in ("locked", "busy", "disk i/o", "unable to open")):
            raise TransientError(f"{subject}: {error}", code="sqlite_busy") from error
        raise


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): takes the write lock up front, so two
    writers wait on ``busy_timeout`` instead of failing on a read-to-write upgrade."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself after some errors (SQLITE_FULL...)
            db.execute("ROLLBACK")
        raise
