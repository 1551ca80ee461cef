"""Make, measure and verify optimised builds of a classifier.

int8 (CPU): ONNX Runtime's static quantisation, calibrated on real photos. Dynamic
quantisation is measured too, because it is the obvious first try, but on a
convolutional network it quantises activations on every call and is usually far
slower than fp32 on a CPU. Each candidate method is built, timed on one thread and
scored on the calibration photos; the fastest one that keeps every score within the
tolerance of fp32 and flips no allow/quarantine/block decision wins.

bf16 (CPU with native bf16 units, i.e. Intel AMX): OpenVINO compiles the fp32 graph
for this CPU in bfloat16 and the compiled model is exported as the artifact; built
only where OpenVINO is installed and the CPU has native bf16 (see
:mod:`photosentry.models.openvino_runtime`), refused with the reason elsewhere.

fp16 (GPU): weights and activations converted to float16 with float32 inputs and
outputs kept, so callers do not change. It is verified on whatever provider this host
has (CPU here when no GPU is present, which checks the numbers, not the speed).

Verification compares every calibration photo's score with fp32 through the same
preprocessing, so an artifact is judged on what the worker would decide.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .. import defaults
from ..decode import decode, read_limited
from ..errors import ModelUnavailable, UnreadableImage
from .adapter import ClassifierManifest, ManifestClassifier
from .artifacts import RUNTIME_OF, VARIANTS, Artifact, ArtifactStore, fsync_dir
from .manifest import file_sha256, resolve_model_file
from .openvino_runtime import bf16_unavailable, build_bf16
from .openvino_runtime import version as openvino_version
from .session import CPU, ONNXRUNTIME, OPENVINO, open_session

log = logging.getLogger(__name__)

#: Per-label (quarantine, block) pairs; a decision is the band a score falls in.
Thresholds = Sequence[tuple[float | None, float | None]]

INT8_METHODS = ("qdq-minmax", "qdq-percentile", "qoperator-minmax", "qoperator-percentile", "dynamic")
"""Candidates `optimize` builds and measures for int8, by name."""

_SUFFIX = {ONNXRUNTIME: "onnx", OPENVINO: "blob"}
"""Artifact file names: ONNX graphs, or OpenVINO's exported compiled model."""

_QUANT_OPSET = 13
"""Per-channel QuantizeLinear needs opset 13; the published open_nsfw graph is opset 9."""

PERCENTILE = 99.999
"""Percentile calibration clips activation ranges at this percentile: a handful of
extreme activations no longer stretch the int8 scale for everyone else."""


# -- calibration photos ------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSet:
    """Real photos decoded once, with the digest that names the set."""

    files: tuple[tuple[str, str], ...]
    frames: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for sha in sorted(sha for _, sha in self.files):
            h.update(bytes.fromhex(sha))
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        return {"digest": self.digest, "photos": len(self.files), "files": [list(f) for f in self.files]}


def photo_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files under ``paths`` (files or folders, recursively), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"calibration path {str(p)!r} does not exist")
    return sorted(dict.fromkeys(out))


def load_calibration(paths: Sequence[str | Path], *, limit: int | None = None) -> CalibrationSet:
    """Decode the photos under ``paths`` the way the scan does; unreadable files are skipped.

    Raises:
        ValueError: no readable photo was found.
    """
    files, frames = [], []
    for path in photo_files(paths):
        try:
            data = read_limited(path, defaults.MAX_BYTES)
            decoded = decode(data, min_side=defaults.DECODE_MIN_SIDE)
        except UnreadableImage:
            continue
        files.append((str(path), hashlib.sha256(data).hexdigest()))
        frames.append(decoded.frames[0])
        if limit is not None and len(files) >= limit:
            break
    if not files:
        raise ValueError(f"no readable photo under {[str(p) for p in paths]}")
    return CalibrationSet(tuple(files), tuple(frames))


def calibration_from_record(record: dict[str, Any]) -> CalibrationSet:
    """The recorded calibration set, re-read and checked against its digest.

    Raises:
        ValueError: a file is gone or changed, so the recorded drift cannot be re-measured.
    """
    from .autobuild import is_shipped, shipped_calibration

    if is_shipped(record):  # the default build's set: made again from the package's photos
        cal = shipped_calibration()
        if cal.digest != record.get("digest"):
            raise ValueError("the shipped calibration set changed (another PhotoSentry version); pass --calibration")
        return cal
    paths = [f[0] for f in record.get("files", [])]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} calibration photos are gone (first: {missing[0]}); pass --calibration")
    cal = load_calibration(paths)
    if cal.digest != record.get("digest"):
        raise ValueError("the calibration photos changed since the artifact was made; pass --calibration")
    return cal


# -- measuring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One build's scores against fp32 on the calibration photos."""

    drift_max: float
    drift_mean: float
    flips: int
    #: Calibration files whose decision flipped.
    flipped: tuple[str, ...]
    ms_median: float
    tolerance: float

    @property
    def passes(self) -> bool:
        return self.flips == 0 and self.drift_max <= self.tolerance

    def why_refused(self) -> str:
        reasons = []
        if self.drift_max > self.tolerance:
            reasons.append(f"scores drift up to {self.drift_max:.4f} from fp32 (tolerance {self.tolerance})")
        if self.flips:
            reasons.append(f"{self.flips} decision(s) flip (first: {self.flipped[0]})")
        return "; ".join(reasons)


def band(score: float, thresholds: tuple[float | None, float | None]) -> int:
    """0 allow, 1 quarantine, 2 block under one (quarantine, block) pair."""
    quarantine, block = thresholds
    if block is not None and score >= block:
        return 2
    if quarantine is not None and score >= quarantine:
        return 1
    return 0


def score_and_time(
    classifier: ManifestClassifier, path: Path, inputs: np.ndarray, *, providers: Sequence[str] | None, threads: int,
    runtime: str = ONNXRUNTIME,
) -> tuple[np.ndarray, float]:
    """Unsafe scores of each input (one at a time, as a scan runs) and the ms per run
    (lower quartile of the runs)."""
    session = open_session(path, providers=providers, threads=threads, runtime=runtime)
    name = session.get_inputs()[0].name
    session.run(None, {name: inputs[:1]})  # warm-up: arena allocation
    probs, times = [], []
    for i in range(len(inputs)):
        start = time.perf_counter()
        (out,) = session.run(None, {name: inputs[i : i + 1]})
        times.append((time.perf_counter() - start) * 1000.0)
        probs.append(np.asarray(out, dtype=np.float64).reshape(1, -1))
    # A second pass, and the lower quartile: a busy neighbour on a shared host slows
    # some runs and never speeds one up, and candidates are ranked on this number.
    for i in range(min(len(inputs), 16)):
        start = time.perf_counter()
        session.run(None, {name: inputs[i : i + 1]})
        times.append((time.perf_counter() - start) * 1000.0)
    return classifier.unsafe_scores(np.concatenate(probs)), float(np.percentile(times, 25))


def evaluate(
    scores: np.ndarray, reference: np.ndarray, thresholds: Thresholds, files: Sequence[tuple[str, str]],
    ms: float, tolerance: float,
) -> Evaluation:
    drift = np.abs(scores - reference)
    flipped = [
        files[i][0] for i in range(len(scores))
        if any(band(float(scores[i]), t) != band(float(reference[i]), t) for t in thresholds)
    ]
    return Evaluation(float(drift.max()), float(drift.mean()), len(flipped), tuple(flipped), ms, tolerance)


# -- building ------------------------------------------------------------------------------


def _batches(inputs: np.ndarray, name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter({name: inputs[i : i + 1]} for i in range(len(inputs)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return Reader()


def _prepared(source: Path, workdir: Path) -> Path:
    """The fp32 graph at opset 13 with shapes inferred: what the quantiser needs."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _QUANT_OPSET)
    if opset < _QUANT_OPSET:
        model = version_converter.convert_version(model, _QUANT_OPSET)
    converted = workdir / "opset.onnx"
    onnx.save(model, str(converted))
    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
    return prepared


def build_int8(source: Path, dest: Path, method: str, calibration_inputs: np.ndarray, input_name: str) -> str:
    """Quantise ``source`` to ``dest`` with ``method``; returns its description."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in INT8_METHODS:
        raise ValueError(f"unknown int8 method {method!r} (known: {', '.join(INT8_METHODS)})")
    with tempfile.TemporaryDirectory(prefix="photosentry-quant-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx/quantiser chatter about deprecated helpers
        prepared = _prepared(source, Path(tmp))
        if method == "dynamic":
            quantize_dynamic(str(prepared), str(dest), per_channel=True, weight_type=QuantType.QInt8)
            return "dynamic int8, per-channel weights, activations quantised per call"
        fmt_name, calib_name = method.split("-")
        fmt = QuantFormat.QDQ if fmt_name == "qdq" else QuantFormat.QOperator
        calib = CalibrationMethod.Percentile if calib_name == "percentile" else CalibrationMethod.MinMax
        extra = {"CalibPercentile": PERCENTILE} if calib_name == "percentile" else {}
        # The histogram calibrators print their progress; keep stdout for our own report.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared), str(dest), _batches(calibration_inputs, input_name),
                quant_format=fmt, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=calib, extra_options=extra,
            )
    label = "QDQ" if fmt_name == "qdq" else "QOperator"
    ranges = f"percentile {PERCENTILE}" if calib_name == "percentile" else "min-max"
    return f"static int8, {label}, per-channel s8 weights, u8 activations, {ranges} ranges"


def build_fp16(source: Path, dest: Path) -> str:
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every tiny weight it rounds to fp16's range
        model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(dest))
    return "fp16 weights and activations, fp32 inputs and outputs (onnxconverter-common)"


# -- the commands' engine -----------------------------------------------------------------------


@dataclass
class OptimizeReport:
    """What `optimize` did for one variant: the artifact kept (if any) and every candidate."""

    variant: str
    artifact: Artifact | None
    fp32_ms: float
    candidates: list[dict[str, Any]]
    refused: str = ""


def optimize(
    spec: ClassifierManifest,
    store: ArtifactStore,
    calibration: CalibrationSet,
    thresholds: Thresholds,
    *,
    variants: Sequence[str] | None = None,
    methods: Sequence[str] = INT8_METHODS,
    threads: int = 1,
    providers: Sequence[str] | None = None,
    tolerance: float = defaults.MODEL_DRIFT_TOLERANCE,
    calibration_inputs: np.ndarray | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[OptimizeReport]:
    """Build, measure and verify each variant; record the winners in ``store``.

    Args:
        variants: what to build; None: every variant this host can build (bf16 is
            skipped, with a progress line saying why, where it cannot run). A variant
            asked for by name that cannot be built here is reported refused.
        calibration_inputs: model inputs to calibrate int8 ranges on, instead of the
            calibration photos' (tests use it to build a deliberately bad artifact;
            the verdict on the artifact is still measured on the photos).
    """
    source = resolve_model_file(spec.model)
    source_sha = file_sha256(source)
    reference_clf = ManifestClassifier(spec, providers=[CPU], threads=threads)
    inputs = np.stack([reference_clf.preprocess(f) for f in calibration.frames])
    reference, fp32_ms = score_and_time(reference_clf, source, inputs, providers=providers, threads=threads)
    progress(f"fp32: {fp32_ms:.2f} ms per photo on {threads} thread(s), {len(inputs)} calibration photos")
    store.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if variants is None:
        variants = VARIANTS
        if why_not := bf16_unavailable():
            progress(f"bf16: skipped: {why_not}")
            variants = tuple(v for v in VARIANTS if v != "bf16")
    reports = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} ({', '.join(VARIANTS)})")
        if variant == "bf16" and (why_not := bf16_unavailable()):
            store.remove(spec.model.id, variant)
            reports.append(OptimizeReport(variant, None, fp32_ms, [], refused=f"not built on this host: {why_not}"))
            progress(f"bf16: not built: {why_not}")
            continue
        todo = list(methods) if variant == "int8" else [variant]
        runtime = RUNTIME_OF[variant]
        candidates: list[dict[str, Any]] = []
        best: tuple[float, Path, str, Evaluation] | None = None
        for method in todo:
            dest = store.home / f".{spec.model.id}.{variant}.{method}.{_SUFFIX[runtime]}"
            started = time.perf_counter()
            try:
                if variant == "int8":
                    description = build_int8(source, dest, method, inputs if calibration_inputs is None
                                             else calibration_inputs, reference_clf._input)
                elif variant == "bf16":
                    description = build_bf16(source, dest, threads=threads)
                else:
                    description = build_fp16(source, dest)
                scores, ms = score_and_time(reference_clf, dest, inputs, providers=providers, threads=threads,
                                            runtime=runtime)
            except (ModelUnavailable, ValueError, RuntimeError, OSError) as exc:
                candidates.append({"method": method, "error": str(exc)})
                progress(f"{variant} {method}: failed: {exc}")
                dest.unlink(missing_ok=True)
                continue
            ev = evaluate(scores, reference, thresholds, calibration.files, ms, tolerance)
            candidates.append({
                "method": method, "description": description, "ms": round(ms, 3),
                "speedup": round(fp32_ms / ms, 3), "drift_max": round(ev.drift_max, 6),
                "drift_mean": round(ev.drift_mean, 6), "flips": ev.flips, "passes": ev.passes,
                "build_s": round(time.perf_counter() - started, 1),
            })
            progress(f"{variant} {method}: {ms:.2f} ms ({fp32_ms / ms:.2f}x), drift max {ev.drift_max:.4f},"
                     f" {ev.flips} flips{'' if ev.passes else ' - REFUSED: ' + ev.why_refused()}")
            if ev.passes and (best is None or ms < best[0]):
                if best is not None:
                    best[1].unlink(missing_ok=True)
                best = (ms, dest, description, ev)
            else:
                dest.unlink(missing_ok=True)
        if best is None:
            store.remove(spec.model.id, variant)  # an older artifact of this variant is not kept either
            reports.append(OptimizeReport(variant, None, fp32_ms, candidates,
                                          refused="no candidate kept scores within tolerance without flipping a decision"))
            continue
        ms, tmp_path, description, ev = best
        final = store.home / f"{spec.model.id}.{variant}.{_SUFFIX[runtime]}"
        # Durable before it is named: a crash leaves the candidate's temporary name (swept
        # by the next build), never a half-written file under the final one.
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        tmp_path.replace(final)
        fsync_dir(store.home)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        artifact = store.save(Artifact(
            model_id=spec.model.id, variant=variant, file=final.name, sha256=file_sha256(final),
            source_sha256=source_sha, method=description, calibration=calibration.record(),
            drift=drift_record(ev), flips=ev.flips,
            tolerance=tolerance,
            measurements={"fp32_ms": round(fp32_ms, 3), "ms": round(ms, 3), "speedup": round(fp32_ms / ms, 3),
                          "threads": threads, "provider": (list(providers) if providers else [CPU])[0],
                          "candidates": candidates},
            created_at=now, verified_at=now, onnxruntime=ort.__version__,
            openvino=openvino_version() if runtime == OPENVINO else "",
        ))
        reports.append(OptimizeReport(variant, artifact, fp32_ms, candidates))
    return reports


def verify(
    spec: ClassifierManifest,
    artifact: Artifact,
    calibration: CalibrationSet,
    thresholds: Thresholds,
    *,
    threads: int = 1,
    providers: Sequence[str] | None = None,
    tolerance: float = defaults.MODEL_DRIFT_TOLERANCE,
) -> Evaluation:
    """Re-measure ``artifact`` against fp32 on ``calibration``.

    Raises:
        ModelUnavailable: the artifact's file is missing or altered, or it was made from
            another model file than the one installed now.
    """
    source = resolve_model_file(spec.model)
    if file_sha256(source) != artifact.source_sha256:
        raise ModelUnavailable(
            f"artifact {artifact.file} was made from another {spec.model.id} file"
            f" (sha256 {artifact.source_sha256[:12]}...); run `photosentry models optimize` again"
        )
    path = artifact.verified_path()
    clf = ManifestClassifier(spec, providers=[CPU], threads=threads)
    inputs = np.stack([clf.preprocess(f) for f in calibration.frames])
    reference, _ = score_and_time(clf, source, inputs, providers=providers, threads=threads)
    scores, ms = score_and_time(clf, path, inputs, providers=providers, threads=threads, runtime=artifact.runtime)
    return evaluate(scores, reference, thresholds, calibration.files, ms, tolerance)


def drift_record(ev: Evaluation) -> dict[str, float]:
    """An Evaluation's drift as an artifact records it."""
    return {"max": round(ev.drift_max, 6), "mean": round(ev.drift_mean, 6)}
