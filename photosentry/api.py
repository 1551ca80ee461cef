"""The in-process API: scan a photo from Python, with the same defaults as the CLI.

    import photosentry

    verdict = photosentry.scan("upload.jpg", context={"recipient_age": 15})
    if verdict.action is not photosentry.Action.ALLOW:
        ...

Like ``photosentry scan``, it reads the embedded defaults: the shipped policy (or
``$PHOTOSENTRY_POLICY``), the SQLite bank in the data directory, the bundled model
(its best verified build on this host). Loading those takes about a second, so for
more than one photo build a scanner once and pass it, as rembg's ``new_session``::

    scanner = photosentry.new_scanner()
    for path in paths:
        verdict = photosentry.scan(path, scanner=scanner)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .worker.pipeline import Scanner
from .worker.verdict import Verdict


def new_scanner(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    policy_path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    providers: tuple[str, ...] = (),
    second_opinions: tuple[str, ...] = (),
    redis: Any | None = None,
) -> Scanner:
    """A warm scanner for :func:`scan`.

    Args:
        data_dir: the data directory (default: ``$PHOTOSENTRY_HOME`` or
            ``~/.local/share/photosentry``), where the SQLite bank and model builds live.
        policy_path: a policy file; default the shipped one (or ``$PHOTOSENTRY_POLICY``).
        threads: model threads; default every core.
        providers: ONNX Runtime execution providers to prefer.
        second_opinions: more models by name (e.g. ``("nudenet",)``).
        redis: a redis-py client: match against the shared Redis bank instead.

    Raises:
        PolicyError, ModelUnavailable: the policy or a model cannot be loaded.
    """
    from .worker.assembly import ScannerSpec, build_scanner, open_bank_store

    home = os.fspath(data_dir) if data_dir is not None else None
    spec = ScannerSpec(data_dir=home, policy_path=os.fspath(policy_path) if policy_path is not None else None,
                       threads=threads, providers=tuple(providers), second_opinions=tuple(second_opinions))
    return build_scanner(spec, open_bank_store(redis=redis, data_dir_=home))


def scan(source: str | os.PathLike[str] | bytes, *, context: Mapping[str, Any] | None = None,
         scanner: Scanner | None = None) -> Verdict:
    """The verdict on one photo: a file path or its bytes. Never raises for a bad photo:
    an unreadable, hostile or oversized file is a fail-closed verdict with its reason.

    Args:
        context: upload context for the policy's profiles (``{"recipient_age": 15}``).
        scanner: a scanner from :func:`new_scanner`; None builds one for this call.

    Raises:
        ValueError: a context value the policy reads cannot be read (``"fifteen"``).
    """
    scanner = scanner or new_scanner()
    context = dict(context or {})
    unreadable = scanner.policy.read_context(context).unreadable
    if unreadable:
        raise ValueError("context values the policy cannot read: "
                         + "; ".join(f"{key}: {why}" for key, why in sorted(unreadable.items())))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return scanner.scan_bytes(bytes(source), context=context)
    return scanner.scan_path(source, context=context)
