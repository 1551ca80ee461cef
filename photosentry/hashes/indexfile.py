"""The shared index file: named numpy arrays in one file, written atomically, mapped read-only.

Every process on a host maps the same file, so the pages of a 10-million-entry index
are held once by the page cache instead of once per process, and a process starts by
mapping it instead of building it. The kernels read the mapped arrays in place
(``np.frombuffer`` over the mapping: no copy).

Layout (little-endian)::

    0     header, 128 bytes: magic "PSNTIDX\\0", format, header size, bank version,
          TOC offset and length, payload offset and length, CRC-32 of the TOC, of the
          payload, and of the header bytes before it
    128   table of contents: UTF-8 JSON {"meta": {...}, "arrays": {name: {"offset",
          "dtype", "shape"}}}, offsets relative to the payload
    page  payload: each array on its own 4096-byte boundary (so the vector scans'
          line-sized steps never straddle two lines), zero padding between

Torn and damaged files are never used. A file is written to a temporary name in the
same folder, flushed and fsynced, then renamed over its final name (and the folder
fsynced), so a crash leaves either no file or a whole one. Before use, a reader checks
the magic, format, header CRC, that the file is exactly as long as the header says,
the TOC's CRC, and the payload's CRC (about 5 GB/s: 0.2 s for a 10M-entry index,
which also brings its pages into the cache the first queries would fault in); any
mismatch raises :class:`~photosentry.errors.IndexFileError`. Only plain integer dtypes
are accepted, each array must lie inside the payload, and nothing is unpickled.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFileError

MAGIC = b"PSNTIDX\0"
#: Bump when the layout of the file or of what a reader expects in it changes; a reader
#: refuses other formats (the file is rebuilt, never misread).
FORMAT = 1
_HEADER = struct.Struct("<8sIIQQQQQII")  # magic, format, header size, version, toc off/len, payload off/len, 2 CRCs
HEADER_SIZE = 128
_ALIGN = 4096
#: dtypes a file may hold (no object, no structured types: nothing but plain integers).
_DTYPES = frozenset({"<u8", "<u4", "<u2", "|u1", "<i8", "<i4"})
_CHUNK = 1 << 24


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


@dataclass(frozen=True)
class MappedIndexFile:
    """A verified index file, mapped read-only. The arrays keep the mapping alive: it is
    released (unmapped) when the last of them is, so a process can go on using a file
    that was replaced or deleted under it."""

    path: Path
    version: int
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    size: int

    def array(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise IndexFileError(f"{self.path} has no array {name!r}") from None


def write_index_file(path: str | Path, *, version: int, meta: Mapping[str, Any],
                     arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` and ``meta`` (JSON-able) as the index file ``path``, atomically.

    Raises:
        OSError: the folder cannot be written (the caller keeps its index in memory).
        ValueError: an array of a dtype a file may not hold.
    """
    path = Path(path)
    toc: dict[str, dict[str, Any]] = {}
    at = 0
    plain: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        a = np.ascontiguousarray(array)
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype.str not in _DTYPES:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; an index file holds {sorted(_DTYPES)}")
        plain[name] = a.astype(dtype, copy=False)
        toc[name] = {"offset": at, "dtype": dtype.str, "shape": list(a.shape)}
        at = _align(at + a.nbytes)
    toc_bytes = json.dumps({"meta": dict(meta), "arrays": toc}, sort_keys=True).encode("utf-8")
    payload_offset = _align(HEADER_SIZE + len(toc_bytes))
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".idx", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(b"\0" * HEADER_SIZE)
            out.write(toc_bytes)
            out.write(b"\0" * (payload_offset - HEADER_SIZE - len(toc_bytes)))
            crc, written = 0, 0
            for name, a in plain.items():
                pad = toc[name]["offset"] - written
                if pad:
                    crc = zlib.crc32(b"\0" * pad, crc)
                    out.write(b"\0" * pad)
                    written += pad
                data = memoryview(a.reshape(-1)).cast("B") if a.size else memoryview(b"")
                for i in range(0, len(data), _CHUNK):
                    chunk = data[i : i + _CHUNK]
                    crc = zlib.crc32(chunk, crc)
                    out.write(chunk)
                written += a.nbytes
            header = _HEADER.pack(MAGIC, FORMAT, HEADER_SIZE, version, HEADER_SIZE, len(toc_bytes), payload_offset,
                                  written, zlib.crc32(toc_bytes), crc)
            header += struct.pack("<I", zlib.crc32(header))
            out.seek(0)
            out.write(header.ljust(HEADER_SIZE, b"\0"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder is; a crash before this loses the new
    # file (the old one is still there), never leaves half of one.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_header(path: str | Path) -> tuple[int, int]:
    """(format, bank version) from a file's header, checked but without reading the rest.

    Raises:
        IndexFileError: not an index file, or its header is damaged.
        OSError: it cannot be read.
    """
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
    fields = _check_header(Path(path), raw)
    return fields[1], fields[3]


def read_meta(path: str | Path) -> tuple[int, dict[str, Any]]:
    """(bank version, meta) of a file, its header and table of contents checked but not
    its payload: what a listing needs (``ban stats``, benchmarks), not what a reader may use.

    Raises:
        IndexFileError: not an index file, or its header or table of contents is damaged.
        OSError: it cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as f:
        fields = _check_header(path, f.read(HEADER_SIZE))
        f.seek(fields[4])
        toc_bytes = f.read(fields[5])
    if len(toc_bytes) != fields[5] or zlib.crc32(toc_bytes) != fields[8]:
        raise IndexFileError(f"{path} has a damaged table of contents")
    try:
        return int(fields[3]), dict(json.loads(toc_bytes)["meta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path} has an unreadable table of contents") from exc


def _check_header(path: Path, raw: bytes) -> tuple[Any, ...]:
    if len(raw) < HEADER_SIZE:
        raise IndexFileError(f"{path} is shorter than an index file header")
    fields = _HEADER.unpack_from(raw)
    (stored_crc,) = struct.unpack_from("<I", raw, _HEADER.size)
    if fields[0] != MAGIC:
        raise IndexFileError(f"{path} is not a PhotoSentry index file")
    if zlib.crc32(raw[: _HEADER.size]) != stored_crc:
        raise IndexFileError(f"{path} has a damaged header")
    if fields[1] != FORMAT:
        raise IndexFileError(f"{path} is index format {fields[1]}, this version reads {FORMAT}")
    if fields[2] != HEADER_SIZE:
        raise IndexFileError(f"{path} has a {fields[2]}-byte header")
    return fields


def open_index_file(path: str | Path) -> MappedIndexFile:
    """Map ``path`` read-only after checking all of it (see the module docstring).

    Raises:
        IndexFileError: torn, damaged, another format, or arrays outside the payload.
        OSError: it cannot be opened (e.g. deleted meanwhile).
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
        fields = _check_header(path, raw)
        _, _, _, version, toc_offset, toc_length, payload_offset, payload_length, toc_crc, payload_crc = fields
        size = os.fstat(f.fileno()).st_size
        if size != payload_offset + payload_length or toc_offset + toc_length > payload_offset:
            raise IndexFileError(f"{path} is {size} bytes, its header says {payload_offset + payload_length}: torn")
        f.seek(toc_offset)
        toc_bytes = f.read(toc_length)
        if len(toc_bytes) != toc_length or zlib.crc32(toc_bytes) != toc_crc:
            raise IndexFileError(f"{path} has a damaged table of contents")
        try:
            toc = json.loads(toc_bytes)
            meta, entries = dict(toc["meta"]), dict(toc["arrays"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"{path} has an unreadable table of contents") from exc
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if mapped is None:
        raise IndexFileError(f"{path} is empty")
    with memoryview(mapped) as view:
        crc = 0
        for i in range(payload_offset, size, _CHUNK):
            with view[i : min(i + _CHUNK, size)] as chunk:
                crc = zlib.crc32(chunk, crc)
    if crc != payload_crc:
        mapped.close()
        raise IndexFileError(f"{path} has a damaged payload (checksum mismatch)")
    arrays: dict[str, np.ndarray] = {}
    try:
        for name, entry in entries.items():
            dtype_str, shape, offset = str(entry["dtype"]), tuple(int(s) for s in entry["shape"]), int(entry["offset"])
            if dtype_str not in _DTYPES or any(s < 0 for s in shape) or offset < 0 or offset % 64:
                raise IndexFileError(f"{path}: array {name!r} is not a plain aligned integer array")
            dtype = np.dtype(dtype_str)
            count = int(np.prod(shape, dtype=np.int64))
            if offset + count * dtype.itemsize > payload_length:
                raise IndexFileError(f"{path}: array {name!r} lies outside the payload")
            if count:
                arrays[name] = np.frombuffer(mapped, dtype=dtype, count=count,
                                             offset=payload_offset + offset).reshape(shape)
            else:
                arrays[name] = np.empty(shape, dtype=dtype)
                arrays[name].flags.writeable = False
    except (KeyError, TypeError, ValueError) as exc:
        arrays.clear()
        if isinstance(exc, IndexFileError):
            raise
        raise IndexFileError(f"{path} has an unreadable table of contents") from exc
    # The arrays hold the mapping (their base); nothing else does once this returns.
    return MappedIndexFile(path, int(version), meta, arrays, size)
