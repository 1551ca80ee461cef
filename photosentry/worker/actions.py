"""Acting on a verdict: move quarantined and blocked photos into private stores.

Each store is content-addressed by the photo's SHA-256, so the same bytes uploaded
twice are kept once:

    <store>/<sha[:2]>/<sha>/content            the photo (0600)
    <store>/<sha[:2]>/<sha>/verdicts/<key>.json  one sidecar per upload (0600)

Directories are 0700. Every write goes to a temporary file that is renamed into place,
and a sidecar is created with O_EXCL, so applying the same verdict twice (a retried
job, two workers racing after a crash) is a no-op and never leaves a half-written
file. ``allow`` leaves the photo where it is, unless its verdict asks for a rewrite
(``rewrite: ["strip_metadata"]``, the policy's ``[privacy]``): then :meth:`ActionApplier.rewrite`
writes the file back in place without GPS and identifying metadata
(:func:`photosentry.media.scrub.strip_metadata`, lossless), through a private copy
swapped in for it, keeping its mode and owner.

The stores may as well live in a bucket (:class:`~photosentry.worker.bucket_store.S3ContentStore`,
the same layout), and the photo may have come from one: the source is acted on through
its *origin* (:class:`~photosentry.worker.sources.Origin`), a file or the S3 object
version that was read, so a move deletes, and a rewrite replaces, only what was read:
a file only beneath its source root, never through a symlink, and only while it still
holds the bytes that were decided on (:class:`~photosentry.worker.sources.FileOrigin`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import ensure_private_dir
from ..decode import sniff_format
from ..media import scrub
from .sources import FileOrigin, Origin
from .verdict import Action, Verdict

_FILE_MODE = 0o600


@dataclass(frozen=True)
class ActionResult:
    """What applying a verdict did."""

    action: Action
    #: Where the photo now lives: a path, or an S3 location (None for allow, or when
    #: there were no bytes).
    stored_at: Any = None
    #: False when an identical earlier application already did everything.
    changed: bool = False
    #: The source file was removed after it was stored (a move).
    source_removed: bool = False
    #: An allowed source file was written back without its metadata (``rewrite``).
    rewritten: bool = False
    #: SHA-256 of the source file as written back (when ``rewritten``).
    rewritten_sha256: str | None = None


class Store(Protocol):
    """A content-addressed store of photos and one verdict sidecar per upload: a folder
    (:class:`ContentStore`) or a bucket prefix (:class:`~photosentry.worker.bucket_store.S3ContentStore`)."""

    def put(self, sha256: str, data: bytes, sidecar_key: str, sidecar: dict[str, Any]) -> tuple[Any, bool]:
        """Store ``data`` under its hash and one sidecar; returns (content location, changed)."""

    def sidecars(self, sha256: str) -> list[dict[str, Any]]:
        """Every upload's sidecar of the photo with this hash."""

    def content_path(self, sha256: str) -> Any:
        """Where the photo with this hash is (a path or an S3 location), or None."""

    def read(self, sha256: str) -> bytes | None:
        """The photo's bytes, or None if the store does not hold it."""

    def discard(self, sha256: str, sidecar_key: str) -> bool:
        """Drop one upload's sidecar, and the photo with the last one; True if the photo went."""


class ContentStore:
    """A private, content-addressed folder of photos and their verdict sidecars."""

    def __init__(self, root: Path) -> None:
        self.root = ensure_private_dir(Path(root))
        os.chmod(self.root, 0o700)

    def item_dir(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"{sha256!r} is not a lowercase SHA-256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(self, sha256: str, data: bytes, sidecar_key: str, sidecar: dict[str, Any]) -> tuple[Path, bool]:
        """Store ``data`` under its hash and one sidecar; returns (content path, changed)."""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("data does not hash to the SHA-256 it is stored under")
        item = self.item_dir(sha256)
        for folder in (item.parent, item, item / "verdicts"):  # each one 0700, not just the leaf
            ensure_private_dir(folder)
        content = item / "content"
        changed = False
        if not content.exists():
            _atomic_write(content, data)
            changed = True
        sidecar_path = item / "verdicts" / f"{_safe_key(sidecar_key)}.json"
        if _create_exclusive(sidecar_path, json.dumps(sidecar, sort_keys=True, indent=1).encode()):
            changed = True
        return content, changed

    def sidecars(self, sha256: str) -> list[dict[str, Any]]:
        folder = self.item_dir(sha256) / "verdicts"
        if not folder.is_dir():
            return []
        return [json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("*.json"))]

    def content_path(self, sha256: str) -> Path | None:
        """The stored photo with this SHA-256, or None if this store does not hold it."""
        path = self.item_dir(sha256) / "content"
        return path if path.is_file() else None

    def read(self, sha256: str) -> bytes | None:
        """The stored photo's bytes, or None if this store does not hold it."""
        path = self.content_path(sha256)
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None

    def discard(self, sha256: str, sidecar_key: str) -> bool:
        """Drop one upload's sidecar; delete the photo once no upload's sidecar is left.

        Used after a moderator's decision: the same bytes may still be waiting in
        another upload's review, so they stay until the last one is decided. Returns
        True if the photo itself was deleted (False: kept for others, or already gone).
        """
        item = self.item_dir(sha256)
        (item / "verdicts" / f"{_safe_key(sidecar_key)}.json").unlink(missing_ok=True)
        folder = item / "verdicts"
        if folder.is_dir() and any(folder.glob("*.json")):
            return False
        content = item / "content"
        existed = content.exists()
        content.unlink(missing_ok=True)
        for leftover in (folder, item):
            try:
                leftover.rmdir()
            except OSError:
                pass  # not empty (a concurrent put) or already gone: keep it
        return existed


class ActionApplier:
    """Applies verdicts: quarantine and block move the photo into their stores."""

    def __init__(self, *, quarantine: Store, blocked: Store) -> None:
        self.stores: dict[Action, Store] = {Action.QUARANTINE: quarantine, Action.BLOCK: blocked}

    def apply(
        self, verdict: Verdict, *, data: bytes | None, upload_id: str, source: Path | Origin | None = None
    ) -> ActionResult:
        """Act on ``verdict`` for the photo ``data`` (read from ``source``: a file, or the
        origin it was read from, checked by the caller to still be what was read).

        The photo is stored before the source is removed, so a crash between the two
        leaves a copy in both places - never in neither.
        """
        if verdict.action is not Action.ALLOW and verdict.hashes is None:
            # Nothing hashed to key the store by (e.g. the source was too large to
            # read); the verdict itself is still recorded and delivered by the caller.
            return ActionResult(verdict.action)
        return self.apply_record(verdict.action, verdict.to_dict(), data=data, upload_id=upload_id, source=source)

    def apply_record(
        self,
        action: Action,
        verdict: dict[str, Any],
        *,
        data: bytes | None,
        upload_id: str,
        source: Path | Origin | None = None,
    ) -> ActionResult:
        """Like :meth:`apply`, for a verdict already serialised (e.g. read back from the
        verdict stream when a retried job finds its upload already decided)."""
        if action is Action.ALLOW:
            return ActionResult(Action.ALLOW)
        store = self.stores[action]
        if data is None:
            return ActionResult(action)
        sidecar = {"upload_id": upload_id, "verdict": verdict}
        sha256 = hashlib.sha256(data).hexdigest()
        stored, changed = store.put(sha256, data, upload_id, sidecar)
        # Stored (and, in a bucket, verified) first: a crash between the two leaves the
        # photo in both places, never in neither. False: moved by an earlier application,
        # or no longer the bytes that were stored (left alone).
        removed = _remove(_origin(source), sha256) if source is not None else False
        return ActionResult(action, stored, changed or removed, removed)

    def rewrite(self, verdict: Verdict, *, data: bytes | None, source: Path | Origin | None) -> ActionResult:
        """Carry out an allowed verdict's ``rewrite`` steps on its source, in place: a
        file, or an object in a bucket (a conditional put on the ETag that was read).

        Only the bytes the verdict was decided on are rewritten (their SHA-256 must be the
        verdict's): a replayed job finds the file already rewritten and leaves it. A
        source given as bytes (no file) cannot be rewritten here; the verdict's
        ``rewrite`` field tells the producer to do it (the same function is public).

        Raises:
            ValueError: the file's structure does not allow a lossless rewrite.
            OSError: the file could not be replaced.
            StorageUnavailable: the object could not be replaced (the job is retried).
        """
        if verdict.action is not Action.ALLOW or scrub.STRIP_METADATA not in verdict.rewrite:
            return ActionResult(Action.ALLOW)
        if data is None or source is None:
            return ActionResult(Action.ALLOW)
        origin = _origin(source)
        where = origin.path if isinstance(origin, FileOrigin) else origin.describe()
        expected = verdict.hashes.sha256 if verdict.hashes is not None else None
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            return ActionResult(Action.ALLOW, stored_at=where)  # not the bytes decided on (already rewritten)
        fmt = (verdict.media.format if verdict.media is not None else "") or sniff_format(data[:64]) or ""
        clean = scrub.strip_metadata(data, fmt)
        if clean == data:
            return ActionResult(Action.ALLOW, stored_at=where)
        if not _replace(origin, clean, expected or hashlib.sha256(data).hexdigest()):
            return ActionResult(Action.ALLOW)  # replaced by someone else since it was read: left alone
        return ActionResult(Action.ALLOW, stored_at=where, changed=True, rewritten=True,
                            rewritten_sha256=hashlib.sha256(clean).hexdigest())


def _origin(source: Path | Origin) -> Origin:
    # A bare path comes from a caller that checked the file itself.
    return FileOrigin(source) if isinstance(source, Path) else source


def _remove(origin: Origin, sha256: str) -> bool:
    # A file is removed only while it holds the bytes stored (an object: the version read).
    return origin.remove(sha256) if isinstance(origin, FileOrigin) else origin.remove()


def _replace(origin: Origin, data: bytes, read_sha256: str) -> bool:
    return origin.replace(data, read_sha256) if isinstance(origin, FileOrigin) else origin.replace(data)


def sidecar_name(upload_id: str) -> str:
    """The file (or object) name of one upload's sidecar in a store."""
    return f"{_safe_key(upload_id)}.json"


def _safe_key(key: str) -> str:
    # Upload ids come from the pipeline; never let one name a path.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist; True if this call created it."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic and fails if the sidecar already exists
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
