"""Banks of banned hashes: the entry model, the store interface and its two backends.

Banned content is never stored, only its hashes. Removal is a soft delete kept for
audit. Every change (an entry added or removed, a bank's thresholds changed) appends
a row to the change log, whose row number *is* the bank version: it only grows, and a
worker holding version N can catch up by reading the changes after N.

- ``model``: entries, bank configurations, changes and the checks on them;
- ``store``: the :class:`BankStore` interface (validation in ``@t.final`` methods in
  front of the abstract ones) and operations written over it (:func:`allow_photo`);
- ``sqlite``: the embedded backend, one file on one host;
- ``redis``: the shared backend every worker on every host reads and writes.

:func:`open_store` is the one place that picks a backend. Importing this package does
not import redis-py: the Redis backend loads when it is first asked for.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from .model import (
    BankConfig,
    BankEntry,
    BankKind,
    Change,
    ChangeOp,
    EntrySource,
    NewEntry,
    check_bank_name,
    entries_from_hashes,
)
from .sqlite import SQLITE_OPEN_TIMEOUT_S, SqliteBankStore
from .store import BankStore, allow_photo

if t.TYPE_CHECKING:
    import redis as redis_py

    from .redis import DEFAULT_PREFIX, RedisBankStore

__all__ = [
    "DEFAULT_PREFIX", "SQLITE_OPEN_TIMEOUT_S", "BankConfig", "BankEntry", "BankKind", "BankStore", "Change",
    "ChangeOp", "EntrySource", "NewEntry", "RedisBankStore", "SqliteBankStore", "allow_photo", "check_bank_name",
    "entries_from_hashes", "open_store",
]


def open_store(
    *, redis: redis_py.Redis | None = None, sqlite: str | Path | None = None, prefix: str | None = None
) -> BankStore:
    """The bank store to use: the shared one in ``redis``, or the embedded ``sqlite`` file.

    Args:
        redis: a client of the Redis that holds the shared bank (with or without
            ``decode_responses``).
        sqlite: the bank's SQLite file (created, with its directory, if missing).
        prefix: the Redis bank's key prefix (default ``DEFAULT_PREFIX``); another
            prefix is another bank store in the same database.

    Raises:
        ValueError: not exactly one of ``redis`` and ``sqlite``, or a ``prefix`` for SQLite.
    """
    if (redis is None) == (sqlite is None):
        raise ValueError("open_store needs exactly one of redis= (the shared bank) and sqlite= (a bank file)")
    if redis is not None:
        from .redis import DEFAULT_PREFIX, RedisBankStore

        return RedisBankStore(redis, prefix=DEFAULT_PREFIX if prefix is None else prefix)
    if prefix is not None:
        raise ValueError(f"a key prefix ({prefix!r}) is for the Redis bank; a SQLite bank is one file")
    return SqliteBankStore(t.cast("str | Path", sqlite))


def __getattr__(name: str) -> t.Any:
    # The Redis backend's names, without importing redis-py for callers that never use it.
    if name in ("RedisBankStore", "DEFAULT_PREFIX"):
        from . import redis

        return getattr(redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
