"""The ``photosentry`` command line; one module per command group.

Exit status of ``photosentry scan`` (documented in the README):
    0  every photo was allowed
    1  at least one photo was quarantined or blocked
    2  usage error (bad option, missing path)
    3  set-up error (model, policy or bank could not be loaded)
"""

from . import ban, models, quarantine, queue, rescan, retrohunt, review, scan, uploader  # noqa: F401  (registers the subcommands)
from .root import ExitCode, SetupError, cli, main

__all__ = ["ExitCode", "SetupError", "cli", "main"]
