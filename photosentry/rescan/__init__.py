"""Bulk rescans of photos already stored: `photosentry rescan`.

    source (folder walk or manifest, streamed)
      -> driver (bounded window in input order, rate limit, progress, Ctrl-C)
         -> backend: local process pool, or the bulk queue + verdict stream
      -> report (one row per photo, flushed) + checkpoint (next to the report)

Operators rescan what is already stored when a policy changes, a model improves or a
new list of banned hashes arrives. docs/rescan.md is the operator's guide.
"""

from __future__ import annotations

from .checkpoint import Checkpoint
from .source import Item, open_source

__all__ = ["Checkpoint", "Item", "open_source"]
