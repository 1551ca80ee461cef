"""Every exception PhotoSentry raises on purpose lives in photosentry/errors.py under
PhotoSentryError, and the modules whose API names one still export it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from photosentry import errors
from photosentry.review import moderators
from photosentry.worker import delivery, payload, review_queue, sources

PACKAGE = Path(errors.__file__).resolve().parent

#: Exception classes that stay beside their code on purpose (see errors.py's docstring).
ELSEWHERE = {
    # A BaseException, so that no `except Exception` in a scan swallows a job timeout.
    ("worker/scan_worker.py", "ScanJobTimeoutException"),
    # click's exception type: it carries the command's exit status.
    ("cli/root.py", "SetupError"),
    # Private markers that never leave their module.
    ("worker/recovery.py", "_Abandoned"),
    ("hashes/imports.py", "_Bad"),
}


def _exception_classes_outside_errors() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(b).split(".")[-1].endswith(("Error", "Exception", "Refused", "Unavailable"))
                or ast.unparse(b) in errors.__dict__
                for b in node.bases
            ):
                found.add((rel, node.name))
    return found


def test_exception_classes_live_in_errors_py() -> None:
    assert _exception_classes_outside_errors() == ELSEWHERE


def test_every_exception_in_errors_py_is_a_photosentry_error() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, BaseException)]
    assert len(classes) >= 12
    assert all(issubclass(c, errors.PhotoSentryError) for c in classes)


@pytest.mark.parametrize(
    ("module", "name"),
    [(payload, "PayloadError"), (sources, "SourceRefused"), (delivery, "CallbackRefused"),
     (review_queue, "ReviewError"),
     (moderators, "ConfigError")],
)
def test_modules_whose_api_raises_an_error_still_export_it(module: object, name: str) -> None:
    assert getattr(module, name) is getattr(errors, name)


def test_moved_errors_keep_their_old_bases_and_fields() -> None:
    assert issubclass(errors.PayloadError, ValueError) and issubclass(errors.CallbackRefused, ValueError)
    assert issubclass(errors.ConfigError, ValueError)
    refused = errors.SourceRefused("outside the roots")
    assert isinstance(refused, errors.UnreadableImage) and refused.code == sources.SOURCE_REFUSED == "source_refused"
    review = errors.ReviewError("held", "item 3 is being reviewed by bob")
    assert (review.code, review.message, str(review)) == ("held", "item 3 is being reviewed by bob",
                                                          "item 3 is being reviewed by bob")
