"""The shared bank backend: one Redis that every worker on every host reads and writes.

Same contract as :class:`~photosentry.hashes.banks.sqlite.SqliteBankStore`. Each write is one
Lua script, because Redis runs a script atomically: the version counter, the entry
hash, the active-duplicate index and the change log can never be seen half-updated,
and two processes adding the same hash at once end with one active entry.

Keys, all under ``prefix`` (plain strings and JSON; no pickle, never an image):

- ``version``, ``next_id``: counters (the bank version; the last entry id).
- ``entry:<id>``: a hash per entry, its fields named like :class:`BankEntry`'s.
- ``ids``, ``active``, ``group:<name>``: sorted sets of entry ids scored by id, so
  :meth:`RedisBankStore.entries` pages through them in id order.
- ``features``: the sorted set of *active* local-feature entries (``orb``: one per
  image ban), so a matcher that loaded its hashes from a snapshot or the host's index
  file reads them without paging through millions of entries.
- ``dedup``: a hash ``bank NUL algorithm NUL value`` -> id of the active entry.
- ``changes``: a sorted set of JSON changes scored by version, so a worker at
  version N reads only what came after N.
- ``banks`` (name -> JSON config) and ``names`` (every bank configured or written to).
- ``store_id``: a random id, set once (SET NX) by the first process that asks for it.

Needs Redis 5 or newer (scripts replicate their effects, so they may read the clock).
The scripts build per-entry key names themselves, so this assumes one Redis server
(or a Redis Cluster prefix that pins every key to one slot with a ``{hash tag}``).
Writes are safe to retry after a connection error: a repeated add merges into the
entry the first attempt made, and a repeated remove changes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence

import redis

from ...errors import BankNotFound
from ..codecs import Algorithm
from .model import BankConfig, BankEntry, BankKind, Change, ChangeOp, EntrySource, NewEntry, _check_actor
from .store import BankStore

DEFAULT_PREFIX = "photosentry:bank:"
"""Key prefix of the bank; a different prefix is a separate bank store in the same database."""

_STORE_ID = re.compile(r"[0-9a-f]{32}")

_FIXED_KEYS = ("version", "next_id", "ids", "active", "dedup", "changes", "names", "banks")

# A script blocks every other client of the Redis while it runs, so a big import is
# written in chunks: each chunk is atomic, and re-running a failed import is safe.
_ADD_CHUNK = 1000

# Shared by the scripts. Timestamps come from the Redis server's clock, not the caller's,
# so audit times from workers on different hosts order the same way versions do.
_LUA_PRELUDE = """
local K_VERSION, K_NEXT_ID, K_IDS, K_ACTIVE, K_DEDUP, K_CHANGES, K_NAMES, K_BANKS =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local prefix, actor, reason = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local FEATURES = {""" + ", ".join(f"{a.value} = true" for a in Algorithm if a.is_features) + """}

local function log(op, entry_id, bank)
    local version = redis.call('INCR', K_VERSION)
    -- Strings only: cjson would round numbers to 14 digits. The version inside
    -- keeps members unique even if two changes had identical fields.
    local change = cjson.encode({v = tostring(version), op = op, id = entry_id,
                                 bank = bank, actor = actor, reason = reason, at = now})
    redis.call('ZADD', K_CHANGES, version, change)
end
"""

# ARGV[4..]: algorithm, value, bank, label, source, group for each entry; returns the ids.
_ADD = _LUA_PRELUDE + """
local out = {}
for i = 4, #ARGV, 6 do
    local algorithm, value, bank = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local group = ARGV[i + 5]
    local dedup = bank .. '\\0' .. algorithm .. '\\0' .. value
    local existing = redis.call('HGET', K_DEDUP, dedup)
    if existing then
        out[#out + 1] = tonumber(existing)
    else
        local id = redis.call('INCR', K_NEXT_ID)
        local sid = tostring(id)
        redis.call('HSET', prefix .. 'entry:' .. sid,
            'id', sid, 'algorithm', algorithm, 'value', value, 'bank', bank,
            'label', ARGV[i + 3], 'reason', reason, 'added_by', actor, 'added_at', now,
            'source', ARGV[i + 4], 'group', group, 'active', '1')
        redis.call('HSET', K_DEDUP, dedup, sid)
        redis.call('ZADD', K_IDS, id, sid)
        redis.call('ZADD', K_ACTIVE, id, sid)
        if group ~= '' then
            redis.call('ZADD', prefix .. 'group:' .. group, id, sid)
        end
        if FEATURES[algorithm] then
            redis.call('ZADD', prefix .. 'features', id, sid)
        end
        redis.call('SADD', K_NAMES, bank)
        log('add', sid, bank)
        out[#out + 1] = id
    end
end
return out
"""

# ARGV[4..]: entry ids. Returns nil, or the first unknown id and then changes nothing
# (like the SQLite backend's rolled-back transaction).
_REMOVE = _LUA_PRELUDE + """
for i = 4, #ARGV do
    if redis.call('EXISTS', prefix .. 'entry:' .. ARGV[i]) == 0 then
        return ARGV[i]
    end
end
for i = 4, #ARGV do
    local sid = ARGV[i]
    local key = prefix .. 'entry:' .. sid
    local f = redis.call('HMGET', key, 'active', 'bank', 'algorithm', 'value')
    if f[1] == '1' then
        redis.call('HSET', key, 'active', '0', 'removed_by', actor, 'removed_at', now,
                   'removed_reason', reason)
        redis.call('ZREM', K_ACTIVE, sid)
        redis.call('ZREM', prefix .. 'features', sid)
        redis.call('HDEL', K_DEDUP, f[2] .. '\\0' .. f[3] .. '\\0' .. f[4])
        log('remove', sid, f[2])
    end
end
return false
"""

# ARGV[4], ARGV[5]: bank name, its config as JSON (replaces the previous one).
_CONFIGURE = _LUA_PRELUDE + """
redis.call('HSET', K_BANKS, ARGV[4], ARGV[5])
redis.call('SADD', K_NAMES, ARGV[4])
log('bank', '', ARGV[4])
return 0
"""


class RedisBankStore(BankStore):
    """The shared backend: a bank store in one Redis database, safe for any number of writers.

    Args:
        client: a ``redis.Redis``, created with or without ``decode_responses``.
        prefix: prepended to every key this store uses.
    """

    #: Entries fetched per round trip by :meth:`entries`.
    page_size = 256

    def __init__(self, client: redis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._r = client
        self.prefix = prefix
        self._keys = [prefix + k for k in _FIXED_KEYS]
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._configure = client.register_script(_CONFIGURE)
        self._store_id: str | None = None

    def __repr__(self) -> str:
        return f"RedisBankStore({self._r!r}, prefix={self.prefix!r})"

    # -- writes -------------------------------------------------------------------

    def add(self, entries: Sequence[NewEntry], *, actor: str, reason: str) -> list[BankEntry]:
        _check_actor(actor, reason)
        ids: list[int] = []
        for start in range(0, len(entries), _ADD_CHUNK):
            args = [self.prefix, actor, reason]
            for e in entries[start : start + _ADD_CHUNK]:
                args += [e.algorithm.value, e.value, e.bank, e.label, e.source.value, e.group]
            ids += [int(i) for i in self._add(keys=self._keys, args=args)]
        return self._get_many(ids)

    def remove(self, entry_ids: Sequence[int], *, actor: str, reason: str) -> list[BankEntry]:
        _check_actor(actor, reason)
        if not entry_ids:
            return []
        ids = [int(i) for i in entry_ids]
        missing = self._remove(keys=self._keys, args=[self.prefix, actor, reason, *ids])
        if missing is not None:
            raise BankNotFound(f"no bank entry with id {_text(missing)}")
        return self._get_many(ids)

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
        config = json.dumps({"description": description, "kind": kind.value,
                             "distances": {a.value: int(d) for a, d in distances.items()}})
        self._configure(keys=self._keys, args=[self.prefix, actor, reason, name, config])

    # -- reads --------------------------------------------------------------------

    def get(self, entry_id: int) -> BankEntry:
        return self._get_many([int(entry_id)])[0]

    def get_many(self, entry_ids: Sequence[int]) -> list[BankEntry]:
        out: list[BankEntry] = []
        for start in range(0, len(entry_ids), 1000):
            out += self._get_many([int(i) for i in entry_ids[start : start + 1000]])
        return out

    def entries(
        self, *, bank: str | None = None, include_removed: bool = False, group: str | None = None
    ) -> Iterator[BankEntry]:
        # Ids only grow and entries are never deleted, so paging by "ids above the last
        # one seen" is stable while others write. Banks are few and large, so they are
        # filtered here rather than indexed; so is group "" (ungrouped has no index).
        if group:
            source = f"{self.prefix}group:{group}"
        else:
            source = self.prefix + ("ids" if include_removed else "active")
        after = 0
        while True:
            page = self._r.zrangebyscore(source, f"({after}", "+inf", start=0, num=self.page_size)
            if not page:
                return
            for entry in self._get_many([int(i) for i in page], missing_ok=True):
                if bank is not None and entry.bank != bank:
                    continue
                if group is not None and entry.group != group:
                    continue
                # Re-checked: an entry may be removed between reading ids and entries.
                if not include_removed and not entry.active:
                    continue
                yield entry
            after = int(page[-1])

    def active_features(self, *, chunk: int = 1_000) -> Iterator[tuple[list[int], list[str], list[str], list[str]]]:
        after = 0
        while True:
            page = self._r.zrangebyscore(self.prefix + "features", f"({after}", "+inf", start=0, num=self.page_size)
            if not page:
                return
            found = [e for e in self._get_many([int(i) for i in page], missing_ok=True)
                     if e.active and e.algorithm.is_features]
            if found:
                yield [e.id for e in found], [e.value for e in found], [e.bank for e in found], [e.group for e in found]
            after = int(page[-1])

    def active_columns(self, algorithm: Algorithm, *, chunk: int = 100_000) -> Iterator[tuple[list[int], list[str], list[str]]]:
        if not algorithm.is_features:
            yield from super().active_columns(algorithm, chunk=chunk)
            return
        for ids, values, banks, _ in self.active_features(chunk=chunk):
            yield ids, values, banks

    def version(self) -> int:
        return int(self._r.get(self.prefix + "version") or 0)

    def store_id(self) -> str:
        if self._store_id is None:
            key = self.prefix + "store_id"
            # NX: of several processes asking at once, the first one's id sticks.
            self._r.set(key, uuid.uuid4().hex, nx=True)
            value = _text(self._r.get(key) or b"")
            if not _STORE_ID.fullmatch(value):
                raise ValueError(f"{key} holds {value!r}, not a store id (32 hex digits)")
            self._store_id = value
        return self._store_id

    def changes_since(self, version: int) -> list[Change]:
        changes = []
        for raw in self._r.zrangebyscore(self.prefix + "changes", f"({int(version)}", "+inf"):
            c = json.loads(_text(raw))
            changes.append(
                Change(int(c["v"]), ChangeOp(c["op"]), int(c["id"]) if c["id"] else None,
                       c["bank"], c["actor"], c["reason"], float(c["at"]))
            )
        return changes

    def banks(self) -> list[BankConfig]:
        pipe = self._r.pipeline(transaction=True)
        pipe.smembers(self.prefix + "names")
        pipe.hgetall(self.prefix + "banks")
        names, configs = pipe.execute()
        out = {_text(n): BankConfig(_text(n)) for n in names}
        for name, raw in configs.items():
            c = json.loads(_text(raw))
            distances = {Algorithm(a): int(d) for a, d in c["distances"].items()}
            # Configs written before allow banks existed have no kind: they are ban banks.
            out[_text(name)] = BankConfig(_text(name), distances, c["description"], BankKind(c.get("kind", "ban")))
        return sorted(out.values(), key=lambda b: b.name)

    # -- internals ----------------------------------------------------------------

    def _get_many(self, ids: Sequence[int], *, missing_ok: bool = False) -> list[BankEntry]:
        pipe = self._r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(f"{self.prefix}entry:{i}")
        out = []
        for entry_id, raw in zip(ids, pipe.execute(), strict=True):
            if raw:
                out.append(_from_hash(raw))
            elif not missing_ok:
                raise BankNotFound(f"no bank entry with id {entry_id}")
        return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _from_hash(raw: Mapping[str | bytes, str | bytes]) -> BankEntry:
    h = {_text(k): _text(v) for k, v in raw.items()}
    return BankEntry(
        id=int(h["id"]),
        algorithm=Algorithm(h["algorithm"]),
        value=h["value"],
        bank=h["bank"],
        label=h["label"],
        reason=h["reason"],
        added_by=h["added_by"],
        added_at=float(h["added_at"]),
        source=EntrySource(h["source"]),
        group=h["group"],
        active=h["active"] == "1",
        # Absent until the entry is removed.
        removed_by=h.get("removed_by"),
        removed_at=float(h["removed_at"]) if "removed_at" in h else None,
        removed_reason=h.get("removed_reason"),
    )
