"""``s3://bucket/key`` URLs: parsed strictly, and confined to configured roots.

A job payload is untrusted (anyone who can write to the queue writes it), so an S3
source is held to the same rules as a path (docs/storage.md):

- the URL is exactly ``s3://`` + a bucket + ``/`` + a key. Nothing is decoded: the key
  is the rest of the URL, byte for byte, as the AWS CLI reads it;
- the bucket follows S3's naming rules (3-63 of ``a-z 0-9 . -``, starting and ending
  with a letter or digit, not an IP address). That also refuses access-point and
  Object Lambda ARNs, which boto3 would otherwise follow to another account;
- the key is at most 1024 bytes of UTF-8, printable (no control or invisible
  formatting characters), without a backslash, without empty segments (``a//b``, a
  leading or trailing ``/``) and without ``.`` or ``..`` segments, even ones a server
  would leave alone: there is no honest reason to send one;
- it lies under a root: the root's segments are a proper prefix of the key's
  segments. A root is always a "folder": ``s3://uploads/a`` and ``s3://uploads/a/``
  both admit ``a/x.jpg`` and never ``ab/x.jpg``; ``s3://uploads/`` admits the whole
  bucket.

Keys are compared as the exact strings S3 stores (segment by segment); they are never
Unicode-normalised, which would name another object.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

SCHEME = "s3://"
"""The only scheme an object source may have."""

MAX_KEY_BYTES = 1024
"""S3's own limit on a key's length (UTF-8 bytes)."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def is_s3_url(text: object) -> bool:
    """True for a string meant as an S3 URL (it may still be refused by :meth:`S3Location.parse`)."""
    return isinstance(text, str) and text[:5].lower() == SCHEME


def check_bucket(name: object) -> str:
    """``name`` if it is a valid S3 bucket name.

    Raises:
        ValueError: naming the value and the rule it breaks.
    """
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        raise ValueError(f"bucket {name!r} is not a valid S3 bucket name (3-63 characters of a-z, 0-9, '.', '-',"
                         " starting and ending with a letter or digit)")
    if ".." in name or ".-" in name or "-." in name:
        raise ValueError(f"bucket {name!r} is not a valid S3 bucket name (dots next to dots or hyphens)")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise ValueError(f"bucket {name!r} is an IP address, not a bucket name")


def check_key(key: object, *, what: str = "key") -> tuple[str, ...]:
    """The segments of ``key`` if it is a key PhotoSentry will read or write.

    Raises:
        ValueError: naming the value and what is odd about it.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what} must be a non-empty string, got {key!r}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} {key!r} is not valid UTF-8 (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"{what} is {size} bytes of UTF-8; S3 allows {MAX_KEY_BYTES}")
    if not key.isprintable():
        # Control characters, and invisible formatting such as a right-to-left override
        # that would make a moderator read another name than the one acted on.
        raise ValueError(f"{what} {key!r} contains control or invisible formatting characters")
    if "\\" in key:
        raise ValueError(f"{what} {key!r} contains a backslash")
    parts = tuple(key.split("/"))
    if "" in parts:
        raise ValueError(f"{what} {key!r} has an empty segment (a leading, trailing or doubled '/')")
    if "." in parts or ".." in parts:
        raise ValueError(f"{what} {key!r} has a '.' or '..' segment")
    return parts


MAX_VERSION_ID_LEN = 1024
"""The longest version id a job may name (S3's are 32 characters; other servers use UUIDs)."""

_VERSION_ID = re.compile(r"[!-~]+")  # printable ASCII, no space


def check_version_id(value: object) -> str:
    """``value`` if it can be an object's version id (sent as a query parameter, never
    interpreted): printable ASCII without spaces, at most :data:`MAX_VERSION_ID_LEN`.
    ``"null"`` (an object written while the bucket was not versioned) is one.

    Raises:
        ValueError: naming the value.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_VERSION_ID_LEN or not _VERSION_ID.fullmatch(value):
        raise ValueError(f"version id {str(value)[:100]!r} is not 1-{MAX_VERSION_ID_LEN} printable ASCII characters"
                         " without spaces")
    return value


@dataclass(frozen=True, order=True)
class S3Location:
    """One object: a bucket and a key, both checked."""

    bucket: str
    key: str

    def __post_init__(self) -> None:
        check_bucket(self.bucket)
        check_key(self.key)

    @classmethod
    def parse(cls, url: object) -> "S3Location":
        """``s3://bucket/key`` as a location.

        Raises:
            ValueError: not such a URL, an invalid bucket, or an odd key (the message says which).
        """
        if not isinstance(url, str) or not url.startswith(SCHEME):
            raise ValueError(f"{url!r} is not an s3://bucket/key URL")
        bucket, sep, key = url[len(SCHEME):].partition("/")
        if not sep or not key:
            raise ValueError(f"{url!r} names no key (s3://bucket/key)")
        return cls(check_bucket(bucket), key)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("/"))

    @property
    def name(self) -> str:
        """The last segment of the key (what a file would be called)."""
        return self.parts[-1]

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class S3Prefix:
    """A "folder" in a bucket: a source root, a store or a rescan's input."""

    bucket: str
    #: The segments of the prefix; () for the whole bucket.
    parts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, url: object) -> "S3Prefix":
        """``s3://bucket/``, ``s3://bucket/a/b`` or ``s3://bucket/a/b/`` (the same folder).

        Raises:
            ValueError: not an s3:// URL, an invalid bucket, or an odd prefix.
        """
        if not isinstance(url, str) or not url.startswith(SCHEME):
            raise ValueError(f"{url!r} is not an s3://bucket/prefix/ URL")
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        check_bucket(bucket)
        if not prefix:
            return cls(bucket)
        return cls(bucket, check_key(prefix[:-1] if prefix.endswith("/") else prefix, what="prefix"))

    @property
    def prefix(self) -> str:
        """The key prefix, ending in ``/`` (``""`` for the whole bucket)."""
        return "".join(f"{p}/" for p in self.parts)

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"

    def __str__(self) -> str:
        return self.url

    def contains(self, location: S3Location) -> bool:
        """True if ``location`` lies under this folder (compared segment by segment)."""
        parts = location.parts
        return (location.bucket == self.bucket and len(parts) > len(self.parts)
                and parts[:len(self.parts)] == self.parts)

    def overlaps(self, other: "S3Prefix") -> bool:
        """True if one folder lies inside the other (or they are the same)."""
        if self.bucket != other.bucket:
            return False
        n = min(len(self.parts), len(other.parts))
        return self.parts[:n] == other.parts[:n]

    def child(self, relative: str) -> "S3Prefix":
        """The folder ``relative`` (one or more segments) inside this one."""
        return S3Prefix(self.bucket, self.parts + check_key(relative.strip("/"), what="prefix"))

    def object(self, relative: str) -> S3Location:
        """The object at ``relative`` inside this folder."""
        return S3Location(self.bucket, self.prefix + relative)

    def relative(self, location: S3Location) -> str:
        """The key of ``location`` below this folder (it must lie in it)."""
        if not self.contains(location):
            raise ValueError(f"{location} is not inside {self}")
        return "/".join(location.parts[len(self.parts):])


def split_roots(text: str) -> list[str]:
    """Split a ``PHOTOSENTRY_SOURCE_ROOTS``-style list on ``os.pathsep`` (``:``), keeping
    ``s3://...`` URLs whole (their own ``:`` is not a separator)."""
    if os.pathsep != ":":
        return [p for p in text.split(os.pathsep) if p]
    out: list[str] = []
    pieces = text.split(":")
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if piece.lower() == "s3" and i + 1 < len(pieces) and pieces[i + 1].startswith("//"):
            out.append(f"{piece}:{pieces[i + 1]}")
            i += 2
            continue
        if piece:
            out.append(piece)
        i += 1
    return out
