"""Where quarantined and blocked photos are kept: one choice for workers, rescans and review.

``--store`` (``PHOTOSENTRY_STORE``) names it:

- nothing: ``quarantine/`` and ``blocked/`` in the data directory (the default);
- a folder: ``quarantine/`` and ``blocked/`` in it;
- ``s3://bucket/prefix/``: the prefixes ``<prefix>quarantine/`` and ``<prefix>blocked/``
  (:class:`~photosentry.worker.bucket_store.S3ContentStore`).

Built here once, so the workers that fill the stores, ``rescan --local`` and the
moderators who read them cannot disagree about where they are.
"""

from __future__ import annotations

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


def open_stores(store: str | None, home: Path, *, source_roots: Sequence[S3Prefix] = (),
                s3_client: Any = None) -> Stores:
    """The stores ``store`` names (see the module docstring).

    Args:
        home: the data directory (the default place).
        source_roots: the s3:// source roots; a bucket store may not lie inside one, nor
            contain one (a job could then name a quarantined photo as its source).
        s3_client: the client to use for a bucket store (default: a new one).

    Raises:
        ValueError: an invalid ``s3://`` URL, or a store overlapping a source root.
    """
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
