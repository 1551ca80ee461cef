"""The compiled kernels, kept on disk per host so a process loads them instead of compiling.

Compiling the kernels takes 4-9 s a process (numba and LLVM), longer than loading a
10-million-entry index from a shared file, and a worker pool compiled them once per
process, all at once. numba can cache what it compiled; its own caches go next to the
source (site-packages: read-only installs) or to one global ``NUMBA_CACHE_DIR`` that
would also take any other numba code in the process. So the kernels get a cache of
their own, in a folder the caller names (``<data dir>/bank-index/kernels``):

- The folder is keyed by everything the machine code depends on: the sources of this
  package (numba checks only the stamp of the file holding the function, not of
  ``simd.py`` whose intrinsics it inlines), numba, llvmlite and Python versions, the
  CPU's name and features and whether the vector scans are on. A changed key is a new
  folder, never a stale kernel.
- The first process on a host compiles under a lock file and marks the folder ready;
  the others wait for it and load (about 0.5 s), instead of compiling beside it.
- numba's cache classes are not public API, so all of this is best effort: anything
  unexpected leaves the kernels compiling in memory as before (``cache=False``).

numba stores compiled code with pickle, so whoever can write this folder can run code
in every process that loads it: it lives in the data directory (owner-only, 0700, like
the banks it sits beside) and its folders are created 0700.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

from . import simd

log = logging.getLogger(__name__)

#: The modules whose source the compiled kernels depend on.
_SOURCES = ("kernels.py", "simd.py", "plan.py", "segment.py")

_directory: Path | None = None


def cache_key() -> str:
    """What the kernels' machine code depends on, as 16 hex digits."""
    import llvmlite
    import numba
    from llvmlite import binding

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    try:
        cpu = binding.get_host_cpu_name() + "\0" + binding.get_host_cpu_features().flatten()
    except Exception:  # pragma: no cover - an llvmlite that cannot tell
        cpu = platform.processor() or platform.machine()
    for part in (numba.__version__, llvmlite.__version__, sys.version, str(numba.config.CPU_NAME),
                 str(numba.config.CPU_FEATURES), cpu, str(simd.VECTOR_SCAN)):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def use_kernel_cache(root: str | Path) -> Path | None:
    """Keep this process's compiled kernels in ``root/<cache key>`` (see the module
    docstring). Call it before the first segment is built (kernels compiled before stay
    as they are, uncached); a second call does nothing. Returns the folder, or None
    when the cache is off.
    """
    global _directory
    from . import kernels

    if _directory is not None:
        return _directory
    try:
        from numba.core.caching import (
            CompileResultCacheImpl,
            FunctionCache,
            _CacheLocator,
            _SourceFileBackedLocatorMixin,
        )
        from numba.core.dispatcher import Dispatcher

        folder = Path(root) / cache_key()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = folder.name

        class _Locator(_SourceFileBackedLocatorMixin, _CacheLocator):  # type: ignore[misc]
            def __init__(self, py_func, py_file):  # type: ignore[no-untyped-def]
                self._py_file = py_file
                self._lineno = py_func.__code__.co_firstlineno

            def get_cache_path(self) -> str:
                return str(folder)

            def get_source_stamp(self) -> str:
                return key  # the folder's key covers every source file, not just this one

        class _Impl(CompileResultCacheImpl):  # type: ignore[misc]
            _locator_classes = [_Locator]

        class _Cache(FunctionCache):  # type: ignore[misc]
            _impl_class = _Impl

        for name in dir(kernels):
            dispatcher = getattr(kernels, name)
            if isinstance(dispatcher, Dispatcher):
                dispatcher._cache = _Cache(dispatcher.py_func)
    except Exception as exc:  # noqa: BLE001 - a numba without these classes: compile as before
        log.warning("kernel cache unavailable (%s); compiling in memory", exc)
        return None
    _directory = folder
    return folder


def compile_once(warm_up) -> float:  # type: ignore[no-untyped-def]
    """Run ``warm_up`` (which compiles or loads every kernel); with a cache folder, the
    first process on the host compiles under its lock and marks it ready, the others
    wait, then load."""
    folder = _directory
    if folder is None:
        return float(warm_up())
    ready = folder / "ready"
    if ready.exists():
        return float(warm_up())
    try:
        fd = os.open(folder / "compile.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return float(warm_up())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a compile takes seconds; one at a time, the rest then load
        seconds = float(warm_up())
        if not ready.exists():
            ready.write_text("compiled by pid %d\n" % os.getpid())
        return seconds
    finally:
        os.close(fd)  # releases the lock
