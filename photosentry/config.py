"""Where PhotoSentry keeps its data, resolved once at the edge."""

from __future__ import annotations

import os
from pathlib import Path

from . import defaults


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit``, else $PHOTOSENTRY_HOME, else $XDG_DATA_HOME/photosentry."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(defaults.DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / defaults.DATA_DIR_NAME


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` owner-only (0700): it holds ban lists and, later, quarantined photos."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pass", "token", "key", "secret"})


def redact_url(url: str) -> str:
    """``url`` with any password (in the netloc or a ``?password=`` parameter, which
    redis-py also reads) replaced by ``***``, for logs and reprs.

    >>> redact_url("redis://:s3cret@cache:6379/0")
    'redis://:***@cache:6379/0'
    >>> redact_url("redis://cache:6379/0?password=s3cret")
    'redis://cache:6379/0?password=***'
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if port is not None:
            host = f"{host}:{port}"
        parts = parts._replace(netloc=f"{user}:***@{host}")
    out = urlunsplit(parts) if parts.password is not None else url
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
            # Rebuild the query only (urlunsplit would also turn unix:///x into unix:/x).
            query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
            head, _, rest = out.partition("?")
            fragment = rest.partition("#")[2]
            out = f"{head}?{query}" + (f"#{fragment}" if fragment else "")
    return out
