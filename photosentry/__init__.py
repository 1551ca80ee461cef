"""PhotoSentry: checks every uploaded photo before anyone else sees it.

The public surface is small on purpose:

- :func:`scan` and :func:`new_scanner`: a verdict on a photo, in this process;
- :func:`enqueue_scan`: for upload pipelines, a scan job for the workers (the worker
  itself is the ``photosentry worker`` command);
- :class:`Verdict`, :class:`Action`, :class:`ReasonCode`: what a scan returns.

Importing the package loads no model and no numpy; each name loads what it needs on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Action", "ReasonCode", "Verdict", "enqueue_scan", "new_scanner", "scan"]

if TYPE_CHECKING:
    from .api import new_scanner, scan
    from .enqueue import enqueue_scan
    from .worker.verdict import Action, ReasonCode, Verdict

_WHERE = {"enqueue_scan": "enqueue", "scan": "api", "new_scanner": "api", "Verdict": "worker.verdict",
          "Action": "worker.verdict", "ReasonCode": "worker.verdict"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'photosentry' has no attribute {name!r}")
