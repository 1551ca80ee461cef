"""One object read within the byte limit, and acted on only as the version that was read.

Reading (:func:`read`): a HEAD first, so an object over the byte limit is refused from
its ``Content-Length`` before a byte of it is fetched; then a GET pinned to what the
HEAD saw (``If-Match`` on its ETag, and its ``VersionId`` in a versioned bucket), its
body read as it arrives and cut off past the byte limit whatever the server claims,
and past a deadline that grows with its size (a server that drips its body must not
hold a worker). A job may name the version it means (``version_id``); then only that
version is read.

Acting (:class:`S3Object`) mirrors the same-device-and-inode check of a file:

- **remove** (after the photo is in its store): without versioning, a
  ``DeleteObject`` with ``If-Match`` on the ETag that was read, so an object replaced
  since is left alone. In a versioned bucket, deleting the version read would make the
  previous version current again: a photo no job scanned would be served at the key.
  So when the version read is the current one, a delete marker is put first
  (``DeleteObject`` without a version, ``If-Match`` on the ETag: the key then shows
  nothing), and then the version read is deleted, and only it (a newer upload under
  the key stays, older versions stay noncurrent and are not served);
- **replace** (an allowed upload written back without its metadata): a ``PutObject``
  with ``If-Match`` on the ETag that was read, keeping its content type, cache and
  disposition headers and user metadata; in a versioned bucket every version older
  than the one written is then deleted, the version read included: any of them may
  carry the GPS coordinates the policy asked to remove.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from .. import defaults
from ..errors import SourceRefused, StorageUnavailable, UnreadableImage
from . import client as s3client
from .location import S3Location

log = logging.getLogger(__name__)

#: Headers of an object kept when it is written back (HEAD's name -> PutObject's argument).
_KEPT_HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentLanguage")

#: Versions deleted per DeleteObjects request (S3's own limit).
_DELETE_BATCH = 1000

_FORMAT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                 "TIFF": "image/tiff", "BMP": "image/bmp", "HEIF": "image/heic", "HEIC": "image/heic",
                 "AVIF": "image/avif", "MPO": "image/jpeg"}


def content_type_for(fmt: str | None) -> str:
    """The MIME type to store a photo of format ``fmt`` (the verdict's media format) under."""
    return _FORMAT_TYPES.get((fmt or "").upper(), "application/octet-stream")


@dataclass(frozen=True)
class S3Object:
    """The version of one object that was read: what a move or a rewrite may act on."""

    location: S3Location
    etag: str
    version_id: str | None = None
    #: Headers and user metadata to keep when the object is written back.
    kept: tuple[tuple[str, Any], ...] = ()
    client: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # A client does not cross processes (``rescan --local`` sends what its pool read
        # to the parent, which moves it): the receiver binds its own (:meth:`bound`).
        return {**self.__dict__, "client": None}

    def bound(self, client: Any) -> "S3Object":
        """This version, acted on through ``client``."""
        return replace(self, client=client)

    def describe(self) -> str:
        return self.location.url

    def _pin(self) -> dict[str, Any]:
        where: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.location.key}
        if self.version_id:
            where["VersionId"] = self.version_id
        return where

    def still_same(self) -> bool:
        """True if the object still is the version that was read.

        Raises:
            StorageUnavailable: S3 could not be asked (the job is retried).
        """
        try:
            head = self.client.head_object(**self._pin())
        except s3client.s3_errors() as exc:
            kind = s3client.classify(exc)
            if kind in (s3client.MISSING, s3client.DENIED, s3client.CHANGED):
                return False
            raise s3client.unavailable(f"HEAD {self.location}", exc) from exc
        return head.get("ETag") == self.etag

    def remove(self) -> bool:
        """Delete the version that was read; True if it was deleted now.

        False when it is gone already (an earlier application of the same verdict) or
        the key now holds another object (left alone). In a versioned bucket the key is
        hidden first when the version read is current, so no older version is promoted.

        Raises:
            StorageUnavailable: the delete failed in a way that may pass, or was denied.
        """
        where = self._pin()
        if not self.version_id:
            where["IfMatch"] = self.etag
        else:
            self._hide_if_current()
        try:
            self.client.delete_object(**where)
        except s3client.s3_errors() as exc:
            kind = s3client.classify(exc)
            if kind in (s3client.MISSING, s3client.CHANGED):
                return False
            # Denied too: the photo is safe in its store, but it must not stay where it
            # was uploaded; the job is retried until the operator grants s3:DeleteObject.
            raise s3client.unavailable(f"DELETE {self.location}", exc) from exc
        return True

    def _hide_if_current(self) -> None:
        """Put a delete marker on the key if the version read is its current version.

        S3 serves the newest remaining version at a key: deleting the current version
        alone would make the one before it current, and that one may never have been
        scanned (two uploads under one key a moment apart, both jobs reading the
        second). The marker is conditional on the ETag read, so an upload that came in
        since stays current; the HEAD covers a server that ignores the condition.

        Raises:
            StorageUnavailable: S3 could not be asked, or the marker could not be put.
        """
        loc = self.location
        try:
            current = self.client.head_object(Bucket=loc.bucket, Key=loc.key)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) == s3client.MISSING:
                return  # a delete marker is current already (an earlier attempt), or no object
            raise s3client.unavailable(f"HEAD {loc}", exc) from exc
        if current.get("VersionId") != self.version_id:
            return  # a newer upload is current: deleting the version read promotes nothing
        try:
            self.client.delete_object(Bucket=loc.bucket, Key=loc.key, IfMatch=self.etag)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) in (s3client.MISSING, s3client.CHANGED):
                return  # replaced or hidden since: the version read is not current any more
            raise s3client.unavailable(f"DELETE {loc} (delete marker)", exc) from exc

    def replace(self, data: bytes) -> bool:
        """Write ``data`` over the object if it still is the version that was read; True
        if written, False if the key now holds another object (left alone).

        Raises:
            StorageUnavailable: the write failed in a way that may pass.
        """
        loc = self.location
        extra = dict(self.kept)
        try:
            put = self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data, IfMatch=self.etag, **extra)
        except s3client.s3_errors() as exc:
            kind = s3client.classify(exc)
            if kind in (s3client.MISSING, s3client.CHANGED):
                return False
            raise s3client.unavailable(f"PUT {loc}", exc) from exc
        written = put.get("VersionId")
        if self.version_id and written not in (None, self.version_id):  # "null": versioning suspended since
            self._drop_versions_before(written)
        return True

    def _drop_versions_before(self, written: str) -> None:
        """Delete every version of the key older than ``written`` (the clean one), the
        version read included: any of them may carry the coordinates the policy asked to
        remove. Logged, not raised: the key already holds the clean photo, and a retried
        job would find bytes other than the ones decided on."""
        loc = self.location
        older: list[dict[str, str]] = []
        try:
            seen = False
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=loc.bucket, Prefix=loc.key)
            for page in pages:
                # Newest first for each key; other keys that share the prefix are not ours.
                for version in page.get("Versions") or ():
                    if version.get("Key") != loc.key:
                        continue
                    if seen:
                        older.append({"Key": loc.key, "VersionId": version["VersionId"]})
                    seen = seen or version.get("VersionId") == written
            if not seen:  # not listed (yet): at least the version read goes
                older = [{"Key": loc.key, "VersionId": self.version_id or ""}]
            for start in range(0, len(older), _DELETE_BATCH):
                done = self.client.delete_objects(Bucket=loc.bucket,
                                                  Delete={"Objects": older[start:start + _DELETE_BATCH],
                                                          "Quiet": True})
                if done.get("Errors"):
                    raise RuntimeError(f"{len(done['Errors'])} versions not deleted: {done['Errors'][0]}")
        except (RuntimeError, *s3client.s3_errors()) as exc:
            log.error("rewritten, but older versions (with their metadata) could not all be deleted",
                      extra={"object": loc.url, "version_id": self.version_id, "versions": len(older),
                             "why": s3client.describe(exc)})


def read(client: Any, location: S3Location, *, max_bytes: int,
         version_id: str | None = None) -> tuple[bytes, S3Object]:
    """The bytes of ``location`` (at most ``max_bytes``) and the version they are.

    Args:
        version_id: read this version (a job that names the version it means);
            default: whatever version is current.

    Raises:
        SourceRefused: the object, the version (or bucket) does not exist (chained from
            a FileNotFoundError, as a missing file is), or reading it is denied.
        UnreadableImage: ``too_large``, from Content-Length before the GET, or while reading.
        StorageUnavailable: anything that may pass (the job is retried), a body that
            arrives slower than :data:`~photosentry.defaults.S3_BODY_MIN_RATE` allows included.
    """
    where: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
    if version_id:
        where["VersionId"] = version_id
    for _ in range(2):  # the object may be replaced between the HEAD and the GET: look again once
        try:
            head = client.head_object(**where)
        except s3client.s3_errors() as exc:
            if version_id and s3client.status_of(exc) == 400:  # S3 says it is no version id at all
                raise SourceRefused(f"{location} has no version {version_id[:100]!r}: {s3client.describe(exc)}") from exc
            _raise(exc, "HEAD", location)
        size = int(head.get("ContentLength") or 0)
        if size > max_bytes:
            raise UnreadableImage("too_large", f"{location} is {size} bytes, limit is {max_bytes}")
        etag = str(head.get("ETag") or "")
        version = head.get("VersionId") or version_id or None
        pin = dict(where)
        if etag:
            pin["IfMatch"] = etag
        if version and version != "null":
            pin["VersionId"] = version
        else:
            version = None
        try:
            got = client.get_object(**pin)
        except s3client.s3_errors() as exc:
            if s3client.classify(exc) == s3client.CHANGED:
                continue
            _raise(exc, "GET", location)
        body = got["Body"]
        declared = got.get("ContentLength")
        expected = min(int(declared) if declared is not None else size, max_bytes)
        deadline = time.monotonic() + defaults.S3_BODY_GRACE_S + expected / defaults.S3_BODY_MIN_RATE
        try:
            data = _read_body(body, max_bytes, location, deadline=deadline)
        except s3client.s3_errors() as exc:
            raise s3client.unavailable(f"GET {location}", exc) from exc
        finally:
            body.close()
        if declared is not None and len(data) != int(declared):  # cut short: never decide on part of a photo
            raise StorageUnavailable(f"GET {location} ended after {len(data)} of {declared} bytes")
        kept = tuple((name, head[name]) for name in _KEPT_HEADERS if head.get(name))
        if head.get("Metadata"):
            kept += (("Metadata", dict(head["Metadata"])),)
        return data, S3Object(location, etag, version, kept, client)
    raise StorageUnavailable(f"{location} changed twice while being read")


def _read_body(body: Any, max_bytes: int, location: S3Location, *, deadline: float) -> bytes:
    # What has arrived, one socket read at a time (urllib3's read1), so the deadline is
    # checked every few seconds even while a server drips its body; StreamingBody.read
    # would wait for a whole chunk. (Without read1, an older urllib3: whole chunks.)
    raw = getattr(body, "_raw_stream", None)
    read = getattr(raw, "read1", None) or body.read
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise StorageUnavailable(f"GET {location} was too slow: {total} bytes arrived before its deadline"
                                     f" (at least {defaults.S3_BODY_MIN_RATE} bytes/s after"
                                     f" {defaults.S3_BODY_GRACE_S:.0f} s)")
        chunk = read(min(defaults.S3_READ_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise UnreadableImage("too_large", f"{location} sent more than {max_bytes} bytes")
        chunks.append(chunk)


def _raise(exc: BaseException, what: str, location: S3Location) -> NoReturn:
    kind = s3client.classify(exc)
    if kind == s3client.MISSING:
        why = f"{location} does not exist"
        raise SourceRefused(why) from FileNotFoundError(why)
    if kind == s3client.DENIED:
        raise SourceRefused(f"{location} cannot be read: {s3client.describe(exc)}") from exc
    raise s3client.unavailable(f"{what} {location}", exc) from exc



def restore(client: Any, location: S3Location, data: bytes, *, content_type: str) -> dict[str, Any]:
    """Put a released photo back at ``location``, never over another object.

    Returns the effects a moderator's decision records: ``restored_to`` (the URL, or
    None) and a ``restore_note`` when it was not written now.

    Raises:
        StorageUnavailable: S3 could not be reached (the decision is finished by
            submitting it again).
    """
    try:
        client.put_object(Bucket=location.bucket, Key=location.key, Body=data, ContentType=content_type,
                          IfNoneMatch="*")
        return {"restored_to": location.url}
    except s3client.s3_errors() as exc:
        if s3client.classify(exc) == s3client.DENIED:
            return {"restored_to": None, "restore_note": f"not restored: {s3client.describe(exc)}"}
        if s3client.classify(exc) != s3client.CHANGED:
            raise s3client.unavailable(f"PUT {location}", exc) from exc
    # Something is there already: this photo (a decision submitted again), or a new upload.
    try:
        there, _ = read(client, location, max_bytes=len(data))
    except UnreadableImage:
        there = None  # gone again, larger, or unreadable: in any case not ours to replace
    if there == data:
        return {"restored_to": location.url, "restore_note": "already there"}
    return {"restored_to": None, "restore_note": "a different object now has that key: not replaced"}
