"""The quarantine and blocked stores in a bucket: content-addressed, one sidecar per upload.

The same layout as the folder stores (:class:`~photosentry.worker.actions.ContentStore`),
under the store's prefix::

    <prefix><sha[:2]>/<sha>/content                 the photo
    <prefix><sha[:2]>/<sha>/verdicts/<key>.json     one sidecar per upload

Private: nothing is written with an ACL or a public grant, so objects belong to the
bucket owner alone; the bucket itself must block public access (docs/storage.md).

Writing a photo is "copy, then verify": the bytes that were read and decided on are
put with ``If-None-Match: *`` (the same bytes stored twice are kept once) and then
checked on the server (size, the SHA-256 they were stored under, and their MD5 where
the ETag is one, else the stored bytes are read back and hashed). An object under a
photo's hash that does not hold those bytes is written again. Only after that may the
source be removed. A sidecar is put with ``If-None-Match: *`` too, so applying the
same verdict twice writes it once.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from .. import defaults
from ..errors import StorageUnavailable, UnreadableImage
from ..s3 import client as s3client
from ..s3.location import S3Location, S3Prefix
from .actions import sidecar_name

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5_ETAG = re.compile(r'"?([0-9a-f]{32})"?')
_SIDECAR_MAX_BYTES = 1024 * 1024


class S3ContentStore:
    """A private, content-addressed prefix of photos and their verdict sidecars."""

    def __init__(self, client: Any, root: S3Prefix) -> None:
        self.client = client
        self.root = root

    def __repr__(self) -> str:
        return f"S3ContentStore({self.root.url!r})"

    def item(self, sha256: str) -> S3Prefix:
        if not _SHA256.fullmatch(sha256 or ""):
            raise ValueError(f"{sha256!r} is not a lowercase SHA-256 hex digest")
        return self.root.child(f"{sha256[:2]}/{sha256}")

    def _sidecar(self, sha256: str, sidecar_key: str) -> S3Location:
        return self.item(sha256).object(f"verdicts/{sidecar_name(sidecar_key)}")

    def put(self, sha256: str, data: bytes, sidecar_key: str, sidecar: dict[str, Any]) -> tuple[S3Location, bool]:
        """Store ``data`` under its hash and one sidecar; returns (content location, changed).

        Raises:
            ValueError: ``data`` does not hash to ``sha256``.
            StorageUnavailable: a write failed or the stored copy does not verify (the
                caller must not remove the source; the job is retried).
        """
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError("data does not hash to the SHA-256 it is stored under")
        content = self.item(sha256).object("content")
        changed = self._put(content, data, sha256, only_new=True)
        if not self._verified(content, data, sha256):
            # A stale or planted object under this hash: write the real bytes over it.
            changed = self._put(content, data, sha256, only_new=False)
            if not self._verified(content, data, sha256):
                raise StorageUnavailable(f"{content} does not hold the bytes just written to it")
        body = json.dumps(sidecar, sort_keys=True, indent=1).encode()
        if self._write(self._sidecar(sha256, sidecar_key), body, content_type="application/json", only_new=True):
            changed = True
        return content, changed

    def _put(self, location: S3Location, data: bytes, sha256: str, *, only_new: bool) -> bool:
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        return self._write(location, data, content_type="application/octet-stream", only_new=only_new,
                           ContentMD5=md5, Metadata={"sha256": sha256})

    def _write(self, location: S3Location, body: bytes, *, content_type: str, only_new: bool, **extra: Any) -> bool:
        """Put one object; with ``only_new``, False (and nothing written) if it exists."""
        if only_new:
            extra["IfNoneMatch"] = "*"
        try:
            self.client.put_object(Bucket=location.bucket, Key=location.key, Body=body, ContentType=content_type,
                                   **extra)
        except s3client.s3_errors() as exc:
            if only_new and s3client.classify(exc) == s3client.CHANGED:
                return False
            raise s3client.unavailable(f"PUT {location}", exc) from exc
        return True

    def _verified(self, location: S3Location, data: bytes, sha256: str) -> bool:
        try:
            head = self.client.head_object(Bucket=location.bucket, Key=location.key)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) == s3client.MISSING:
                return False
            raise s3client.unavailable(f"HEAD {location}", exc) from exc
        if int(head.get("ContentLength") or -1) != len(data) or (head.get("Metadata") or {}).get("sha256") != sha256:
            return False
        plain = _MD5_ETAG.fullmatch(str(head.get("ETag") or ""))
        if plain is not None:  # a single-part upload without SSE-KMS: the ETag is the bytes' MD5
            return plain.group(1) == hashlib.md5(data, usedforsecurity=False).hexdigest()
        stored = self._get(location, max_bytes=len(data))
        return stored is not None and hashlib.sha256(stored).hexdigest() == sha256

    def _get(self, location: S3Location, *, max_bytes: int) -> bytes | None:
        from ..s3.objects import read

        try:
            return read(self.client, location, max_bytes=max_bytes)[0]
        except UnreadableImage:  # missing, denied or too large in our own store: not there
            return None

    def sidecars(self, sha256: str) -> list[dict[str, Any]]:
        out = []
        for location in self._sidecar_locations(sha256):
            raw = self._get(location, max_bytes=_SIDECAR_MAX_BYTES)
            if raw is not None:
                out.append(json.loads(raw))
        return out

    def _sidecar_locations(self, sha256: str, *, limit: int | None = None) -> list[S3Location]:
        folder = self.item(sha256).child("verdicts")
        found: list[S3Location] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=folder.bucket, Prefix=folder.prefix)
            for page in pages:
                for entry in page.get("Contents") or ():
                    found.append(S3Location(folder.bucket, entry["Key"]))
                    if limit is not None and len(found) >= limit:
                        return found
        except s3client.s3_errors() as exc:
            raise s3client.unavailable(f"LIST {folder}", exc) from exc
        return found

    def content_path(self, sha256: str) -> S3Location | None:
        """Where the photo with this SHA-256 is, or None if this store does not hold it."""
        location = self.item(sha256).object("content")
        try:
            self.client.head_object(Bucket=location.bucket, Key=location.key)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) == s3client.MISSING:
                return None
            raise s3client.unavailable(f"HEAD {location}", exc) from exc
        return location

    def read(self, sha256: str) -> bytes | None:
        """The stored photo's bytes, or None if this store does not hold it."""
        return self._get(self.item(sha256).object("content"), max_bytes=defaults.MAX_BYTES)

    def discard(self, sha256: str, sidecar_key: str) -> bool:
        """Drop one upload's sidecar; delete the photo once no upload's sidecar is left.

        Returns True if the photo itself was deleted (False: kept for others, or gone).
        """
        self._delete(self._sidecar(sha256, sidecar_key))
        if self._sidecar_locations(sha256, limit=1):
            return False
        content = self.item(sha256).object("content")
        existed = self.content_path(sha256) is not None
        self._delete(content)
        return existed

    def _delete(self, location: S3Location) -> None:
        try:
            self.client.delete_object(Bucket=location.bucket, Key=location.key)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) != s3client.MISSING:
                raise s3client.unavailable(f"DELETE {location}", exc) from exc
