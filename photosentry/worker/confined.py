"""File operations beneath a source root that never follow a symlink.

A source root is shared with whoever uploads into it, so any directory in it may be
swapped for a symlink (``renameat2(RENAME_EXCHANGE)`` does it atomically, over and over)
between two steps that name the same path. Every step that names a path inside a root
therefore goes through a *directory descriptor* opened here, never through the path:

- :func:`open_dir` opens ``root/a/b`` with ``openat2(RESOLVE_BENEATH |
  RESOLVE_NO_SYMLINKS)`` where the kernel has it (Linux 5.6+), else one component at a
  time, each ``openat(O_DIRECTORY | O_NOFOLLOW)`` relative to the one before. Either way
  a symlink anywhere, or a component that is not a directory, is an error, and the
  descriptor names a directory beneath the root however the path changes afterwards.
- the file itself is then opened, stat'ed, created (``O_EXCL``), renamed and unlinked
  relative to that descriptor (``dir_fd=``), with ``O_NOFOLLOW`` / ``follow_symlinks=False``.

:func:`exchange` and :func:`rename_noreplace` are ``renameat2`` (``RENAME_EXCHANGE``,
``RENAME_NOREPLACE``): they let a rewrite swap its clean copy in and look at what it
swapped out, and let a refused removal put a file back without replacing one that
appeared meanwhile. Where the kernel, the C library or the file system lacks them they
return False / fall back as each one says, and the callers say what that leaves open
(docs/queue.md, "Path sources").

Linux is the target. Elsewhere (no ``openat2``, no ``renameat2``) the component walk and
plain ``rename`` are used; ``os.open`` with ``dir_fd`` needs a POSIX system.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Opening a file to read or check it: never a symlink, never blocking on a FIFO.
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

# openat2(2): the syscall number is the same on every Linux architecture (new syscalls
# share one table since 5.1); struct open_how is three u64s.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# What a kernel, a seccomp filter (EPERM in older container runtimes) or a file system
# answers for a call or flag it does not have.
_UNSUPPORTED = {errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load (not POSIX)
        return None


_LIBC = _libc()
#: Set to False (tests, or a kernel that misbehaves) to use the component walk.
use_openat2 = _LIBC is not None and hasattr(_LIBC, "syscall") and os.uname().sysname == "Linux"
#: Set to False (tests) to act as on a system without renameat2.
use_renameat2 = _LIBC is not None and hasattr(_LIBC, "renameat2")


@dataclass(frozen=True)
class FileIdentity:
    """What a file was when it was read: which file (device, inode) and which content
    (size, modification and change times, nanoseconds)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> "FileIdentity":
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def unchanged(self, info: os.stat_result) -> bool:
        """The same regular file, not written, truncated, renamed or re-permissioned since."""
        return stat.S_ISREG(info.st_mode) and self == FileIdentity.of(info)

    def same_content(self, info: os.stat_result) -> bool:
        """As :meth:`unchanged`, after a rename of our own (which moves the change time)."""
        return (stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
                == (self.dev, self.ino, self.size, self.mtime_ns))


def open_dir(root: Path, parts: Sequence[str]) -> int:
    """A descriptor of the directory ``root/parts...``, reached without following a
    symlink and without leaving ``root``; the caller closes it.

    ``root`` itself is a resolved path the operator configured; it is opened with
    ``O_NOFOLLOW`` on its last component only.

    Raises:
        OSError: a component is a symlink (``ELOOP``), not a directory (``ENOTDIR``),
            missing (``ENOENT``), would leave the root (``EXDEV``, ``..``), or unreadable.
    """
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\x00" in part:
            raise OSError(errno.EXDEV, f"path component {part!r} is not a plain name")
    root_fd = os.open(root, _O_DIR)
    if not parts:
        return root_fd
    try:
        if use_openat2:
            fd = _openat2(root_fd, "/".join(parts))
            if fd is not None:
                return fd
        fd = root_fd
        try:
            for part in parts:
                nxt = os.open(part, _O_DIR, dir_fd=fd)
                if fd != root_fd:
                    os.close(fd)
                fd = nxt
        except BaseException:
            if fd != root_fd:
                os.close(fd)
            raise
        return fd
    finally:
        os.close(root_fd)


def _openat2(dir_fd: int, path: str) -> int | None:
    """``openat2`` of a directory beneath ``dir_fd``; None when the kernel has no openat2."""
    global use_openat2
    assert _LIBC is not None
    how = _OpenHow(flags=_O_DIR, mode=0,
                   resolve=_RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS)
    for _ in range(8):  # EAGAIN: a rename raced the lookup; the kernel asks to try again
        fd = _LIBC.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            continue
        if err in (errno.ENOSYS, errno.EPERM):
            use_openat2 = False  # not on this kernel (or filtered): walk from now on
            return None
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def private_name(purpose: str) -> str:
    """A fresh name for a file of ours beside an upload (a claim, a temporary copy)."""
    return f".photosentry-{purpose}-{secrets.token_hex(8)}"


def create_exclusive(dir_fd: int, name: str, data: bytes, *, mode: int, owner: tuple[int, int] | None = None) -> int:
    """Create ``name`` in ``dir_fd`` (never an existing file, never through a symlink),
    holding ``data`` and synced; returns its inode number.

    Args:
        owner: (uid, gid) to give it where permitted (a worker running as root keeps
            the upload's owner; otherwise the file is the worker's).
    """
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600,
                 dir_fd=dir_fd)
    try:
        if owner is not None:
            try:
                os.fchown(fd, *owner)
            except PermissionError:
                pass
        os.fchmod(fd, mode & 0o777)  # after fchown; never a set-id bit on a photo
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        return os.fstat(fd).st_ino
    except BaseException:
        os.close(fd)
        fd = -1
        unlink_quietly(dir_fd, name)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def exchange(dir_fd: int, a: str, b: str) -> bool:
    """Swap the entries ``a`` and ``b`` of ``dir_fd`` atomically; False where the system
    cannot (then nothing was done)."""
    return _renameat2(dir_fd, a, b, _RENAME_EXCHANGE)


def rename_noreplace(dir_fd: int, src: str, dst: str) -> bool:
    """Rename ``src`` to ``dst`` in ``dir_fd`` unless ``dst`` exists; False if it does.

    Without ``renameat2`` a regular file or symlink is linked, then unlinked (the link
    fails if ``dst`` exists); a directory is renamed after a check (a window of a few
    microseconds)."""
    try:
        if _renameat2(dir_fd, src, dst, _RENAME_NOREPLACE):
            return True
    except FileExistsError:
        return False
    info = os.stat(src, dir_fd=dir_fd, follow_symlinks=False)
    try:
        if stat.S_ISDIR(info.st_mode):
            try:
                os.stat(dst, dir_fd=dir_fd, follow_symlinks=False)
                return False
            except FileNotFoundError:
                os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                return True
        os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    os.unlink(src, dir_fd=dir_fd)
    return True


def _renameat2(dir_fd: int, src: str, dst: str, flags: int) -> bool:
    if not use_renameat2 or _LIBC is None:
        return False
    done = _LIBC.renameat2(ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(src)), ctypes.c_int(dir_fd),
                           ctypes.c_char_p(os.fsencode(dst)), ctypes.c_uint(flags))
    if done == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False  # this file system (or kernel) has no such rename: the caller falls back
    raise OSError(err, os.strerror(err), dst)
