"""The default optimised build: made once per data directory on shipped photos, verified
against fp32, then run. No operator step.

``photosentry models optimize`` needs an operator with calibration photos, and most
never run it, so a fresh install ran fp32 (open_nsfw's model alone is ~2.5x faster in
int8). Here the host builds what it can run (int8 with ONNX Runtime; bf16 with
OpenVINO where the CPU has native bf16 and OpenVINO is installed; fp16 on a GPU host
with onnxconverter-common) with ``optimize``'s own engine, calibrated and verified on
:func:`shipped_calibration`: every score within the drift tolerance of fp32 and no
allow/quarantine/block decision changed under any profile of the policy. A build that
fails is recorded as refused and fp32 stays.

**When.** A process that finds no fresh verified build starts one in the background
(:func:`start_background`: a separate, niced process, so a crash or the quantiser's
memory never touch the scanner) and serves fp32 meanwhile; workers swap the build in
once it is verified (:class:`BuildWatch`); ``photosentry scan`` uses it from its next
run. A build is fresh while its key holds: the fp32 file's sha256, the ONNX Runtime
(and OpenVINO) version, the calibration set and the policy's thresholds. A key change
(an upgrade, another policy) makes the next start build and verify again; a refused
key is not retried until the key changes.

**Concurrency.** One build per data directory and model at a time: an exclusive
``flock`` on ``models/.build-<model>.lock`` (released by the kernel if the builder
dies). Processes that cannot take it do not build; they watch ``artifacts.json``.
Every file is written under a temporary name in the same folder, fsynced and renamed,
then the folder is fsynced; the artifact manifest is replaced the same way, and an
artifact's file is checked against its recorded sha256 before it is loaded. A crash
at any point leaves the old state or the new one, never a torn file in use.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..errors import ModelUnavailable
from .artifacts import Artifact, ArtifactStore, Host, fsync_dir, preferred_variants, ranked_artifacts
from .manifest import file_sha256, resolve_model_file

log = logging.getLogger(__name__)

AUTO_METHODS = ("qdq-percentile", "qoperator-percentile")
"""int8 methods the default build tries: the two that stay within tolerance on open_nsfw
(docs/models.md); min-max ranges drift too far and dynamic quantisation is slower than fp32."""

STATE_FILENAME = "autobuild.json"
LOG_SUFFIX = ".build.log"
SHIPPED_PREFIX = "shipped:"
_GRIDS = (2, 3)  # crops of each photo: a 2x2 and a 3x3 grid of overlapping windows
_WARMTH = (0.0, 0.25, 0.5)  # red up, blue down by this much (green up by a fifth of it): skin-like tones


# -- the calibration set -------------------------------------------------------------------


def shipped_calibration() -> Any:
    """The calibration set a host can always make: the photos shipped in
    ``photosentry/models/calibration`` (public domain and CC0, see its LICENSES.md) and,
    for each, crops on a 2x2 and a 3x3 grid, cycling through warmer tones.

    The photos as they are all score near zero on open_nsfw; the crops and warmer tones
    spread the scores up to ~0.9, so the check that no decision flips covers the policy's
    bands too. Deterministic: the same photos give the same frames and digest.
    """
    from ..decode import decode
    from .optimize import CalibrationSet

    files: list[tuple[str, str]] = []
    frames: list[np.ndarray] = []
    for name, data in _shipped_photos():
        rgb = decode(data, min_side=defaults.DECODE_MIN_SIDE).frames[0]
        for i, (label, variant) in enumerate(_variants(rgb)):
            warm = _WARMTH[i % len(_WARMTH)]
            if warm:
                variant, label = _warmer(variant, warm), f"{label}+warm{warm}"
            variant = np.ascontiguousarray(variant)
            files.append((f"{SHIPPED_PREFIX}{name}#{label}", hashlib.sha256(variant.tobytes()).hexdigest()))
            frames.append(variant)
    return CalibrationSet(tuple(files), tuple(frames))


def is_shipped(record: dict[str, Any]) -> bool:
    """Whether an artifact's calibration record names the shipped set."""
    files = record.get("files") or []
    return bool(files) and all(str(f[0]).startswith(SHIPPED_PREFIX) for f in files)


def _shipped_photos() -> Iterator[tuple[str, bytes]]:
    folder = importlib.resources.files("photosentry.models") / "calibration"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".jpg"):
            yield entry.name.removesuffix(".jpg"), entry.read_bytes()


def _variants(rgb: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    yield "whole", rgb
    h, w = rgb.shape[:2]
    for n in _GRIDS:
        ch, cw = h // n, w // n  # close-ups: the model's scores spread most on these
        for row in range(n):
            for col in range(n):
                top, left = row * (h - ch) // (n - 1), col * (w - cw) // (n - 1)
                yield f"crop{n}x{n}-{row}{col}", rgb[top : top + ch, left : left + cw]


def _warmer(rgb: np.ndarray, amount: float) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[..., 0] *= 1.0 + amount
    out[..., 1] *= 1.0 + amount / 5
    out[..., 2] *= 1.0 - amount
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# -- what to build, and whether it is fresh -----------------------------------------------------


@dataclass(frozen=True)
class BuildKey:
    """What a default build was made and verified for; any change means build again."""

    model_id: str
    source_sha256: str
    onnxruntime: str
    openvino: str
    calibration: str
    thresholds: tuple[tuple[float | None, float | None], ...]
    variants: tuple[str, ...]
    methods: tuple[str, ...] = AUTO_METHODS

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "source_sha256": self.source_sha256, "onnxruntime": self.onnxruntime,
                "openvino": self.openvino, "calibration": self.calibration,
                "thresholds": [list(t) for t in self.thresholds], "variants": list(self.variants),
                "methods": list(self.methods)}


def buildable_variants(host: Host) -> tuple[str, ...]:
    """What this host runs (preferred_variants) that this install can build."""
    have = {m: importlib.util.find_spec(m) is not None for m in ("onnx", "onnxconverter_common")}
    out = []
    for variant in preferred_variants(host):
        if variant == "int8" and have["onnx"]:
            out.append(variant)
        elif variant == "fp16" and have["onnx"] and have["onnxconverter_common"]:
            out.append(variant)
        elif variant == "bf16":  # host.cpu_bf16 already says OpenVINO is installed and the CPU has bf16
            out.append(variant)
    return tuple(out)


def build_key(spec: Any, thresholds: Sequence[tuple[float | None, float | None]], host: Host,
              calibration_digest: str) -> BuildKey:
    import onnxruntime as ort

    from .openvino_runtime import version as openvino_version

    return BuildKey(
        model_id=spec.model.id,
        source_sha256=file_sha256(resolve_model_file(spec.model)),
        onnxruntime=ort.__version__,
        openvino=openvino_version() if host.cpu_bf16 else "",
        calibration=calibration_digest,
        thresholds=tuple((q, b) for q, b in thresholds),
        variants=buildable_variants(host),
    )


def fresh_artifacts(store: ArtifactStore, *, model_id: str, source_sha256: str, host: Host) -> list[Artifact]:
    """Verified artifacts this host may run now, best first: made from this fp32 file,
    verified with the ONNX Runtime installed now (a runtime upgrade may change int8
    kernels), and whose file still has its recorded sha256 (a damaged one is rebuilt)."""
    import onnxruntime as ort

    out = []
    for artifact in ranked_artifacts(store.load(), model_id=model_id, source_sha256=source_sha256, host=host,
                                     onnxruntime=ort.__version__):
        try:
            artifact.verified_path()
        except ModelUnavailable:
            continue
        out.append(artifact)
    return out


class BuildState:
    """``models/autobuild.json``: per model, the last default build's key and outcome."""

    def __init__(self, store: ArtifactStore) -> None:
        self.path = store.home / STATE_FILENAME

    def load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def outcome(self, key: BuildKey) -> dict[str, Any] | None:
        entry = self.load().get(key.model_id)
        return entry if isinstance(entry, dict) and entry.get("key") == key.to_dict() else None

    def record(self, key: BuildKey, outcome: str, detail: str) -> None:
        state = self.load()
        state[key.model_id] = {"key": key.to_dict(), "outcome": outcome, "detail": detail,
                               "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_atomic(self.path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def pending(spec: Any, data_dir: Path, thresholds: Sequence[tuple[float | None, float | None]],
            *, host: Host | None = None) -> str | None:
    """Why a default build should run now, or None: a fresh verified build exists, this
    install can build nothing for the host, or the same key was already refused."""
    host = host or Host.current()
    store = ArtifactStore(data_dir)
    source_sha = file_sha256(resolve_model_file(spec.model))
    try:
        if fresh_artifacts(store, model_id=spec.model.id, source_sha256=source_sha, host=host):
            return None
    except ModelUnavailable:
        pass  # an unreadable manifest: a build rewrites it
    if not buildable_variants(host):
        return None
    key = build_key(spec, thresholds, host, shipped_digest())
    done = BuildState(store).outcome(key)
    if done is not None and done.get("outcome") == "refused":
        return None
    return f"no verified {'/'.join(key.variants)} build of {spec.model.id} for this host and runtime"


def shipped_digest() -> str:
    """Names the shipped set cheaply (its files and the recipe that makes the frames),
    for the build key: no decoding at every process start."""
    h = hashlib.sha256(repr((_GRIDS, _WARMTH, defaults.DECODE_MIN_SIDE)).encode())
    for name, data in _shipped_photos():
        h.update(name.encode() + hashlib.sha256(data).digest())
    return h.hexdigest()


# -- building -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` did: ``built``, ``current`` (nothing to do), ``refused`` or ``busy``."""

    outcome: str
    detail: str
    artifacts: tuple[Artifact, ...] = ()
    seconds: float = 0.0


def build(
    spec: Any,
    data_dir: Path,
    thresholds: Sequence[tuple[float | None, float | None]],
    *,
    threads: int = 1,
    wait: bool = True,
    variants: Sequence[str] | None = None,
    methods: Sequence[str] = AUTO_METHODS,
    calibration: Any | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """Make, verify and record the default build of ``spec`` for this host, once.

    Args:
        thresholds: every (quarantine, block) pair of the policy (Policy.decision_thresholds).
        wait: block while another process holds the build lock (then report what it
            left); False: return ``busy`` at once.
        variants: what to build; None: what this host runs and this install can build.
        methods: the int8 methods to try (the fastest that passes is kept).
        calibration: a CalibrationSet to use instead of :func:`shipped_calibration`.
    """
    from .optimize import optimize

    started = time.monotonic()
    store = ArtifactStore(data_dir)
    store.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    host = Host.current()
    with build_lock(store, spec.model.id, wait=wait) as held:
        if not held:
            return BuildResult("busy", "another process is building")
        _remove_leftovers(store, spec.model.id)
        source_sha = file_sha256(resolve_model_file(spec.model))
        current = fresh_artifacts(store, model_id=spec.model.id, source_sha256=source_sha, host=host)
        if current:
            return BuildResult("current", current[0].describe(), tuple(current), time.monotonic() - started)
        key = build_key(spec, thresholds, host, shipped_digest() if calibration is None else calibration.digest)
        calibration = shipped_calibration() if calibration is None else calibration
        key = replace(key, methods=tuple(methods))
        if variants is not None:
            key = replace(key, variants=tuple(v for v in variants if v in key.variants))
        if not key.variants:
            return BuildResult("refused", "this install can build nothing for this host (pip install onnx)")
        state = BuildState(store)
        done = state.outcome(key)
        if done is not None and done.get("outcome") == "refused":
            return BuildResult("refused", str(done.get("detail", "")))
        reverified = _reverify_stale(spec, store, source_sha, host, thresholds, calibration, threads, progress)
        if reverified:
            state.record(key, "built", f"re-verified {', '.join(a.variant for a in reverified)}")
            return BuildResult("built", reverified[0].describe(), tuple(reverified), time.monotonic() - started)
        progress(f"building {'/'.join(key.variants)} of {spec.model.id} on {len(calibration.files)}"
                 " calibration frames")
        # Best first (bf16 before int8): once one passes, the slower ones would never run.
        reports = []
        for variant in key.variants:
            reports += optimize(spec, store, calibration, thresholds, variants=(variant,), methods=methods,
                                threads=threads, progress=progress)
            if reports[-1].artifact is not None:
                break
        kept = tuple(r.artifact for r in reports if r.artifact is not None)
        if kept:
            detail = "; ".join(a.describe() for a in kept)
            state.record(key, "built", detail)
            return BuildResult("built", detail, kept, time.monotonic() - started)
        detail = "; ".join(f"{r.variant}: {r.refused}" for r in reports) or "nothing built"
        state.record(key, "refused", detail)
        return BuildResult("refused", detail, (), time.monotonic() - started)


def _reverify_stale(spec: Any, store: ArtifactStore, source_sha: str, host: Host,
                    thresholds: Sequence[tuple[float | None, float | None]], shipped: Any, threads: int,
                    progress: Callable[[str], None]) -> list[Artifact]:
    """Artifacts of this fp32 file verified with another ONNX Runtime: measured again
    (on their own calibration photos if those are still there, else the shipped set)
    and kept, with the new runtime recorded, if they still pass."""
    import onnxruntime as ort

    from .optimize import calibration_from_record, drift_record, verify

    kept = []
    for artifact in ranked_artifacts(store.load(), model_id=spec.model.id, source_sha256=source_sha, host=host):
        if artifact.onnxruntime == ort.__version__:
            continue
        try:
            own = None if is_shipped(artifact.calibration) else calibration_from_record(artifact.calibration)
        except ValueError:
            own = None
        cal = own or shipped
        try:
            ev = verify(spec, artifact, cal, thresholds, threads=threads, tolerance=artifact.tolerance)
        except ModelUnavailable as exc:
            progress(f"{artifact.variant}: not re-verified: {exc}")
            continue
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        updated = store.save(replace(artifact, drift=drift_record(ev),
                                     flips=ev.flips, verified_at=now, onnxruntime=ort.__version__,
                                     calibration=cal.record()))
        progress(f"{artifact.variant}: re-verified with onnxruntime {ort.__version__}: "
                 f"{'passes' if ev.passes else 'REFUSED: ' + ev.why_refused()}")
        if ev.passes:
            kept.append(updated)
    return kept


def _remove_leftovers(store: ArtifactStore, model_id: str) -> None:
    """Temporary files a crashed build left (only ever removed under the build lock)."""
    for path in store.home.glob(f".{model_id}.*"):
        with contextlib.suppress(OSError):
            path.unlink()
    for path in store.home.glob(".artifacts-*.json"):
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def build_lock(store: ArtifactStore, model_id: str, *, wait: bool) -> Iterator[bool]:
    """Hold ``models/.build-<model>.lock`` exclusively; yields whether it was taken."""
    store.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(store.home / f".build-{model_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_atomic(path: Path, body: bytes) -> None:
    """Write ``path`` so a reader sees the old file or the new, even across a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# -- in the background ------------------------------------------------------------------------------


def enabled() -> bool:
    """Whether processes may start a default build (``PHOTOSENTRY_AUTO_BUILD=0`` turns it off)."""
    return os.environ.get(defaults.AUTO_BUILD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def start_background(
    data_dir: Path,
    *,
    manifest: str = "open_nsfw",
    model_id: str = "open_nsfw",
    thresholds: Sequence[tuple[float | None, float | None]],
) -> subprocess.Popen[bytes] | None:
    """Start ``python -m photosentry.models.autobuild`` detached (niced, its output in
    ``models/<model>.build.log``) unless another process holds the build lock; returns
    the process, or None when none was started."""
    store = ArtifactStore(data_dir)
    with build_lock(store, model_id, wait=False) as free:
        if not free:
            return None  # someone is building; the watchers will see the result
    logfile = open(store.home / f"{model_id}{LOG_SUFFIX}", "ab")  # noqa: SIM115 - handed to the child
    try:
        cmd = [sys.executable, "-m", "photosentry.models.autobuild", "--data-dir", str(data_dir),
               "--model", manifest, "--thresholds", json.dumps([list(t) for t in thresholds])]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    finally:
        logfile.close()
    # Reaped when it ends, so a long-running worker keeps no zombie; a short-lived `scan`
    # exits first and the builder carries on (its own session), finishing for the next run.
    threading.Thread(target=proc.wait, name="photosentry-build-reaper", daemon=True).start()
    return proc


def start_if_pending(manifest: str | Path, data_dir: Path,
                     thresholds: Sequence[tuple[float | None, float | None]]) -> str | None:
    """Start the default build in the background if one is pending (and allowed);
    returns a line for the log saying what happens, or None when nothing is pending."""
    from .adapter import ClassifierManifest

    if not enabled():
        return None
    spec = ClassifierManifest.load(manifest)
    why = pending(spec, data_dir, thresholds)
    if why is None:
        return None
    proc = start_background(data_dir, manifest=str(manifest), model_id=spec.model.id, thresholds=thresholds)
    if proc is None:
        return f"{why}; another process is building it, fp32 runs until it is verified"
    logfile = ArtifactStore(data_dir).home / f"{spec.model.id}{LOG_SUFFIX}"
    return (f"{why}; building it in the background (pid {proc.pid}; seconds with bf16, minutes for int8;"
            f" log {logfile}), fp32 runs until it is verified")


def watch_default_build(classifier: Any, manifest: str | Path, data_dir: Path,
                        thresholds: Sequence[tuple[float | None, float | None]],
                        reload: Callable[[], Any]) -> "BuildWatch | None":
    """For a long-running process running fp32: start the default build if pending and
    return a watch that hands over the verified build once it appears (None: nothing to wait for)."""
    if getattr(classifier, "variant", "fp32") != "fp32" or not enabled():
        return None
    note = start_if_pending(manifest, data_dir, thresholds)
    if note is None:
        return None
    log.info("model %s: %s", getattr(classifier, "model_id", manifest), note)
    return BuildWatch(reload, data_dir)


class BuildWatch:
    """Waits, off the scanning thread, for a verified build to appear, loads and warms it.

    Args:
        load: returns the classifier the host should run now (``load_classifier`` with
            the builds of the data directory), or raises ModelUnavailable.
        data_dir: whose ``models/artifacts.json`` to watch.
        poll_s: how often to look at the manifest's modification time.
    """

    def __init__(self, load: Callable[[], Any], data_dir: Path, *, poll_s: float = 2.0) -> None:
        self._load = load
        self._manifest = ArtifactStore(data_dir).manifest_path
        self._poll_s = poll_s
        self._ready: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="photosentry-build-watch", daemon=True)
        self._thread.start()

    def take(self) -> Any:
        """The loaded, warmed build once it is ready (once), else None."""
        ready, self._ready = self._ready, None
        return ready

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        seen: float | None = None
        while not self._stop.wait(self._poll_s):
            try:
                mtime = self._manifest.stat().st_mtime
            except OSError:
                continue
            if mtime == seen:
                continue
            seen = mtime
            try:
                clf = self._load()
            except ModelUnavailable as exc:
                log.warning("optimised build not loaded: %s", exc)
                continue
            if getattr(clf, "variant", "fp32") == "fp32":
                continue
            clf.classify([np.zeros((64, 64, 3), dtype=np.uint8)])  # arenas allocated before the first real photo
            self._ready = clf
            return


# -- the background process ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m photosentry.models.autobuild``: the background builder."""
    import argparse

    from .adapter import ClassifierManifest

    parser = argparse.ArgumentParser(description="Build and verify the default optimised model for a data directory.")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--model", default="open_nsfw", help="shipped model id or manifest path")
    parser.add_argument("--thresholds", required=True, help="JSON list of [quarantine, block] pairs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):
        os.nice(10)  # scans on this host come first
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pairs = [tuple(p) for p in json.loads(args.thresholds)]
    spec = ClassifierManifest.load(args.model)
    result = build(spec, args.data_dir, pairs, threads=args.threads, wait=False, progress=log.info)
    log.info("default build of %s: %s (%s) in %.0f s", spec.model.id, result.outcome, result.detail, result.seconds)
    return 0 if result.outcome in ("built", "current", "busy") else 1


if __name__ == "__main__":
    sys.exit(main())
