"""Named exceptions, kept in one module so every layer can import them.

Inside the pipeline failures are exceptions; at the edges (a verdict, a CLI exit
status) they become values with stable codes. Each exception that can reach a verdict
carries the reason code it turns into. Every one is a :class:`PhotoSentryError`, so a
caller can tell ours from a library's; the modules whose API raises one also export it
(``worker.jobs.PayloadError``, ``review.queue.ReviewError`` ...).

Not here, on purpose: ``worker.main.ScanJobTimeoutException`` is a ``BaseException``
so that no ``except Exception`` in a scan can swallow a job timeout; the CLI's
``SetupError`` is a ``click.ClickException`` carrying its exit status.
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


class SourceRefused(UnreadableImage):
    """A job's source was refused by confinement; nothing was read."""

    #: Its reason code (``ReasonCode.SOURCE_REFUSED``).
    CODE = "source_refused"

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class StorageUnavailable(PhotoSentryError):
    """An object store (S3) request failed in a way that may pass: a timeout, a dropped
    connection, throttling, a 5xx answer. Transient: the job raises it and is retried;
    after its retries it ends quarantined ``scan_failed`` like any job that keeps failing.
    A missing object or a refused one is not this: it is a :class:`SourceRefused`."""


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


class PayloadError(PhotoSentryError, ValueError):
    """A job payload that can never be scanned (no usable upload_id, wrong version...).

    Permanent: the job is not retried. When the upload id is usable the worker still
    records a fail-closed verdict for it.
    """


class CallbackRefused(PhotoSentryError, ValueError):
    """A callback URL the policy does not allow; the message says why (never the query)."""


class ReviewError(PhotoSentryError):
    """A decision or claim that cannot be made; ``code`` says why (held, missing, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConfigError(PhotoSentryError, ValueError):
    """The moderators' config file is unusable; the message says where."""


class RegistryError(PhotoSentryError):
    """A registry of an extension point (hash algorithms, signals, models) is inconsistent:
    a programming error, raised when the registry is built (at import)."""


class VideoUnreadable(PhotoSentryError):
    """A video inside a photo (a motion photo's clip) could not be opened or gave no
    frame; ``str(exc)`` says why. Its trailing part is then reported unscanned."""


class JobRefused(PhotoSentryError):
    """A queued job a worker will not run as written (not JSON, not our function, or
    behaviour fields in its hash that are not ours); its upload still gets a verdict."""


class IndexFileError(PhotoSentryError, ValueError):
    """A shared index file that must not be used: torn, damaged, of another format or
    another store. The matcher refuses it and builds a good one (or keeps its own)."""
