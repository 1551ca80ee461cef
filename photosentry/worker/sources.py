"""Where a job's photo comes from, and the confinement that keeps a job inside its roots.

A scan job names its photo in one of two ways (see docs/queue.md):

- ``{"path": "..."}``: a file inside one of the worker's configured *source roots*.
- ``{"bytes_b64": "..."}``: the photo itself, base64 in the job payload, up to
  :data:`~photosentry.defaults.MAX_INLINE_BYTES`.

- ``{"s3": "s3://bucket/key"}``: an object under one of the worker's ``s3://`` source
  roots, read with the checks of :mod:`photosentry.s3.location` and
  :mod:`photosentry.s3.objects` (docs/storage.md); ``"version_id"`` beside it pins the
  version the job means.

A job payload is untrusted input (anyone who can write to the queue writes it), so a
path is refused, without the file ever being opened, when:

- it is empty, not a string, or contains a NUL byte;
- it has a ``..`` component (even one that would stay inside a root: there is no
  honest reason to send one);
- it is absolute and not under a root, or it resolves (symlinks followed) to a place
  outside every root;
- no source roots are configured at all.

After the checks the file is opened ``O_NOFOLLOW | O_NONBLOCK`` and, before any byte
is read, the open descriptor is checked again: it must be a regular file (not a FIFO,
device or directory) and, on Linux, ``/proc/self/fd`` must show it inside the root.
That closes the race where a directory is swapped for a symlink between the check
and the open.

Whatever was read keeps its *origin* (:class:`FileOrigin` or
:class:`~photosentry.s3.objects.S3Object`): what a move or a rewrite may later act on,
and only while it still is what was read.

A refusal is a value, not a crash: :class:`SourceRefused` carries the reason code
``source_refused`` and the policy turns it into a fail-closed verdict.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import defaults
from ..decode import TOO_LARGE, read_limited
from ..errors import SourceRefused, UnreadableImage
from ..s3.location import S3Location, S3Prefix, check_version_id, is_s3_url

SOURCE_REFUSED = SourceRefused.CODE
"""Reason code of a job whose source was refused before anything was read."""

_PROC_FD = Path("/proc/self/fd")


@dataclass(frozen=True)
class PathSource:
    """A file named by path; only read if it resolves inside a source root."""

    path: str

    def describe(self) -> str:
        return self.path


@dataclass(frozen=True)
class BytesSource:
    """The photo's bytes, carried in the job payload (base64 in JSON)."""

    data: bytes

    def describe(self) -> str:
        return f"<{len(self.data)} inline bytes>"


@dataclass(frozen=True)
class S3Source:
    """An object named by ``s3://bucket/key``; only read if it lies under an s3:// root."""

    url: str
    #: The version the job means (``{"s3": ..., "version_id": ...}``); None: the current one.
    version_id: str | None = None

    def describe(self) -> str:
        return self.url


Source = PathSource | BytesSource | S3Source


def source_for(text: str) -> PathSource | S3Source:
    """The source a path-or-URL string names (a manifest line, a rescan item, a CLI argument)."""
    return S3Source(text) if is_s3_url(text) else PathSource(text)


class Origin(Protocol):
    """Where fetched bytes came from, for acting on it after the verdict."""

    def describe(self) -> str:
        """The path or ``s3://`` URL, for logs and the review queue."""

    def still_same(self) -> bool:
        """True while it still is what was read (safe to move or rewrite)."""

    def remove(self) -> bool:
        """Remove it (after it was stored); True if removed now, False if already gone
        or no longer what was read."""

    def replace(self, data: bytes) -> bool:
        """Write ``data`` in its place; True if written, False if it changed meanwhile."""


@dataclass(frozen=True)
class FileOrigin:
    """A file inside a source root, and the (st_dev, st_ino) of what was read."""

    path: Path
    #: None: unknown (a caller that checked the file itself).
    identity: tuple[int, int] | None = None

    def describe(self) -> str:
        return str(self.path)

    def still_same(self) -> bool:
        if self.identity is None:
            return False
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) == self.identity

    def remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False  # moved by an earlier application of this verdict
        return True

    def replace(self, data: bytes) -> bool:
        """Atomically replace the file's content, keeping its mode and (where permitted) its owner."""
        path = self.path
        info = os.stat(path, follow_symlinks=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            os.fchmod(fd, info.st_mode & 0o7777)
            try:
                os.fchown(fd, info.st_uid, info.st_gid)
            except PermissionError:
                pass  # not root: the file becomes the worker's, as any file it writes
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


@dataclass(frozen=True)
class Fetched:
    """The bytes of a source, and where they came from (None for inline bytes)."""

    data: bytes
    origin: Origin | None = None

    @property
    def path(self) -> Path | None:
        """The resolved file (inside a root) when the source was a path."""
        return self.origin.path if isinstance(self.origin, FileOrigin) else None

    @property
    def identity(self) -> tuple[int, int] | None:
        return self.origin.identity if isinstance(self.origin, FileOrigin) else None


class SourceRoots:
    """The folders and ``s3://`` prefixes sources may name; everything else is refused.

    Args:
        roots: folders and ``s3://bucket/prefix/`` URLs, mixed.
        s3_client: the S3 client to read with; default: one built from the standard AWS
            configuration when there is an s3:// root.

    Raises:
        ValueError: a folder that is not a directory, or an s3:// root that is not valid.
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *, s3_client: Any = None) -> None:
        resolved = []
        s3_roots = []
        for root in roots:
            if is_s3_url(root):
                s3_roots.append(S3Prefix.parse(root))
                continue
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"source root {str(root)!r} is not a directory")
            resolved.append(path.resolve(strict=True))
        self.roots: tuple[Path, ...] = tuple(resolved)
        self.s3_roots: tuple[S3Prefix, ...] = tuple(s3_roots)
        self._s3_client = s3_client
        if self.s3_roots and s3_client is None:
            from ..s3.client import connect

            self._s3_client = connect()

    def __repr__(self) -> str:
        return f"SourceRoots({[str(r) for r in (*self.roots, *self.s3_roots)]!r})"

    @property
    def s3_client(self) -> Any:
        return self._s3_client

    def resolve_s3(self, raw: object) -> S3Location:
        """The object ``raw`` (an ``s3://bucket/key`` URL) names, if it lies under an s3:// root.

        Raises:
            SourceRefused: not a valid URL, an odd key, or outside every s3:// root.
        """
        try:
            location = S3Location.parse(raw)
        except ValueError as exc:
            raise SourceRefused(f"source {str(raw)[:300]!r} refused: {str(exc)[:300]}") from exc
        if not self.s3_roots:
            raise SourceRefused("no s3:// source roots are configured on this worker")
        if any(root.contains(location) for root in self.s3_roots):
            return location
        raise SourceRefused(f"source {location.url!r} lies outside the configured s3:// source roots")

    def resolve(self, raw: object) -> tuple[Path, Path]:
        """The real path of ``raw`` and the root it lies in.

        Relative paths are taken relative to the first root.

        Raises:
            SourceRefused: for every path that is not plainly inside a root.
        """
        if not isinstance(raw, str) or not raw:
            raise SourceRefused(f"source path must be a non-empty string, got {raw!r}")
        if "\x00" in raw:
            raise SourceRefused(f"source path {raw!r} contains a NUL byte")
        if not self.roots:
            raise SourceRefused("no source roots are configured on this worker; send the bytes instead")
        given = Path(raw)
        if ".." in given.parts:
            raise SourceRefused(f"source path {raw!r} contains '..'")
        candidate = given if given.is_absolute() else self.roots[0] / given
        try:
            real = Path(os.path.realpath(candidate, strict=True))
        except OSError as exc:
            # Missing, a symlink loop, or permission denied: nothing to read either way.
            raise SourceRefused(f"source path {raw!r} cannot be resolved: {exc.strerror or exc}") from exc
        for root in self.roots:
            if real.is_relative_to(root):
                return real, root
        raise SourceRefused(f"source path {raw!r} resolves outside the configured source roots")

    def fetch(self, source: Source, *, max_bytes: int) -> Fetched:
        """Read a source within ``max_bytes``.

        Raises:
            SourceRefused: the path or object is outside the roots, not a regular file,
                missing (chained from a FileNotFoundError) or not readable.
            UnreadableImage: ``too_large`` or ``unreadable`` while reading.
            StorageUnavailable: an S3 request failed in a way that may pass.
        """
        if isinstance(source, BytesSource):
            if len(source.data) > max_bytes:
                raise UnreadableImage(TOO_LARGE, f"{len(source.data)} bytes, limit is {max_bytes}")
            return Fetched(source.data)
        if isinstance(source, S3Source):
            from ..s3 import objects

            location = self.resolve_s3(source.url)
            version_id = None
            if source.version_id is not None:
                try:
                    version_id = check_version_id(source.version_id)
                except ValueError as exc:
                    raise SourceRefused(f"source {location.url!r} refused: {exc}") from exc
            data, obj = objects.read(self._s3_client, location, max_bytes=max_bytes, version_id=version_id)
            return Fetched(data, obj)
        real, root = self.resolve(source.path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceRefused(f"source path {source.path!r} cannot be opened: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SourceRefused(f"source path {source.path!r} is not a regular file")
            opened = _opened_path(fd)
            if opened is not None and not opened.is_relative_to(root):
                raise SourceRefused(f"source path {source.path!r} changed to outside the roots while opening")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = read_limited(fh, max_bytes)
        finally:
            os.close(fd)
        return Fetched(data, FileOrigin(real, (info.st_dev, info.st_ino)))

    @staticmethod
    def still_same(fetched: Fetched) -> bool:
        """True if what ``fetched`` was read from still is what was read (safe to move)."""
        return fetched.origin is not None and fetched.origin.still_same()


def _opened_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(_PROC_FD / str(fd)))
    except OSError:
        return None  # no /proc (not Linux): the O_NOFOLLOW open and S_ISREG check still hold


def decode_inline(text: object, *, max_bytes: int = defaults.MAX_INLINE_BYTES) -> BytesSource:
    """Decode the payload's ``bytes_b64`` field within ``max_bytes`` (checked before decoding).

    Raises:
        UnreadableImage: ``too_large`` past the limit.
        SourceRefused: not a string, or not valid base64.
    """
    if not isinstance(text, str):
        raise SourceRefused("bytes_b64 must be a base64 string")
    if len(text) > 4 * ((max_bytes + 2) // 3) + 4:
        raise UnreadableImage(TOO_LARGE, f"inline photo is over the {max_bytes}-byte limit for inline bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SourceRefused(f"bytes_b64 is not valid base64: {exc}") from exc
    if len(data) > max_bytes:
        raise UnreadableImage(TOO_LARGE, f"inline photo is {len(data)} bytes, limit is {max_bytes}")
    return BytesSource(data)
