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


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and reprs.

    >>> redact_url("redis://:s3cret@cache:6379/0")
    'redis://:***@cache:6379/0'
    """
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
