"""Optimised model artifacts (int8 or bf16 for CPU hosts, fp16 for GPU hosts) and which
one a host should run.

`photosentry models optimize` writes artifacts into ``<data dir>/models/`` and
records each in ``artifacts.json`` beside them: the source model's sha256, how it was
made, the calibration photos (a digest of their sha256s, and the files), the drift
measured against fp32 on them, the decisions it would flip (must be none), and the
speed measured. A worker runs the best *verified* artifact for its host: fp16 where
CUDA or TensorRT is available; on a CPU-only host the faster (as measured by
`optimize` on this host) of bf16 (OpenVINO, only on CPUs with native bf16) and int8;
else the published fp32 file.
An artifact whose file no longer has its recorded sha256, or that was made from
another model file, is never used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import ModelUnavailable
from .manifest import file_sha256
from .session import CPU, ONNXRUNTIME, OPENVINO

log = logging.getLogger(__name__)

MANIFEST_FILENAME = "artifacts.json"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
VARIANTS = ("int8", "bf16", "fp16")
TARGET_OF = {"int8": "cpu", "bf16": "cpu", "fp16": "gpu"}
RUNTIME_OF = {"int8": ONNXRUNTIME, "bf16": OPENVINO, "fp16": ONNXRUNTIME}


@dataclass(frozen=True)
class Artifact:
    """One optimised model file and the evidence it may stand in for fp32."""

    model_id: str
    #: ``int8``, ``bf16`` or ``fp16``.
    variant: str
    #: File name inside the artifacts folder.
    file: str
    sha256: str
    #: sha256 of the fp32 file it was made from.
    source_sha256: str
    #: How it was made, e.g. ``static int8, QOperator, per-channel, percentile 99.999``.
    method: str
    #: {"digest": sha256 over the photos' sha256s, "photos": n, "files": [[path, sha256], ...]}
    calibration: dict[str, Any]
    #: {"max": .., "mean": ..} of |score - fp32 score| on the calibration photos.
    drift: dict[str, float]
    #: Calibration photos whose allow/quarantine/block decision it changes.
    flips: int
    tolerance: float = defaults.MODEL_DRIFT_TOLERANCE
    #: Measured latency and the other candidates tried (see `models optimize`).
    measurements: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    verified_at: str = ""
    onnxruntime: str = ""
    #: OpenVINO's version, for a bf16 artifact (its blob loads only in that version).
    openvino: str = ""
    #: Folder holding ``file``; not serialised.
    home: Path | None = field(default=None, compare=False)

    @property
    def target(self) -> str:
        return TARGET_OF.get(self.variant, "cpu")

    @property
    def runtime(self) -> str:
        return RUNTIME_OF.get(self.variant, ONNXRUNTIME)

    @property
    def passes(self) -> bool:
        """Whether its recorded evidence lets it replace fp32."""
        return self.flips == 0 and float(self.drift.get("max", 1.0)) <= self.tolerance

    @property
    def path(self) -> Path:
        if self.home is None:
            raise ModelUnavailable(f"artifact {self.model_id}/{self.variant} has no folder")
        return self.home / self.file

    def verified_path(self) -> Path:
        """The file, checked against its recorded sha256.

        Raises:
            ModelUnavailable: the file is missing or altered.
        """
        path = self.path
        if not path.is_file():
            raise ModelUnavailable(f"artifact {self.file!r} is missing from {str(self.home)!r}")
        actual = file_sha256(path)
        if actual != self.sha256:
            raise ModelUnavailable(f"artifact {str(path)!r} has sha256 {actual}, its manifest entry says {self.sha256}")
        return path

    def describe(self) -> str:
        return (f"{self.model_id} {self.variant} ({self.method}; drift max {self.drift.get('max', float('nan')):.4f}"
                f" on {self.calibration.get('photos', 0)} photos, {self.flips} flipped decisions)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("home")
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], home: Path) -> "Artifact":
        known = {f for f in cls.__dataclass_fields__ if f != "home"}
        return cls(**{k: v for k, v in raw.items() if k in known}, home=home)


class ArtifactStore:
    """The artifacts folder of a data directory and its ``artifacts.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.home = Path(data_dir) / defaults.MODELS_DIR_NAME

    @property
    def manifest_path(self) -> Path:
        return self.home / MANIFEST_FILENAME

    def load(self) -> list[Artifact]:
        try:
            raw = json.loads(self.manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"cannot read {str(self.manifest_path)!r}: {exc}") from exc
        return [Artifact.from_dict(entry, self.home) for entry in raw.get("artifacts", [])]

    def find(self, model_id: str, variant: str) -> Artifact | None:
        return next((a for a in self.load() if a.model_id == model_id and a.variant == variant), None)

    def save(self, artifact: Artifact) -> Artifact:
        """Record ``artifact`` (replacing the entry of the same model and variant)."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = [a for a in self.load() if (a.model_id, a.variant) != (artifact.model_id, artifact.variant)]
        self._write([*kept, artifact])
        return replace(artifact, home=self.home)

    def remove(self, model_id: str, variant: str) -> None:
        """Forget an entry and delete its file (a refused artifact must not linger)."""
        entries = self.load()
        for a in entries:
            if (a.model_id, a.variant) == (model_id, variant):
                (self.home / a.file).unlink(missing_ok=True)
        self._write([a for a in entries if (a.model_id, a.variant) != (model_id, variant)])

    def _write(self, entries: Iterable[Artifact]) -> None:
        body = json.dumps({"artifacts": [a.to_dict() for a in entries]}, indent=2, sort_keys=True)
        # Write, fsync, rename, fsync the folder: a worker starting meanwhile never reads
        # half a file, and a crash leaves the old manifest or the new one.
        fd, tmp = tempfile.mkstemp(dir=self.home, prefix=".artifacts-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(body + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.manifest_path)
        fsync_dir(self.home)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Host:
    """What a host can run, as data (so selection is testable without the hardware)."""

    #: Execution providers the session will use, best first (see session.choose_providers).
    providers: tuple[str, ...]
    #: Whether OpenVINO is installed and the CPU has native bf16 (the bf16 artifact runs).
    cpu_bf16: bool = False

    @property
    def gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    @classmethod
    def current(cls, requested: Sequence[str] | None = None) -> "Host":
        from .openvino_runtime import bf16_unavailable
        from .session import choose_providers

        return cls(tuple(choose_providers(requested)), cpu_bf16=bf16_unavailable() is None)


def preferred_variants(host: Host) -> tuple[str, ...]:
    """What this host may run: fp16 on a GPU (tensor cores; int8 there needs TensorRT
    calibration of its own); on a CPU, bf16 where it has native bf16 units (AMX), and
    int8 (VNNI integer dot products)."""
    if host.gpu:
        return ("fp16",)
    return ("bf16", "int8") if host.cpu_bf16 else ("int8",)


def ranked_artifacts(artifacts: Iterable[Artifact], *, model_id: str, source_sha256: str, host: Host,
                     onnxruntime: str | None = None) -> list[Artifact]:
    """The artifacts ``host`` may run for the model whose fp32 file has ``source_sha256``,
    best first: fastest as measured when they were built (on this data directory's
    host), then in preferred_variants order. Only entries whose evidence passes
    qualify; each file's own sha256 is checked when it is opened. With ``onnxruntime``
    (the version installed), only entries verified with that version: another
    runtime may compute an int8 or fp16 graph differently, so it is verified again
    (models/autobuild.py) before it stands in for fp32."""
    order = preferred_variants(host)
    usable = [a for a in artifacts
              if a.model_id == model_id and a.source_sha256 == source_sha256 and a.passes and a.variant in order
              and (onnxruntime is None or not a.onnxruntime or a.onnxruntime == onnxruntime)]
    return sorted(usable, key=lambda a: (float(a.measurements.get("ms") or "inf"), order.index(a.variant)))


def select_artifact(artifacts: Iterable[Artifact], *, model_id: str, source_sha256: str, host: Host) -> Artifact | None:
    """The artifact ``host`` should run, or None for the fp32 file itself (see ranked_artifacts)."""
    ranked = ranked_artifacts(artifacts, model_id=model_id, source_sha256=source_sha256, host=host)
    return ranked[0] if ranked else None


def artifacts_for_host(
    data_dir: Path | None, *, model_id: str, source_sha256: str, providers: Sequence[str] | None = None
) -> list[Artifact]:
    """The verified artifacts this host may load, best first; empty for fp32 (the log says why)."""
    if data_dir is None:
        return []
    import onnxruntime as ort

    host = Host.current(providers)
    try:
        ranked = ranked_artifacts(
            ArtifactStore(data_dir).load(), model_id=model_id, source_sha256=source_sha256, host=host,
            onnxruntime=ort.__version__,
        )
    except ModelUnavailable as exc:
        log.warning("ignoring optimised models: %s; using fp32", exc)
        return []
    if not ranked:
        log.info("no verified %s artifact for %s on this host (%s, onnxruntime %s); using fp32",
                 "/".join(preferred_variants(host)), model_id, host.providers[0] if host.providers else CPU,
                 ort.__version__)
    return ranked
