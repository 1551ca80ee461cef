"""Building a warm scanner and the bank store it reads: one assembly for every caller.

A queue worker, ``photosentry scan``, ``rescan --local``, the in-process
:func:`photosentry.scan` and the benchmarks all need the same thing: the policy, the
host's best verified build of the classifier, the second opinions asked for, the bank
store (Redis when a client is given, else the embedded SQLite file of the data
directory) with the host's shared index of it (mapped from one file every process on
the host shares, ``hashes/hostindex.py``), and a first synthetic photo through every
stage. Built here once, so the five cannot drift apart.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults
from ..config import data_dir, ensure_private_dir
from ..hashes.banks import BankStore, open_store
from ..models.registry import DEFAULT_CLASSIFIER, second_opinions
from .pipeline import Scanner
from .policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScannerSpec:
    """What a warm scanner is built from (plain values: it crosses to spawned processes)."""

    data_dir: str | None = None
    #: A policy file; None: the shipped policy (or ``$PHOTOSENTRY_POLICY``).
    policy_path: str | None = None
    #: Model threads; None: ONNX Runtime's default (every core).
    threads: int | None = None
    providers: tuple[str, ...] = ()
    #: A model registry name or a manifest file (``scan --model-manifest``).
    classifier: str = DEFAULT_CLASSIFIER
    #: Second opinions by registry name; None: those named in ``$PHOTOSENTRY_SECOND_MODELS``.
    second_opinions: tuple[str, ...] | None = None
    #: False runs the published fp32 model even where a verified build exists.
    use_artifacts: bool = True

    def opinions(self) -> tuple[str, ...]:
        if self.second_opinions is not None:
            return self.second_opinions
        return tuple(n for n in os.environ.get(defaults.SECOND_MODELS_ENV, "").split(",") if n)


def open_bank_store(*, redis: Any | None = None, data_dir_: str | None = None, prefix: str | None = None) -> BankStore:
    """The shared Redis bank when ``redis`` is given, else the data directory's SQLite bank."""
    if redis is not None:
        return open_store(redis=redis, prefix=prefix)
    return open_store(sqlite=ensure_private_dir(data_dir(data_dir_)) / defaults.BANK_DB_FILENAME)


def shared_index_dir(home: Path) -> Path | None:
    """Where the host's shared bank index lives (``<data dir>/bank-index``), or None when
    ``PHOTOSENTRY_SHARED_INDEX=0`` asks for a private index per process."""
    if os.environ.get(defaults.SHARED_INDEX_ENV, "").strip() == "0":
        return None
    return home / defaults.SHARED_INDEX_DIRNAME


def build_scanner(spec: ScannerSpec, store: BankStore, *, policy: Policy | None = None, warm: bool = True,
                  notice: Any = None, start_build: bool = True) -> Scanner:
    """A scanner ready for its first photo.

    Args:
        store: the banks to match against, through the host's shared index of it (a
            file every process maps, built once per host; ``PHOTOSENTRY_SHARED_INDEX=0``:
            a private index built from the host's snapshot).
        policy: an already loaded policy; None loads ``spec.policy_path`` (or the default).
        warm: run one synthetic photo through every stage first, so the first real
            photo's timings are honest.
        notice: where second opinions' licence notices and the model build's news go
            (default: the log).
        start_build: when no verified build of the classifier exists for this host yet,
            start the default build in the background (``models/autobuild.py``), for the
            next run; a long-running process uses :func:`watch_build` instead.

    Raises:
        PolicyError, ModelUnavailable: the policy or a model cannot be loaded.
    """
    from ..hashes.matcher import BankMatcher
    from ..hashes.snapshot import snapshot_dir

    policy = policy or (Policy.from_file(spec.policy_path) if spec.policy_path else Policy.default())
    home = data_dir(spec.data_dir)
    providers = list(spec.providers) or None
    # The best verified build for this host (int8/bf16 on CPU, fp16 on GPU), else fp32.
    classifier = _load(spec)
    if start_build and spec.use_artifacts and classifier.variant == "fp32":
        from ..models.autobuild import start_if_pending

        note = start_if_pending(spec.classifier, ensure_private_dir(home), policy.decision_thresholds(classifier.model_id))
        if note:
            (notice or log.info)(f"{classifier.model_id}: {note}")
    second = []
    for opinion in second_opinions(spec.opinions()):
        (notice or log.warning)(opinion.notice())
        second.append(opinion.build(threads=spec.threads, providers=providers))
    matcher = BankMatcher(store, snapshot_dir=snapshot_dir(ensure_private_dir(home), store),
                          index_dir=shared_index_dir(home))
    scanner = Scanner(policy=policy, matcher=matcher, classifier=classifier, second_opinions=second)
    if warm:
        scanner.warm_up()
    return scanner


def watch_build(scanner: Scanner, spec: ScannerSpec) -> Any:
    """For a long-running process whose scanner runs fp32 because no verified build exists
    yet: start the default build in the background and return a watch whose ``take()``
    hands over the verified classifier once it is ready (None: nothing to wait for)."""
    from ..models.autobuild import watch_default_build

    if not spec.use_artifacts or scanner.classifier is None:
        return None
    return watch_default_build(scanner.classifier, spec.classifier, ensure_private_dir(data_dir(spec.data_dir)),
                               scanner.policy.decision_thresholds(scanner.classifier.model_id), lambda: _load(spec))


def _load(spec: ScannerSpec) -> Any:
    """The best verified build of the classifier for this host (int8/bf16 on CPU, fp16 on
    GPU), else fp32."""
    from ..models.loader import load_classifier

    return load_classifier(spec.classifier, data_dir=data_dir(spec.data_dir), threads=spec.threads,
                           providers=list(spec.providers) or None, use_artifacts=spec.use_artifacts)
