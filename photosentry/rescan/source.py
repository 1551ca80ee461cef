"""What to rescan: a folder tree, a bucket prefix or a manifest, read as a stream of :class:`Item`.

None is ever loaded whole: a folder is walked one directory at a time, a bucket prefix
is listed one page (1,000 keys) at a time and a manifest is read one line at a time,
so ten million entries cost the memory of one page.

Every item has an *order key* that grows along the input, so a resumed run can say
"everything up to here is done" with one value (the checkpoint's watermark):

- folder: the path's parts relative to the root, walked depth-first with each
  directory's entries sorted by name. That is lexicographic order on the parts, so a
  photo added to the tree after an interruption falls into place instead of shifting
  every later item, as a running count would.
- bucket prefix: the key below the prefix, as one string. S3 lists keys in UTF-8
  byte order, which is the order Python compares strings in, so the listing's order
  is the key order; a resumed run asks S3 to start after the watermark
  (``StartAfter``) instead of listing everything again. (Not split into segments:
  ``a-b`` lists before ``a/b``, and segment tuples would compare the other way.)
- manifest: the line number (blank lines and ``#`` comments are skipped).

A manifest line is either a path (a *key*: relative to the first source root, or
absolute) or an ``s3://bucket/key`` URL, or a JSON object::

    {"path": "2026/11/u-8812.jpg", "upload_id": "u-8812",
     "context": {"recipient_is_minor": true}, "timestamp": "2026-11-02T10:00:00Z"}

``path`` is required; ``timestamp`` (ISO 8601, or Unix seconds) is what ``--since``
compares. A line that cannot be used becomes an item with an ``error``: it is
reported as ``invalid`` and never stops the run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

from ..s3.location import S3Prefix, is_s3_url
from ..worker.payload import PayloadError, check_context, check_upload_id

OrderKey = Union[tuple[str, ...], int]

FOLDER = "folder"
MANIFEST = "manifest"
S3 = "s3"
_COUNT_BLOCK = 1 << 20


@dataclass(frozen=True)
class Item:
    """One entry of the input."""

    key: OrderKey
    #: The path as the report shows it and as it is read or sent to a worker.
    source: str
    #: The upload id from the manifest (None for folders and plain lines).
    upload_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    #: Modification time (folder) or manifest timestamp, Unix seconds; None if unknown.
    timestamp: float | None = None
    #: Why the entry cannot be scanned (an invalid manifest line); None when usable.
    error: str | None = None

    @property
    def key_text(self) -> str | int:
        """The key as the report stores it."""
        return "/".join(self.key) if isinstance(self.key, tuple) else self.key


def parse_time(value: object) -> float:
    """Unix seconds from ISO 8601 text (a date, or a date and time; UTC unless it says
    otherwise) or from a number of seconds.

    Raises:
        ValueError: anything else, naming the value.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a date")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a date")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    raise ValueError(f"{value!r} is not a date")


class FolderSource:
    """Every file under a folder, in order-key order; symlinked folders are not entered."""

    kind = FOLDER

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(root))
        if not self.root.is_dir():
            raise ValueError(f"{str(root)!r} is not a folder")

    @property
    def name(self) -> str:
        return str(self.root)

    def fingerprint(self) -> dict[str, Any]:
        # A live tree changes all the time; the order key copes with that.
        return {"kind": FOLDER, "path": str(self.root)}

    def key_of(self, text: str | int) -> OrderKey:
        return tuple(str(text).split("/"))

    def items(self) -> Iterator[Item]:
        yield from self._walk(self.root, ())

    def count(self) -> int:
        return sum(1 for _ in self._walk(self.root, (), stat=False))

    def _walk(self, folder: Path, parts: tuple[str, ...], *, stat: bool = True) -> Iterator[Item]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            # An unlistable folder is one reported row, not a crash and not silence.
            yield Item(parts or (".",), str(folder), error=f"cannot list folder: {exc.strerror or exc}")
            return
        for entry in entries:
            key = (*parts, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                yield from self._walk(Path(entry.path), key, stat=stat)
                continue
            mtime = None
            if stat:
                try:
                    mtime = entry.stat().st_mtime
                except OSError:
                    mtime = None  # a broken link: read (and reported) like any other entry
            yield Item(key, entry.path, timestamp=mtime)


class S3PrefixSource:
    """Every object under a bucket prefix, listed page by page in key order.

    Zero-byte keys ending in ``/`` are the "folders" consoles create, not photos, and
    are skipped. Any other key is an item, odd ones included: reading it refuses it
    (``source_refused``), so it is reported rather than passed over in silence.

    Args:
        url: ``s3://bucket/prefix/``.
        client: the S3 client (default: one from the standard AWS configuration).
        page_size: keys per list request (S3's most is 1,000).
    """

    kind = S3

    def __init__(self, url: str, *, client: Any = None, page_size: int = 1000) -> None:
        self.root = S3Prefix.parse(url)
        if client is None:
            from ..s3.client import connect

            client = connect()
        self.client = client
        self.page_size = page_size
        #: Set on resume: the listing starts after this order key (the checkpoint's watermark).
        self.start_after: OrderKey | None = None

    @property
    def name(self) -> str:
        return self.root.url

    def fingerprint(self) -> dict[str, Any]:
        # A live bucket changes all the time; the order key copes with that, as for a folder.
        return {"kind": S3, "path": self.root.url}

    def key_of(self, text: str | int) -> OrderKey:
        return (str(text),)

    def items(self) -> Iterator[Item]:
        prefix = self.root.prefix
        args: dict[str, Any] = {"Bucket": self.root.bucket, "Prefix": prefix,
                                "PaginationConfig": {"PageSize": self.page_size}}
        if isinstance(self.start_after, tuple) and self.start_after:
            args["StartAfter"] = prefix + self.start_after[0]
        for entry in self._list(args):
            if _folder_marker(entry):
                continue
            key = entry["Key"]
            modified = entry.get("LastModified")
            yield Item((key[len(prefix):],), f"s3://{self.root.bucket}/{key}",
                       timestamp=modified.timestamp() if modified is not None else None)

    def count(self) -> int:
        """Objects under the prefix (for the progress bar; it lists the prefix once more).

        Raises:
            OSError: the listing failed (the bar then goes without a total).
        """
        from ..errors import StorageUnavailable

        try:
            return sum(1 for entry in self._list({"Bucket": self.root.bucket, "Prefix": self.root.prefix})
                       if not _folder_marker(entry))
        except StorageUnavailable as exc:
            raise OSError(str(exc)) from exc

    def _list(self, args: dict[str, Any]) -> Iterator[dict[str, Any]]:
        from ..s3 import client as s3client

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                yield from page.get("Contents") or ()
        except s3client.s3_errors() as exc:
            # Past botocore's own retries: the run stops with its checkpoint saved, to resume.
            raise s3client.unavailable(f"listing {self.root}", exc) from exc


def _folder_marker(entry: dict[str, Any]) -> bool:
    """A zero-byte key ending in ``/``: a "folder" a console made, not a photo."""
    return str(entry.get("Key", "")).endswith("/") and not entry.get("Size")


class ManifestSource:
    """A file of paths or JSON objects, one per line, read one line at a time."""

    kind = MANIFEST

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(path))
        if not self.path.is_file():
            raise ValueError(f"{str(path)!r} is not a file")

    @property
    def name(self) -> str:
        return str(self.path)

    def fingerprint(self) -> dict[str, Any]:
        info = self.path.stat()
        return {"kind": MANIFEST, "path": str(self.path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}

    def key_of(self, text: str | int) -> OrderKey:
        return int(text)

    def count(self) -> int:
        """Lines in the file, counted in blocks (an estimate for the progress bar)."""
        lines, last = 0, b"\n"
        with self.path.open("rb") as fh:
            while block := fh.read(_COUNT_BLOCK):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (0 if last == b"\n" else 1)

    def items(self) -> Iterator[Item]:
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                item = parse_line(number, raw)
                if item is not None:
                    yield item


def parse_line(number: int, raw: bytes) -> Item | None:
    """The item on one manifest line; None for a blank line or a ``#`` comment."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Item(number, raw.decode("utf-8", "replace").strip(), error="line is not UTF-8")
    if not text or text.startswith("#"):
        return None
    if not text.startswith("{"):
        if "\x00" in text:
            return Item(number, text.replace("\x00", "\\0"), error="path contains a NUL byte")
        return Item(number, text)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return Item(number, text[:200], error=f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Item(number, text[:200], error="a JSON line must be an object")
    path = obj.get("path")
    if not isinstance(path, str) or not path or "\x00" in path:
        return Item(number, text[:200], error="a JSON line needs \"path\": a non-empty string without NUL bytes")
    unknown = set(obj) - {"path", "upload_id", "context", "timestamp"}
    if unknown:
        return Item(number, path, error=f"unknown fields {sorted(unknown)}")
    try:
        upload_id = check_upload_id(obj["upload_id"]) if obj.get("upload_id") is not None else None
        context = obj.get("context") or {}
        check_context(context)
        timestamp = parse_time(obj["timestamp"]) if obj.get("timestamp") is not None else None
    except (PayloadError, ValueError) as exc:
        return Item(number, path, upload_id=obj.get("upload_id") if isinstance(obj.get("upload_id"), str) else None,
                    error=str(exc))
    return Item(number, path, upload_id=upload_id, context=dict(context), timestamp=timestamp)


def open_source(source: str | os.PathLike[str], *,
                s3_client: Any = None) -> FolderSource | ManifestSource | S3PrefixSource:
    """A folder, a bucket prefix (``s3://bucket/prefix/``) or a manifest, by what ``source`` is.

    Raises:
        ValueError: it is none of them.
    """
    if is_s3_url(source):
        return S3PrefixSource(str(source), client=s3_client)
    if os.path.isdir(source):
        return FolderSource(source)
    if os.path.isfile(source):
        return ManifestSource(source)
    raise ValueError(f"{os.fspath(source)!r} is neither a folder nor a manifest file")


def resolve_entry(path: str, roots: Sequence[str]) -> str:
    """Where a manifest path points: an ``s3://`` URL or an absolute path as given, a
    relative path from the first folder root.

    With no folder roots a relative path is left as it is (a worker takes it from its
    own first source root).
    """
    folders = [r for r in roots if not is_s3_url(r)]
    if is_s3_url(path) or os.path.isabs(path) or not folders:
        return path
    return os.path.join(folders[0], path)
