"""Named exceptions, kept in one module so every layer can import them.

Inside the pipeline failures are exceptions; at the edges (a verdict, a CLI exit
status) they become values with stable codes. Each exception that can reach a verdict
carries the reason code it turns into.
"""

from __future__ import annotations


class PhotoSentryError(Exception):
    """Root of every error PhotoSentry raises on purpose."""


class UnreadableImage(PhotoSentryError):
    """The bytes could not be turned into pixels we trust.

    ``code`` is one of the stable reason codes in
    :class:`photosentry.worker.verdict.ReasonCode` (``unreadable``, ``too_large`` ...),
    so the policy can decide on it without parsing the message.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidHash(PhotoSentryError, ValueError):
    """A hash string or value is malformed for its algorithm."""


class BankNotFound(PhotoSentryError, KeyError):
    """A bank or bank entry that was named does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the message.
        return str(self.args[0]) if self.args else ""


class ModelUnavailable(PhotoSentryError):
    """A model file is missing, fails its checksum, or cannot be loaded."""


class PolicyError(PhotoSentryError, ValueError):
    """A policy file is malformed or would break a non-negotiable (e.g. allow on failure)."""


class RegistryError(PhotoSentryError):
    """A registry of an extension point (hash algorithms, signals, models) is inconsistent:
    a programming error, raised when the registry is built (at import)."""
