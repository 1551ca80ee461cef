"""Where a job's photo comes from, and the confinement that keeps a job inside its roots.

A scan job names its photo in one of two ways (see docs/queue.md):

- ``{"path": "..."}``: a file inside one of the worker's configured *source roots*.
- ``{"bytes_b64": "..."}``: the photo itself, base64 in the job payload, up to
  :data:`~photosentry.defaults.MAX_INLINE_BYTES`.

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

A refusal is a value, not a crash: :class:`SourceRefused` carries the reason code
``source_refused`` and the policy turns it into a fail-closed verdict.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..decode import TOO_LARGE, read_limited
from ..errors import SourceRefused, UnreadableImage

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


Source = PathSource | BytesSource


@dataclass(frozen=True)
class Fetched:
    """The bytes of a source, and where they came from when it was a file."""

    data: bytes
    #: The resolved file (inside a root), for actions that move it; None for bytes.
    path: Path | None = None
    #: (st_dev, st_ino) of the file that was read, so a later move can check that
    #: the path still names the same file.
    identity: tuple[int, int] | None = None


class SourceRoots:
    """The folders path sources may name; everything else is refused."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        resolved = []
        for root in roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"source root {str(root)!r} is not a directory")
            resolved.append(path.resolve(strict=True))
        self.roots: tuple[Path, ...] = tuple(resolved)

    def __repr__(self) -> str:
        return f"SourceRoots({[str(r) for r in self.roots]!r})"

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
            SourceRefused: the path is outside the roots or not a regular file.
            UnreadableImage: ``too_large`` or ``unreadable`` while reading.
        """
        if isinstance(source, BytesSource):
            if len(source.data) > max_bytes:
                raise UnreadableImage(TOO_LARGE, f"{len(source.data)} bytes, limit is {max_bytes}")
            return Fetched(source.data)
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
        return Fetched(data, real, (info.st_dev, info.st_ino))

    @staticmethod
    def still_same(fetched: Fetched) -> bool:
        """True if ``fetched.path`` still names the file that was read (safe to move)."""
        if fetched.path is None or fetched.identity is None:
            return False
        try:
            info = os.stat(fetched.path, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) == fetched.identity


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
