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

After the checks the file is reached from the root without following a symlink
(:mod:`photosentry.worker.confined`: ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``,
else a component walk with ``O_NOFOLLOW``), opened ``O_NOFOLLOW | O_NONBLOCK``, and, before
any byte is read, checked to be a regular file (not a FIFO, device or directory). A
directory swapped for a symlink after the check makes the open fail: nothing outside
the root is ever opened.

Whatever was read keeps its *origin* (:class:`FileOrigin` or
:class:`~photosentry.s3.objects.S3Object`): what a move or a rewrite may later act on,
and only while it still is what was read. A file is acted on the same way it was read:
through its directory, reached again from the root without following a symlink.

A refusal is a value, not a crash: :class:`SourceRefused` carries the reason code
``source_refused`` and the policy turns it into a fail-closed verdict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .. import defaults
from ..decode import TOO_LARGE, read_limited
from ..errors import SourceRefused, UnreadableImage
from ..s3.location import S3Location, S3Prefix, check_version_id, is_s3_url
from . import confined
from .confined import FileIdentity

log = logging.getLogger(__name__)

SOURCE_REFUSED = SourceRefused.CODE
"""Reason code of a job whose source was refused before anything was read."""


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
        or no longer what was read. (:meth:`FileOrigin.remove` also takes the SHA-256
        of the bytes stored, and removes only a file that still holds them.)"""

    def replace(self, data: bytes) -> bool:
        """Write ``data`` in its place; True if written, False if it changed meanwhile.
        (:meth:`FileOrigin.replace` also takes the SHA-256 of the bytes read.)"""


@dataclass(frozen=True)
class FileOrigin:
    """A file read beneath a source root: what a move or a rewrite may act on, and only
    while it still is what was read.

    Every act opens the file's directory again from the root without following a
    symlink, checks that it is the directory the file was read in, and does every step
    through that descriptor; the file must still be what was read (:class:`FileIdentity`:
    device, inode, size, modification and change times) immediately before the step,
    and what the step takes away is checked again, content included, before it is
    dropped (docs/queue.md, "Path sources").
    """

    #: The real path that was read (symlinks resolved, inside ``root``).
    path: Path
    #: None: unknown (a caller that checked the file itself).
    identity: FileIdentity | None = None
    #: The source root it was read beneath; None: a bare path a caller checked itself,
    #: acted on in its own directory.
    root: Path | None = None
    #: (st_dev, st_ino) of the directory it was read in.
    folder: tuple[int, int] | None = None

    def describe(self) -> str:
        return str(self.path)

    def still_same(self) -> bool:
        if self.identity is None:
            return False
        fd = self._open_folder()
        if fd is None:
            return False
        try:
            return self._unchanged(fd, self.path.name)
        finally:
            os.close(fd)

    def remove(self, expected_sha256: str | None = None) -> bool:
        """Remove the file if it still is what was read (and, given ``expected_sha256``,
        still holds those bytes); True if removed now.

        The entry is first renamed to a private name, so nothing can be swapped in under
        it, and checked there; anything else is put back under its name (never over a
        file that appeared there meanwhile) and left alone.
        """
        fd = self._open_folder()
        if fd is None:
            return False
        name = self.path.name
        try:
            if self.identity is not None and not self._unchanged(fd, name):
                return False  # gone (moved by an earlier application), or changed since the read
            claim = confined.private_name("remove")
            try:
                os.rename(name, claim, src_dir_fd=fd, dst_dir_fd=fd)
            except FileNotFoundError:
                return False
            try:
                same = self._holds_what_was_read(fd, claim, expected_sha256)
            except OSError:
                same = False  # could not be checked (a read error): not removed
            if same:
                os.unlink(claim, dir_fd=fd)
                return True
            self._put_back(fd, claim, name)
            return False
        finally:
            os.close(fd)

    def replace(self, data: bytes, expected_sha256: str | None = None) -> bool:
        """Write ``data`` in the file's place if it still is what was read, keeping its
        mode and (where permitted) its owner; True if written, False if it changed
        meanwhile (left alone).

        The new content is written to a private file in the same directory (``O_EXCL``)
        and swapped in with ``renameat2(RENAME_EXCHANGE)``; what was swapped out is
        checked (the file read, holding ``expected_sha256``'s bytes) before it is
        dropped, and swapped back if it was another file (a new upload renamed into
        place). Without ``RENAME_EXCHANGE`` the copy is renamed over the name right after
        a last identity check.
        """
        fd = self._open_folder()
        if fd is None:
            return False
        name = self.path.name
        try:
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if not stat.S_ISREG(info.st_mode) or (self.identity is not None and not self.identity.unchanged(info)):
                return False
            tmp = confined.private_name("rewrite")
            ino = confined.create_exclusive(fd, tmp, data, mode=info.st_mode, owner=(info.st_uid, info.st_gid))
            keep_tmp = False
            try:
                if self.identity is not None and not self._unchanged(fd, name):
                    return False  # changed while the copy was written
                try:
                    swapped = confined.exchange(fd, tmp, name)
                except FileNotFoundError:
                    return False  # gone since the check
                if not swapped:
                    # No RENAME_EXCHANGE here: by name, right after the check (docs/queue.md).
                    os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                    return True
                if self._holds_what_was_read(fd, tmp, expected_sha256):
                    return True  # the file read, with its metadata, is at tmp: dropped below
                # Another file had taken the name: put it back, and drop our copy.
                try:
                    back = (confined.exchange(fd, tmp, name)
                            and os.stat(tmp, dir_fd=fd, follow_symlinks=False).st_ino == ino)
                except OSError:
                    back = False
                if back:
                    return False
                keep_tmp = True  # the name changed yet again in between: never drop what is not ours
                log.error("a file that appeared during a rewrite is kept under a private name",
                          extra={"path": str(self.path), "kept_as": tmp})
                return False
            finally:
                if not keep_tmp:
                    confined.unlink_quietly(fd, tmp)
        finally:
            os.close(fd)

    def _open_folder(self) -> int | None:
        """The directory the file was read in, reached again without a symlink; None if
        it is gone, moved or another directory now."""
        if self.root is not None:
            root, parts = self.root, self.path.relative_to(self.root).parts[:-1]
        else:
            root, parts = Path(os.path.realpath(self.path.parent)), ()
        try:
            fd = confined.open_dir(root, parts)
        except OSError:
            return None
        if self.folder is not None:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != self.folder:
                os.close(fd)
                return None
        return fd

    def _unchanged(self, dir_fd: int, name: str) -> bool:
        assert self.identity is not None
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return self.identity.unchanged(info)

    def _holds_what_was_read(self, dir_fd: int, name: str, expected_sha256: str | None) -> bool:
        """``name`` (one of our private names) is the file that was read, with its bytes."""
        try:
            fd = os.open(name, confined.O_READ, dir_fd=dir_fd)
        except OSError:
            return False  # a symlink (ELOOP) or gone
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return False
            if self.identity is not None and not self.identity.same_content(info):
                return False
            if expected_sha256 is None:
                return True
            digest, left = hashlib.sha256(), info.st_size + 1  # more than its size: it grew
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            return left > 0 and digest.hexdigest() == expected_sha256
        finally:
            os.close(fd)

    def _put_back(self, dir_fd: int, claim: str, name: str) -> None:
        try:
            if confined.rename_noreplace(dir_fd, claim, name):
                return
            why = "a file appeared under its name meanwhile"
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
        log.error("a file that was not what was read could not be put back: kept under a private name",
                  extra={"path": str(self.path), "kept_as": claim, "why": why})


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
    def identity(self) -> FileIdentity | None:
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
        parts = real.relative_to(root).parts
        try:
            # The real path again, from the root, no symlink anywhere: a directory
            # swapped for one since resolve() makes this fail instead of leaving the root.
            dir_fd = confined.open_dir(root, parts[:-1])
            try:
                fd = os.open(parts[-1] if parts else ".", confined.O_READ, dir_fd=dir_fd)
                folder = os.fstat(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise SourceRefused(f"source path {source.path!r} cannot be opened: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SourceRefused(f"source path {source.path!r} is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = read_limited(fh, max_bytes)
        finally:
            os.close(fd)
        return Fetched(data, FileOrigin(real, FileIdentity.of(info), root=root,
                                        folder=(folder.st_dev, folder.st_ino)))

    @staticmethod
    def still_same(fetched: Fetched) -> bool:
        """True if what ``fetched`` was read from still is what was read (safe to move)."""
        return fetched.origin is not None and fetched.origin.still_same()


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
