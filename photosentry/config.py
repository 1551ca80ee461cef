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
