"""The default optimised build: a fresh data directory gets a verified build of the real
open_nsfw model on the shipped photos, once, without a torn file ever in use.

The mechanics (once per key, the lock, re-verification after a runtime upgrade, a
damaged file, the worker's hand-over, a crash mid-build) are tested on int8 builds
calibrated on the 18 frames of the shipped set that int8 passes on (the photos and
their 2x2 crops, as they are): int8 moves open_nsfw's mid-range scores by up to ~0.1,
past the 0.03 tolerance, so on the whole shipped set it is refused (docs/models.md),
and what the host really gets from the whole set is tested where the host has bf16.
A build with min-max ranges, which drift past the tolerance everywhere, shows a
refused build is recorded and not retried. The real background process is started by
`photosentry scan` and killed mid-build, after which nothing torn is used and the
next build sweeps what it left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from photosentry.cli import cli
from photosentry.models import autobuild
from photosentry.models.adapter import ClassifierManifest
from photosentry.models.artifacts import ArtifactStore
from photosentry.models.loader import load_classifier
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.models.optimize import CalibrationSet, band

from . import corpus as corpus_mod

POLICY_THRESHOLDS = [(0.70, 0.97), (0.30, 0.80)]  # the shipped policy: default and minors


@pytest.fixture(scope="module")
def spec() -> ClassifierManifest:
    return ClassifierManifest.load("open_nsfw")


@pytest.fixture(scope="module")
def int8() -> dict[str, object]:
    """build() arguments for an int8 build on the shipped photos and their plain 2x2 crops."""
    cal = autobuild.shipped_calibration()
    keep = [i for i, (name, _) in enumerate(cal.files)
            if name.endswith("#whole") or ("#crop2x2" in name and "warm" not in name)]
    subset = CalibrationSet(tuple(cal.files[i] for i in keep), tuple(cal.frames[i] for i in keep))
    return dict(variants=("int8",), methods=("qoperator-percentile",), calibration=subset)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, spec: ClassifierManifest, int8: dict[str, object]) -> Path:
    """A data directory with a default-build int8 artifact in it."""
    home = tmp_path_factory.mktemp("home")
    result = autobuild.build(spec, home, POLICY_THRESHOLDS, **int8)
    assert result.outcome == "built", result.detail
    return home


@pytest.fixture
def enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOSENTRY_AUTO_BUILD", "1")


def test_shipped_calibration_is_real_photos_spanning_the_policys_bands(classifier: OpenNsfwClassifier) -> None:
    cal = autobuild.shipped_calibration()
    assert len(cal.files) == 9 * 14 and cal.digest == autobuild.shipped_calibration().digest
    assert all(f.startswith(autobuild.SHIPPED_PREFIX) for f, _ in cal.files)
    assert min(min(f.shape[:2]) for f in cal.frames) >= 80  # crops of real photos, not thumbnails
    scores = [classifier.classify([f]).score for f in cal.frames]
    # Verification must see scores on both sides of the policy's thresholds, not only ~0.
    bands = {band(s, (0.30, 0.80)) for s in scores}
    assert bands == {0, 1, 2}, sorted(scores)[-5:]


def test_build_is_verified_recorded_and_then_current(built: Path, spec: ClassifierManifest,
                                                    int8: dict[str, object]) -> None:
    store = ArtifactStore(built)
    (artifact,) = store.load()
    assert artifact.variant == "int8" and artifact.passes and artifact.flips == 0
    assert autobuild.is_shipped(artifact.calibration) and artifact.calibration["photos"] == 18
    assert artifact.onnxruntime and artifact.verified_path().is_file()
    state = json.loads((store.home / autobuild.STATE_FILENAME).read_text())
    assert state["open_nsfw"]["outcome"] == "built"
    assert state["open_nsfw"]["key"]["source_sha256"] == artifact.source_sha256
    assert autobuild.pending(spec, built, POLICY_THRESHOLDS) is None  # a fresh verified build: nothing to do
    again = autobuild.build(spec, built, POLICY_THRESHOLDS, **int8)
    assert again.outcome == "current"
    assert load_classifier("open_nsfw", data_dir=built, threads=1).variant == "int8"
    # `models verify` re-measures it on shipped frames, re-made from the package (the
    # subset's digest is not the whole set's: it asks for --calibration, refusing nothing).
    result = CliRunner().invoke(cli, ["--data-dir", str(built), "models", "verify"])
    assert "shipped calibration set changed" in result.output, result.output


def test_models_list_and_build_say_what_the_default_build_did(built: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--data-dir", str(built), "models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "default build of open_nsfw: built" in listed.output
    # Nothing to do where a fresh verified build exists...
    again = runner.invoke(cli, ["--data-dir", str(built), "models", "build"])
    assert again.exit_code == 0 and "current:" in again.output, again.output
    # ...and --no-wait says so while another process builds.
    home = tmp_path / "home"
    with autobuild.build_lock(ArtifactStore(home), "open_nsfw", wait=False):
        busy = runner.invoke(cli, ["--data-dir", str(home), "models", "build", "--no-wait"])
    assert busy.exit_code == 1 and "busy" in busy.output, busy.output


def test_the_build_keeps_decisions_on_held_out_photos(built: Path, corpus: corpus_mod.Corpus,
                                                      classifier: OpenNsfwClassifier) -> None:
    from photosentry.decode import decode

    int8 = load_classifier("open_nsfw", data_dir=built, threads=1)
    for path in [corpus.banned, *corpus.clean.values()]:
        frame = decode(path.read_bytes(), min_side=256).frames[0]
        a, b = classifier.classify([frame]).score, int8.classify([frame]).score
        # The build is verified within 0.03 on its calibration frames; on photos it never
        # saw, int8 kernels differ by CPU (measured: 0.037 on an AMD EPYC with AVX2
        # only, under 0.03 on Intel with AVX-512): the decision must hold, the score nearly.
        assert abs(a - b) <= 2 * 0.03, path.name
        assert all(band(a, t) == band(b, t) for t in POLICY_THRESHOLDS), path.name


def test_another_runtime_version_is_verified_again_before_use(built: Path, spec: ClassifierManifest,
                                                             tmp_path: Path, int8: dict[str, object]) -> None:
    home = tmp_path / "home"
    shutil.copytree(built, home)
    store = ArtifactStore(home)
    (artifact,) = store.load()
    store.save(replace(artifact, onnxruntime="1.0.0"))  # as if onnxruntime was upgraded since
    assert load_classifier("open_nsfw", data_dir=home, threads=1).variant == "fp32"
    assert "no verified" in (autobuild.pending(spec, home, POLICY_THRESHOLDS) or "")
    result = autobuild.build(spec, home, POLICY_THRESHOLDS, **int8)
    assert result.outcome == "built", result.detail
    state = json.loads((store.home / autobuild.STATE_FILENAME).read_text())
    assert state["open_nsfw"]["detail"] == "re-verified int8"
    (again,) = store.load()
    assert again.onnxruntime == artifact.onnxruntime and again.sha256 == artifact.sha256  # measured, not rebuilt
    assert load_classifier("open_nsfw", data_dir=home, threads=1).variant == "int8"


def test_a_damaged_build_is_never_loaded_and_is_rebuilt(built: Path, spec: ClassifierManifest,
                                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(built, home)
    (artifact,) = ArtifactStore(home).load()
    path = artifact.verified_path()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a torn file under the final name
    assert load_classifier("open_nsfw", data_dir=home, threads=1).variant == "fp32"
    assert autobuild.pending(spec, home, POLICY_THRESHOLDS) is not None


def test_a_refused_build_is_recorded_and_not_retried(spec: ClassifierManifest, tmp_path: Path,
                                                    int8: dict[str, object]) -> None:
    """On the shipped crops that score mid-range (chelsea's and camera's, up to ~0.8),
    int8 moves scores past the 0.03 tolerance: refused, recorded, fp32 stays."""
    home = tmp_path / "home"
    cal = autobuild.shipped_calibration()
    keep = [i for i, (name, _) in enumerate(cal.files) if "#" in name and name.split(":")[1].split("#")[0]
            in ("chelsea", "camera")]
    borderline = CalibrationSet(tuple(cal.files[i] for i in keep), tuple(cal.frames[i] for i in keep))
    minmax = {**int8, "calibration": borderline}
    refused = autobuild.build(spec, home, POLICY_THRESHOLDS, **minmax)
    assert refused.outcome == "refused", refused.detail
    assert "int8: no candidate kept scores within tolerance" in refused.detail
    assert ArtifactStore(home).load() == []
    started = time.monotonic()
    again = autobuild.build(spec, home, POLICY_THRESHOLDS, **minmax)
    assert again.outcome == "refused" and time.monotonic() - started < 20  # recorded, not rebuilt
    assert load_classifier("open_nsfw", data_dir=home, threads=1).variant == "fp32"


def test_one_builder_per_data_directory(spec: ClassifierManifest, tmp_path: Path, enabled: None,
                                       int8: dict[str, object]) -> None:
    home = tmp_path / "home"
    store = ArtifactStore(home)
    with autobuild.build_lock(store, "open_nsfw", wait=False) as held:
        assert held
        # Another process starting meanwhile builds nothing and says so.
        assert autobuild.build(spec, home, POLICY_THRESHOLDS, wait=False, **int8).outcome == "busy"
        assert autobuild.start_background(home, thresholds=POLICY_THRESHOLDS) is None
        note = autobuild.start_if_pending("open_nsfw", home, POLICY_THRESHOLDS)
        assert note is not None and "another process is building" in note
        proc = subprocess.run([sys.executable, "-m", "photosentry.models.autobuild", "--data-dir", str(home),
                               "--thresholds", json.dumps(POLICY_THRESHOLDS)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and "busy" in proc.stderr, proc.stderr
    assert store.load() == []


def test_a_running_worker_swaps_the_build_in_between_jobs(built: Path, tmp_path: Path, redis_server: str,
                                                         redis_client, enabled: None,  # type: ignore[no-untyped-def]
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest

    from photosentry.worker.service import ScanService, ServiceSettings

    started: list[Path] = []

    def start_background(home: Path, **kw: object) -> subprocess.Popen[bytes]:
        started.append(home)  # the build is played below by copying a finished one in
        proc = subprocess.Popen(["true"])
        proc.wait()
        return proc

    monkeypatch.setattr(autobuild, "start_background", start_background)
    home = tmp_path / "home"
    root = tmp_path / "uploads"
    root.mkdir()
    photo = root / "astronaut.jpg"
    corpus_mod.save_jpeg(corpus_mod.load("astronaut.png").convert("RGB"), photo)
    service = ScanService(ServiceSettings(redis_url=redis_server, data_dir=str(home), threads=1,
                                          source_roots=(str(root),), use_cache=False), client=redis_client)
    assert service.scanner.classifier.variant == "fp32" and started == [home]
    first = service.scan({"upload_id": "u1", "source": {"path": str(photo)}}, job_id="j1").to_dict()
    assert first["scores"][0]["variant"] == "fp32"
    # The background build finishes: its files land in the data directory.
    shutil.copytree(ArtifactStore(built).home, ArtifactStore(home).home, dirs_exist_ok=True)
    deadline = time.monotonic() + 60
    while service._build_watch is not None and service._build_watch._ready is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second = service.scan({"upload_id": "u2", "source": {"path": str(photo)}}, job_id="j2").to_dict()
    assert second["scores"][0]["variant"] == "int8"
    assert abs(second["scores"][0]["score"] - first["scores"][0]["score"]) <= 0.03
    text = generate_latest(service.metrics.registry).decode()
    assert re.search(r'photosentry_model_info\{[^}]*variant="int8"[^}]*\} 1\.0', text)
    assert re.search(r'photosentry_model_info\{[^}]*variant="fp32"[^}]*\} 0\.0', text)


def test_scan_starts_the_build_in_the_background_and_a_crash_leaves_nothing_torn(
    data_dir: Path, corpus: corpus_mod.Corpus, spec: ClassifierManifest, enabled: None, int8: dict[str, object]
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["scan", str(corpus.banned), "--threads", "1"])
    assert result.exit_code == 0, result.output
    match = re.search(r"building it in the background \(pid (\d+)", result.output)
    assert match, result.output
    pid = int(match.group(1))
    time.sleep(0.5)  # into the build: decoding the shipped photos
    os.kill(pid, signal.SIGKILL)  # the builder this test's scan started, killed as a crash would
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # reaped by start_background's thread
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    store = ArtifactStore(data_dir)
    for artifact in store.load():  # whatever it got to record is whole
        assert artifact.passes and artifact.verified_path().is_file()
    assert load_classifier("open_nsfw", data_dir=data_dir, threads=1).variant in ("fp32", "bf16", "int8")
    # The lock died with it; a new build takes it and sweeps what the crash left.
    leftover = store.home / f".{spec.model.id}.int8.qoperator-percentile.onnx"
    leftover.write_bytes(b"half a model")
    result = autobuild.build(spec, data_dir, POLICY_THRESHOLDS, **int8)
    assert result.outcome in ("built", "current"), result.detail
    assert not leftover.exists()
    variant = load_classifier("open_nsfw", data_dir=data_dir, threads=1).variant
    assert variant != "fp32"
    # The next scan uses it and starts nothing.
    again = runner.invoke(cli, ["scan", str(corpus.banned), "--threads", "1", "--json"])
    assert again.exit_code == 0 and "background" not in again.output
    assert json.loads(again.output.strip().splitlines()[-1])["scores"][0]["variant"] == variant


def test_on_the_whole_shipped_set_the_host_gets_what_passes(spec: ClassifierManifest, tmp_path: Path) -> None:
    """What `models build` makes here. bf16 (where the CPU has native bf16 and OpenVINO is
    installed) stays within 0.02 of fp32 on every shipped frame; int8 runs only if it passes."""
    from photosentry.models.openvino_runtime import bf16_unavailable

    if bf16_unavailable():
        pytest.skip(f"bf16: {bf16_unavailable()}")
    result = autobuild.build(spec, tmp_path / "home", POLICY_THRESHOLDS, variants=("bf16",))
    assert result.outcome == "built", result.detail
    (artifact,) = ArtifactStore(tmp_path / "home").load()
    assert artifact.variant == "bf16" and artifact.calibration["photos"] == 126 and artifact.passes
    assert load_classifier("open_nsfw", data_dir=tmp_path / "home", threads=1).variant == "bf16"
