"""Functions a hostile producer names in a job hash (callbacks): each leaves a mark if called.

The marks go to a file named by $PHOTOSENTRY_TEST_EVIL_MARKS, so a test sees a call
made in its own process or in a worker process it started.
"""

from __future__ import annotations

import os
from typing import Any

MARKS_ENV = "PHOTOSENTRY_TEST_EVIL_MARKS"


def mark(*args: Any, **kwargs: Any) -> None:
    path = os.environ.get(MARKS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("called\n")
