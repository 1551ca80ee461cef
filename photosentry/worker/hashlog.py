"""The hash log: every scanned photo's hashes (never the photo), for retro-hunts.

When a bank gains entries, photos scanned earlier may now match them.
``photosentry retrohunt`` finds those by reading this log: no photo is kept or
decoded again. Each worker appends one record per scanned upload after its verdict
is recorded: upload id, source, context, time, the action taken, the bank version
it was decided at, and the hashes *with their query variants* (PDQ 8, pHash 8,
dHash 2 per frame), so the hunt matches exactly as a fresh scan would.

Stored in a Redis stream (``photosentry:hashlog``), one entry per scan, with the
hashes packed in binary (about 400 bytes for a still photo, about 600 bytes per
record with the other fields and Redis' overhead). Retention is bounded twice: at
most ``defaults.HASHLOG_MAX_ENTRIES`` records (trimmed on every append) and none
older than ``defaults.HASHLOG_RETENTION_DAYS`` (trimmed by every retro-hunt and
every 10,000 appends). With the defaults that is at most about 1.2 GB of Redis
memory.

A verdict served from the verdict cache carries only the canonical hashes (the
variants were not recomputed); its record matches the canonical values only.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .. import defaults
from ..hashes.codecs import Algorithm
from ..hashes.signals import FrameHashes, ImageHashes, PerceptualHash

DEFAULT_HASHLOG = "photosentry:hashlog"
"""Redis stream holding the hash log."""

_FORMAT = 1
_ORDER = (Algorithm.PDQ, Algorithm.PHASH, Algorithm.DHASH)
_NO_QUALITY = 255


def pack_hashes(hashes: ImageHashes) -> bytes:
    """Binary form: format, sha256, md5, then per frame its index, PDQ quality and the
    variants of each perceptual algorithm (count + raw bytes)."""
    out = bytearray(struct.pack(">B32s16sB", _FORMAT, bytes.fromhex(hashes.sha256), bytes.fromhex(hashes.md5),
                                min(len(hashes.frames), 255)))
    for frame in hashes.frames[:255]:
        pdq = frame.get(Algorithm.PDQ)
        quality = pdq.quality if pdq is not None and pdq.quality is not None else _NO_QUALITY
        out += struct.pack(">HB", min(frame.frame, 65535), min(quality, 255))
        for algorithm in _ORDER:
            ph = frame.get(algorithm)
            variants = ph.variants if ph is not None else ()
            out += struct.pack(">B", len(variants))
            for v in variants:
                out += bytes.fromhex(v)
    return bytes(out)


def unpack_hashes(data: bytes) -> ImageHashes:
    fmt, sha, md5, nframes = struct.unpack_from(">B32s16sB", data, 0)
    if fmt != _FORMAT:
        raise ValueError(f"unknown hash log format {fmt}")
    pos = struct.calcsize(">B32s16sB")
    frames = []
    for _ in range(nframes):
        index, quality = struct.unpack_from(">HB", data, pos)
        pos += 3
        per = []
        for algorithm in _ORDER:
            (count,) = struct.unpack_from(">B", data, pos)
            pos += 1
            size = algorithm.bits // 8
            variants = tuple(data[pos + i * size : pos + (i + 1) * size].hex() for i in range(count))
            pos += count * size
            if variants:
                q = None if quality == _NO_QUALITY else quality  # the 64-bit hashes carry PDQ's (signals.hash_frame)
                per.append(PerceptualHash(algorithm, variants[0], variants, q))
        frames.append(FrameHashes(index, tuple(per)))
    return ImageHashes(sha.hex(), md5.hex(), tuple(frames))


@dataclass(frozen=True)
class ScanRecord:
    """One scanned upload as the hash log keeps it."""

    log_id: str
    upload_id: str
    source: Mapping[str, Any]
    context: Mapping[str, Any]
    at: float
    action: str
    bank_version: int
    hashes: ImageHashes


class HashLog:
    """Append scans and read them back in order, with bounded retention."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        stream: str = DEFAULT_HASHLOG,
        max_entries: int = defaults.HASHLOG_MAX_ENTRIES,
        retention_days: float = defaults.HASHLOG_RETENTION_DAYS,
    ) -> None:
        self.client, self.stream = client, stream
        self.max_entries, self.retention_days = max_entries, retention_days
        self._appends = 0

    def record(
        self,
        *,
        upload_id: str,
        source: Mapping[str, Any],
        context: Mapping[str, Any],
        action: str,
        bank_version: int,
        hashes: ImageHashes,
    ) -> str:
        # Inline photo bytes are never logged: only a path source can be rescanned.
        kept_source = {"path": source["path"]} if isinstance(source.get("path"), str) else {"inline": True}
        fields = {
            "upload_id": upload_id,
            "source": json.dumps(kept_source),
            "context": json.dumps(dict(context)),
            "at": repr(time.time()),
            "action": action,
            "bank_version": str(int(bank_version)),
            "h": pack_hashes(hashes),
        }
        entry_id = self.client.xadd(self.stream, fields, maxlen=self.max_entries, approximate=True)
        self._appends += 1
        if self._appends % 10_000 == 1:
            self.trim()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def trim(self) -> None:
        """Drop records older than the retention period."""
        cutoff_ms = int((time.time() - self.retention_days * 86400) * 1000)
        self.client.xtrim(self.stream, minid=f"{cutoff_ms}-0", approximate=False)

    def __len__(self) -> int:
        return int(self.client.xlen(self.stream))

    def read(self, *, chunk: int = 2000) -> Iterator[list[ScanRecord]]:
        """Every record, oldest first, in chunks."""
        after = "-"
        while True:
            entries = self.client.xrange(self.stream, min=after, max="+", count=chunk)
            if not entries:
                return
            out = []
            for entry_id, raw in entries:
                f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                try:
                    out.append(ScanRecord(
                        log_id=eid,
                        upload_id=_text(f["upload_id"]),
                        source=json.loads(_text(f["source"])),
                        context=json.loads(_text(f["context"])),
                        at=float(_text(f["at"])),
                        action=_text(f["action"]),
                        bank_version=int(_text(f["bank_version"])),
                        hashes=unpack_hashes(f["h"] if isinstance(f["h"], bytes) else f["h"].encode("latin-1")),
                    ))
                except (KeyError, ValueError, struct.error):
                    continue  # a damaged record must not stop the hunt
            yield out
            ms, seq = eid.split("-")
            after = f"{ms}-{int(seq) + 1}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
