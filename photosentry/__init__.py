"""PhotoSentry: checks every uploaded photo before anyone else sees it.

The public surface is small on purpose: :func:`enqueue_scan` for upload pipelines
(the worker itself is the ``photosentry worker`` command). Importing the package loads
no model and no numpy; ``enqueue_scan`` loads rq and redis on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["enqueue_scan"]

if TYPE_CHECKING:
    from .enqueue import enqueue_scan


def __getattr__(name: str) -> Any:
    if name == "enqueue_scan":
        from .enqueue import enqueue_scan

        return enqueue_scan
    raise AttributeError(f"module 'photosentry' has no attribute {name!r}")
