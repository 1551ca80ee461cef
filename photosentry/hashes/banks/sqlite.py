"""The embedded backend: one SQLite file, safe for several processes on one host.

The change log's row number *is* the bank version; ``BEGIN IMMEDIATE`` transactions
make sure concurrent writers never hand out one twice.
"""

from __future__ import annotations

import random
import sqlite3
import time
import typing as t
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ...errors import BankNotFound
from ..algorithms import PERCEPTUAL
from ..codecs import Algorithm
from .model import BankConfig, BankEntry, BankKind, Change, ChangeOp, EntrySource, NewEntry, _check_actor
from .store import BankStore

#: A bank's distance for each perceptual algorithm (NULL: the default), one column each,
#: named by the algorithm registry (``pdq_distance`` ...).
_DISTANCE_COLUMNS = {a: a.spec.distance_column for a in PERCEPTUAL}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS banks (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
{distance_columns}
    kind TEXT NOT NULL DEFAULT 'ban'
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    algorithm TEXT NOT NULL,
    value TEXT NOT NULL,
    bank TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at REAL NOT NULL,
    source TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    active INTEGER NOT NULL DEFAULT 1,
    removed_by TEXT,
    removed_at REAL,
    removed_reason TEXT
);
-- At most one *active* row per hash and bank: duplicates merge, history stays.
CREATE UNIQUE INDEX IF NOT EXISTS entries_active_unique
    ON entries (bank, algorithm, value) WHERE active = 1;
CREATE INDEX IF NOT EXISTS entries_value ON entries (algorithm, value);
CREATE INDEX IF NOT EXISTS entries_grp ON entries (grp) WHERE grp != '';
-- Facts about the file itself (store_id); created with the schema, so older files gain it.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    version INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    entry_id INTEGER,
    bank TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
""".format(distance_columns="\n".join(f"    {c} INTEGER," for c in _DISTANCE_COLUMNS.values()))

_BANK_COLUMNS = ", ".join(["name", "description", "kind", *_DISTANCE_COLUMNS.values()])
_UPSERT_BANK = (
    f"INSERT INTO banks ({_BANK_COLUMNS}) VALUES ({', '.join('?' * (3 + len(_DISTANCE_COLUMNS)))})"
    " ON CONFLICT(name) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in _BANK_COLUMNS.split(", ")[1:])
)

_ENTRY_COLUMNS = (
    "id, algorithm, value, bank, label, reason, added_by, added_at, source, grp, active, "
    "removed_by, removed_at, removed_reason"
)


SQLITE_OPEN_TIMEOUT_S = 30.0
"""How long opening the bank file waits for other processes' locks."""


class SqliteBankStore(BankStore):
    """The embedded backend: one SQLite file, safe for several processes on one host."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE) so a
        # version number is never handed out twice by concurrent writers.
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=SQLITE_OPEN_TIMEOUT_S)
        # Several processes opening a new file at once (a rescan pool, a worker fleet)
        # can meet SQLite's lock-upgrade deadlock: it answers "database is locked" at
        # once instead of waiting, so the set-up is retried until the timeout.
        deadline = time.monotonic() + SQLITE_OPEN_TIMEOUT_S
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(_SCHEMA)
                self._migrate()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.02, 0.1))

    def _migrate(self) -> None:
        # Bank files written before allow banks existed lack the `kind` column.
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(banks)")}
        if "kind" not in columns:
            self._db.execute("ALTER TABLE banks ADD COLUMN kind TEXT NOT NULL DEFAULT 'ban'")
        # ... and files written before an algorithm was registered lack its distance.
        for column in _DISTANCE_COLUMNS.values():
            if column not in columns:
                self._db.execute(f"ALTER TABLE banks ADD COLUMN {column} INTEGER")
        # Files written before store ids existed get one now; OR IGNORE: the first of
        # several processes opening the file at once wins, and all read the same id.
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        self._store_id = str(self._db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"SqliteBankStore({str(self.path)!r})"

    # -- writes -------------------------------------------------------------------

    def add(self, entries: Sequence[NewEntry], *, actor: str, reason: str) -> list[BankEntry]:
        _check_actor(actor, reason)
        now = time.time()
        ids: list[int] = []
        with self._transaction() as db:
            for e in entries:
                row = db.execute(
                    "SELECT id FROM entries WHERE bank=? AND algorithm=? AND value=? AND active=1",
                    (e.bank, e.algorithm.value, e.value),
                ).fetchone()
                if row:
                    ids.append(row[0])
                    continue
                cur = db.execute(
                    "INSERT INTO entries (algorithm, value, bank, label, reason, added_by, added_at, source, grp)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (e.algorithm.value, e.value, e.bank, e.label, reason, actor, now, e.source.value, e.group),
                )
                entry_id = int(cur.lastrowid or 0)
                ids.append(entry_id)
                self._log(db, ChangeOp.ADD, entry_id, e.bank, actor, reason, now)
        return [self.get(i) for i in ids]

    def remove(self, entry_ids: Sequence[int], *, actor: str, reason: str) -> list[BankEntry]:
        _check_actor(actor, reason)
        now = time.time()
        with self._transaction() as db:
            for entry_id in entry_ids:
                row = db.execute("SELECT bank, active FROM entries WHERE id=?", (entry_id,)).fetchone()
                if row is None:
                    raise BankNotFound(f"no bank entry with id {entry_id}")
                if not row[1]:
                    continue
                db.execute(
                    "UPDATE entries SET active=0, removed_by=?, removed_at=?, removed_reason=? WHERE id=?",
                    (actor, now, reason, entry_id),
                )
                self._log(db, ChangeOp.REMOVE, entry_id, row[0], actor, reason, now)
        return [self.get(i) for i in entry_ids]

    def _configure_bank(
        self,
        name: str,
        *,
        distances: dict[Algorithm, int],
        description: str,
        actor: str,
        reason: str,
        kind: BankKind,
    ) -> None:
        with self._transaction() as db:
            db.execute(_UPSERT_BANK, (name, description, kind.value, *(distances.get(a) for a in _DISTANCE_COLUMNS)))
            self._log(db, ChangeOp.BANK, None, name, actor, reason, time.time())

    # -- reads --------------------------------------------------------------------

    def get(self, entry_id: int) -> BankEntry:
        row = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id=?", (entry_id,)).fetchone()
        if row is None:
            raise BankNotFound(f"no bank entry with id {entry_id}")
        return _entry(row)

    def entries(
        self, *, bank: str | None = None, include_removed: bool = False, group: str | None = None
    ) -> Iterator[BankEntry]:
        where, args = [], []
        if bank is not None:
            where.append("bank=?")
            args.append(bank)
        if group is not None:
            where.append("grp=?")
            args.append(group)
        if not include_removed:
            where.append("active=1")
        sql = f"SELECT {_ENTRY_COLUMNS} FROM entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        for row in self._db.execute(sql + " ORDER BY id", args):
            yield _entry(row)

    def import_entries(
        self, entries: Iterable[NewEntry], *, actor: str, reason: str, progress: t.Callable[[int], None] | None = None
    ) -> int:
        """One transaction for the whole stream: all of it lands, or (on any error) none."""
        _check_actor(actor, reason)
        now = time.time()
        added = 0
        pending = 0
        # Random hash values make every index insert touch a different B-tree page: a
        # large page cache for the import keeps them in memory until the commit.
        self._db.execute("PRAGMA cache_size=-262144")
        with self._transaction() as db:
            for e in entries:
                cur = db.execute(
                    "INSERT OR IGNORE INTO entries (algorithm, value, bank, label, reason, added_by, added_at, source, grp)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (e.algorithm.value, e.value, e.bank, e.label, reason, actor, now, e.source.value, e.group),
                )
                if cur.rowcount == 1:
                    added += 1
                    self._log(db, ChangeOp.ADD, int(cur.lastrowid or 0), e.bank, actor, reason, now)
                pending += 1
                if progress is not None and pending == 10_000:
                    progress(pending)
                    pending = 0
        if progress is not None and pending:
            progress(pending)
        return added

    def history(self, *, bank: str | None = None, entry_id: int | None = None, limit: int = 100) -> list[Change]:
        where, args = [], []
        if bank is not None:
            where.append("bank=?")
            args.append(bank)
        if entry_id is not None:
            where.append("entry_id=?")
            args.append(entry_id)
        sql = "SELECT version, op, entry_id, bank, actor, reason, at FROM changes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY version DESC LIMIT ?", [*args, int(limit)])
        return [Change(r[0], ChangeOp(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def get_many(self, entry_ids: Sequence[int]) -> list[BankEntry]:
        found: dict[int, BankEntry] = {}
        ids = [int(i) for i in entry_ids]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE id IN ({marks})", part):
                entry = _entry(row)
                found[entry.id] = entry
        missing = [i for i in ids if i not in found]
        if missing:
            raise BankNotFound(f"no bank entry with id {missing[0]}")
        return [found[i] for i in ids]

    def active_features(self, *, chunk: int = 1_000) -> Iterator[tuple[list[int], list[str], list[str], list[str]]]:
        cur = self._db.execute(
            "SELECT id, value, bank, grp FROM entries WHERE active=1 AND algorithm=? ORDER BY id", (Algorithm.ORB.value,)
        )
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            ids, values, banks, groups = zip(*rows, strict=True)
            yield list(ids), list(values), list(banks), [str(g or "") for g in groups]

    def active_columns(self, algorithm: Algorithm, *, chunk: int = 100_000) -> Iterator[tuple[list[int], list[str], list[str]]]:
        cur = self._db.execute(
            "SELECT id, value, bank FROM entries WHERE active=1 AND algorithm=? ORDER BY id", (algorithm.value,)
        )
        while True:
            rows = cur.fetchmany(chunk)
            if not rows:
                return
            ids, values, banks = zip(*rows, strict=True)
            yield list(ids), list(values), list(banks)

    def store_id(self) -> str:
        return self._store_id

    def version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM changes").fetchone()
        return int(row[0] or 0)

    def changes_since(self, version: int) -> list[Change]:
        rows = self._db.execute(
            "SELECT version, op, entry_id, bank, actor, reason, at FROM changes WHERE version>? ORDER BY version",
            (version,),
        )
        return [Change(r[0], ChangeOp(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def banks(self) -> list[BankConfig]:
        configured = {}
        for name, description, kind, *distances in self._db.execute(f"SELECT {_BANK_COLUMNS} FROM banks"):
            given = {a: d for a, d in zip(_DISTANCE_COLUMNS, distances, strict=True) if d is not None}
            configured[name] = BankConfig(name, given, description, BankKind(kind))
        for (name,) in self._db.execute("SELECT DISTINCT bank FROM entries"):
            configured.setdefault(name, BankConfig(name))
        return sorted(configured.values(), key=lambda b: b.name)

    # -- internals ----------------------------------------------------------------

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    @staticmethod
    def _log(
        db: sqlite3.Connection, op: ChangeOp, entry_id: int | None, bank: str, actor: str, reason: str, at: float
    ) -> None:
        db.execute(
            "INSERT INTO changes (op, entry_id, bank, actor, reason, at) VALUES (?,?,?,?,?,?)",
            (op.value, entry_id, bank, actor, reason, at),
        )


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _entry(row: Iterable[object]) -> BankEntry:
    (i, algo, value, bank, label, reason, by, at, source, grp, active, rby, rat, rreason) = tuple(row)
    return BankEntry(
        id=int(i),  # type: ignore[arg-type]
        algorithm=Algorithm(algo),
        value=str(value),
        bank=str(bank),
        label=str(label),
        reason=str(reason),
        added_by=str(by),
        added_at=float(at),  # type: ignore[arg-type]
        source=EntrySource(source),
        group=str(grp),
        active=bool(active),
        removed_by=rby,  # type: ignore[arg-type]
        removed_at=rat,  # type: ignore[arg-type]
        removed_reason=rreason,  # type: ignore[arg-type]
    )
