"""Where quarantined and blocked photos are kept: one choice for workers, rescans and review.

``--store`` (``PHOTOSENTRY_STORE``) names it:

- nothing: ``quarantine/`` and ``blocked/`` in the data directory (the default);
- a folder: ``quarantine/`` and ``blocked/`` in it;
- ``s3://bucket/prefix/``: the prefixes ``<prefix>quarantine/`` and ``<prefix>blocked/``
  (:class:`~photosentry.worker.bucket_store.S3ContentStore`).

Built here once, so the workers that fill the stores, ``rescan --local`` and the
moderators who read them cannot disagree about where they are.

A store, and the data directory, must lie apart from every source root (neither inside
one nor holding one): a job naming ``blocked/<sha[:2]>/<sha>/content`` would otherwise be
read out of the store and "moved", deleting the only copy; one naming the bank or a
model in the data directory would delete it. :func:`check_apart` refuses such a set-up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ensure_private_dir
from ..s3.location import S3Prefix, is_s3_url
from .actions import ActionApplier, ContentStore, Store


@dataclass(frozen=True)
class Stores:
    """The quarantine store and the blocked store."""

    quarantine: Store
    blocked: Store

    def applier(self) -> ActionApplier:
        return ActionApplier(quarantine=self.quarantine, blocked=self.blocked)


def open_stores(store: str | None, home: Path, *, source_roots: Sequence[S3Prefix | str | os.PathLike[str]] = (),
                s3_client: Any = None) -> Stores:
    """The stores ``store`` names (see the module docstring).

    Args:
        home: the data directory (the default place).
        source_roots: the source roots: s3:// prefixes (:class:`S3Prefix` or URLs) and
            folders. A bucket store may not lie inside an s3:// root, nor contain one; a
            folder store and the data directory may not lie inside a folder root, nor
            contain one (:func:`check_apart`).
        s3_client: the client to use for a bucket store (default: a new one).

    Raises:
        ValueError: an invalid ``s3://`` URL, or a store (or the data directory)
            overlapping a source root.
    """
    folders = [r for r in source_roots if not isinstance(r, S3Prefix) and not is_s3_url(str(r))]
    check_apart(store, home, folders)
    source_roots = [r if isinstance(r, S3Prefix) else S3Prefix.parse(str(r)) for r in source_roots
                    if isinstance(r, S3Prefix) or is_s3_url(str(r))]
    if store and is_s3_url(store):
        root = S3Prefix.parse(store)
        for source in source_roots:
            if root.overlaps(source):
                raise ValueError(f"the store {root} overlaps the source root {source}: a job could name a"
                                 " quarantined photo as its source. Use a prefix (or a bucket) of its own.")
        from ..s3.client import connect
        from .bucket_store import S3ContentStore

        client = s3_client if s3_client is not None else connect()
        return Stores(S3ContentStore(client, root.child("quarantine")), S3ContentStore(client, root.child("blocked")))
    base = ensure_private_dir(Path(store).expanduser()) if store else home
    return Stores(ContentStore(base / "quarantine"), ContentStore(base / "blocked"))


def check_apart(store: str | None, home: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a folder store or data directory that lies inside a folder source root or
    holds one (compared as real paths, symlinks resolved; ``s3://`` values are ignored).

    Raises:
        ValueError: naming both folders and why it matters.
    """
    mine = [("the data directory", _real(home))]
    if store and not is_s3_url(store):
        mine.append(("the store", _real(Path(store).expanduser())))
    for root in roots:
        if is_s3_url(str(root)):
            continue
        real_root = _real(Path(root).expanduser())
        for what, path in mine:
            if path.is_relative_to(real_root) or real_root.is_relative_to(path):
                inside = "lies inside" if path.is_relative_to(real_root) else "holds"
                raise ValueError(f"{what} {path} {inside} the source root {real_root}: a job could name a stored"
                                 " photo (or the bank) as its source and have it moved out, deleting it. Keep"
                                 " --store and --data-dir outside every --source-root.")


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))
