"""Optimised artifacts: built from the real model on real photos, verified, refused when
they drift, and chosen per host.

One int8 artifact (the method `optimize` keeps on x86: QOperator, percentile ranges)
and one fp16 artifact are built once per session on a few corpus photos; `optimize`
on an operator's machine tries every method on many more.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from photosentry.cli import cli
from photosentry.errors import ModelUnavailable
from photosentry.models.adapter import ClassifierManifest
from photosentry.models.artifacts import Artifact, ArtifactStore, Host, select_artifact
from photosentry.models.manifest import OPEN_NSFW, file_sha256, resolve_model_file
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.models.optimize import (
    CalibrationSet,
    band,
    build_int8,
    load_calibration,
    optimize,
    score_and_time,
    verify,
)

from . import corpus as corpus_mod

POLICY_THRESHOLDS = [(0.70, 0.97), (0.30, 0.80)]  # the shipped policy: default and minors
CPU_HOST = Host(("CPUExecutionProvider",))
CUDA_HOST = Host(("CUDAExecutionProvider", "CPUExecutionProvider"))
TRT_HOST = Host(("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))


@pytest.fixture(scope="session")
def spec() -> ClassifierManifest:
    return ClassifierManifest.load("open_nsfw")


@pytest.fixture(scope="session")
def calibration(corpus: corpus_mod.Corpus) -> CalibrationSet:
    return load_calibration([corpus.root / "clean", corpus.banned])


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, spec: ClassifierManifest, calibration: CalibrationSet) -> ArtifactStore:
    store = ArtifactStore(tmp_path_factory.mktemp("home"))
    reports = optimize(spec, store, calibration, POLICY_THRESHOLDS, variants=("int8", "fp16"),
                       methods=("qoperator-percentile",))
    refused = {r.variant: r.refused for r in reports if r.artifact is None}
    if "int8" in refused:
        # int8 kernels differ by CPU: on an AVX2-only AMD EPYC this build drifts 0.045 on
        # retina.jpg (no decision flips), on Intel hosts with AVX-512 under 0.03. Refusing
        # it is the product working (it keeps fp32 there); these tests need a kept one.
        pytest.skip(f"this CPU's int8 build is refused on the corpus photos: {refused['int8']}")
    assert [r.variant for r in reports if r.artifact is not None] == ["int8", "fp16"], [r.refused for r in reports]
    return store


def test_optimize_records_the_evidence(built: ArtifactStore, calibration: CalibrationSet) -> None:
    raw = json.loads(built.manifest_path.read_text())
    assert {e["variant"] for e in raw["artifacts"]} == {"int8", "fp16"}
    source_sha = file_sha256(resolve_model_file(OPEN_NSFW))
    for a in built.load():
        assert a.source_sha256 == source_sha
        assert a.sha256 == file_sha256(a.path)
        assert a.calibration["digest"] == calibration.digest
        assert a.calibration["photos"] == len(calibration.files) >= 8
        assert 0 <= a.drift["max"] <= 0.03 and a.flips == 0 and a.passes
        assert a.measurements["fp32_ms"] > 0 and a.measurements["candidates"]
    int8 = built.find("open_nsfw", "int8")
    assert int8 is not None and "QOperator" in int8.method


def test_int8_artifact_keeps_every_decision(built: ArtifactStore, corpus: corpus_mod.Corpus,
                                           classifier: OpenNsfwClassifier) -> None:
    from photosentry.decode import decode

    int8 = OpenNsfwClassifier(artifact=built.find("open_nsfw", "int8"), threads=1)
    assert int8.variant == "int8" and int8.path.name == "open_nsfw.int8.onnx"
    for name, path in {**corpus.clean, **corpus.copies}.items():
        frames = decode(path.read_bytes(), min_side=512).frames
        a, b = classifier.classify(frames), int8.classify(frames)
        assert b.variant == "int8" and b.to_dict()["variant"] == "int8"
        assert abs(a.score - b.score) <= 0.03, name
        assert all(band(a.score, t) == band(b.score, t) for t in POLICY_THRESHOLDS), name


def test_selection_follows_the_host(built: ArtifactStore) -> None:
    artifacts = built.load()
    sha = file_sha256(resolve_model_file(OPEN_NSFW))
    pick = lambda host, arts=artifacts, s=sha: select_artifact(arts, model_id="open_nsfw", source_sha256=s, host=host)  # noqa: E731
    assert pick(CPU_HOST).variant == "int8"
    assert pick(CUDA_HOST).variant == "fp16"
    assert pick(TRT_HOST).variant == "fp16"
    # Made from another model file: never used.
    assert pick(CPU_HOST, s="0" * 64) is None
    # A GPU host without a verified fp16 runs fp32, not the CPU's int8.
    assert pick(CUDA_HOST, [a for a in artifacts if a.variant == "int8"]) is None
    # An entry whose evidence fails is never picked.
    failing = [replace(a, drift={"max": 0.05, "mean": 0.01}) for a in artifacts]
    assert pick(CPU_HOST, failing) is None
    flipping = [replace(a, flips=1) for a in artifacts]
    assert pick(CUDA_HOST, flipping) is None


def test_altered_artifact_is_never_loaded(built: ArtifactStore, tmp_path: Path) -> None:
    int8 = built.find("open_nsfw", "int8")
    assert int8 is not None
    copy_home = tmp_path / "models"
    copy_home.mkdir()
    shutil.copyfile(int8.path, copy_home / int8.file)
    with open(copy_home / int8.file, "r+b") as fh:
        fh.seek(-64, 2)
        last = fh.read(1)
        fh.seek(-64, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    altered = replace(int8, home=copy_home)
    with pytest.raises(ModelUnavailable, match="sha256"):
        altered.verified_path()
    with pytest.raises(ModelUnavailable):
        OpenNsfwClassifier(artifact=altered)


def _bad_artifact(spec: ClassifierManifest, built: ArtifactStore, calibration: CalibrationSet, dest_home: Path) -> Artifact:
    """A real int8 model calibrated on the wrong data (flat grey frames), recorded as if it
    had passed: what a stale or tampered manifest entry looks like."""
    dest_home.mkdir(parents=True, exist_ok=True)
    clf = OpenNsfwClassifier(threads=1)
    grey = np.stack([clf.preprocess(np.full((300, 300, 3), v, dtype=np.uint8)) for v in (120, 130)])
    path = dest_home / "open_nsfw.int8.onnx"
    build_int8(resolve_model_file(OPEN_NSFW), path, "qoperator-minmax", grey, clf._input)
    good = built.find("open_nsfw", "int8")
    assert good is not None
    return replace(good, file=path.name, sha256=file_sha256(path), home=dest_home)


def test_verify_refuses_an_artifact_that_drifts(spec: ClassifierManifest, built: ArtifactStore,
                                                calibration: CalibrationSet, tmp_path: Path) -> None:
    bad = _bad_artifact(spec, built, calibration, tmp_path / "models")
    ev = verify(spec, bad, calibration, POLICY_THRESHOLDS)
    assert ev.drift_max > 0.03
    assert not ev.passes and "drift" in ev.why_refused()


def test_optimize_refuses_a_badly_calibrated_build(spec: ClassifierManifest, calibration: CalibrationSet,
                                                   tmp_path: Path) -> None:
    clf = OpenNsfwClassifier(threads=1)
    grey = np.stack([clf.preprocess(np.full((300, 300, 3), 128, dtype=np.uint8))])
    store = ArtifactStore(tmp_path)
    (report,) = optimize(spec, store, calibration, POLICY_THRESHOLDS, variants=("int8",),
                         methods=("qoperator-minmax",), calibration_inputs=grey)
    assert report.artifact is None and report.refused
    assert report.candidates[0]["drift_max"] > 0.03 and not report.candidates[0]["passes"]
    assert store.load() == [] and not list(store.home.glob("*.onnx"))


def test_a_flipped_decision_is_refused_even_within_tolerance(spec: ClassifierManifest, built: ArtifactStore,
                                                             calibration: CalibrationSet) -> None:
    # Put a threshold between a photo's fp32 and int8 scores: a small drift, but a
    # different decision, which the check must catch.
    int8 = built.find("open_nsfw", "int8")
    assert int8 is not None
    clf = OpenNsfwClassifier(threads=1)
    inputs = np.stack([clf.preprocess(f) for f in calibration.frames])
    ref, _ = score_and_time(clf, clf.path, inputs, providers=None, threads=1)
    got, _ = score_and_time(clf, int8.verified_path(), inputs, providers=None, threads=1)
    i = int(np.argmax(np.abs(got - ref)))
    assert 0 < abs(got[i] - ref[i]) <= 0.03
    between = float((got[i] + ref[i]) / 2)
    ev = verify(spec, int8, calibration, [(between, None)])
    assert ev.drift_max <= 0.03 and ev.flips >= 1 and not ev.passes
    assert calibration.files[i][0] in ev.flipped


def test_cli_optimize_list_verify(data_dir: Path, corpus: corpus_mod.Corpus, spec: ClassifierManifest,
                                  built: ArtifactStore, calibration: CalibrationSet) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["models", "optimize", "--calibration", str(corpus.root / "clean"), "--variant", "int8",
                              "--method", "qoperator-percentile", "--method", "dynamic"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "int8 dynamic:" in out.output and "kept int8" in out.output
    listed = json.loads(runner.invoke(cli, ["models", "list", "--json"], catch_exceptions=False).output)
    runs = {m["model"]: m["runs"] for m in listed["models"]}
    assert runs["open_nsfw"] == "int8"
    assert any(m["model"] == "nudenet_320n" and "AGPL" in m["license"] for m in listed["models"])
    ok = runner.invoke(cli, ["models", "verify"], catch_exceptions=False)
    assert ok.exit_code == 0 and "ok open_nsfw int8" in ok.output

    # Swap in a drifting build under the recorded entry: verify refuses it, and the host stops picking it.
    store = ArtifactStore(data_dir)
    bad = _bad_artifact(spec, built, calibration, store.home)
    store.save(replace(bad, calibration=store.find("open_nsfw", "int8").calibration))  # type: ignore[union-attr]
    refused = runner.invoke(cli, ["models", "verify"], catch_exceptions=False)
    assert refused.exit_code == 1 and "REFUSED open_nsfw int8" in refused.output, refused.output
    listed = json.loads(runner.invoke(cli, ["models", "list", "--json"], catch_exceptions=False).output)
    assert {m["model"]: m["runs"] for m in listed["models"]}["open_nsfw"] == "fp32"


def _install(built: ArtifactStore, data_dir: Path) -> None:
    """Copy the session's artifacts into ``data_dir`` as `optimize` would have left them."""
    store = ArtifactStore(data_dir)
    store.home.mkdir(parents=True, exist_ok=True)
    for a in built.load():
        shutil.copyfile(a.path, store.home / a.file)
        store.save(a)


def test_loader_runs_the_hosts_artifact_and_says_so(built: ArtifactStore, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from photosentry.models.loader import load_classifier

    home = tmp_path / "home"
    _install(built, home)
    with caplog.at_level(logging.INFO, logger="photosentry.models"):
        clf = load_classifier("open_nsfw", data_dir=home, threads=1)
    assert clf.variant == "int8"  # this CPU-only host
    assert "running int8 artifact" in caplog.text and "drift max" in caplog.text
    assert load_classifier("open_nsfw", data_dir=home, threads=1, use_artifacts=False).variant == "fp32"

    # An altered artifact file: a warning, and the published model instead of a failure.
    path = ArtifactStore(home).home / "open_nsfw.int8.onnx"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="photosentry.models"):
        clf = load_classifier("open_nsfw", data_dir=home, threads=1)
    assert clf.variant == "fp32" and "unusable" in caplog.text and "sha256" in caplog.text


def test_worker_service_loads_the_artifact_and_reports_it(built: ArtifactStore, tmp_path: Path, redis_server: str,
                                                          redis_client) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import generate_latest

    from photosentry.worker.service import ScanService, ServiceSettings

    home = tmp_path / "home"
    _install(built, home)
    service = ScanService(ServiceSettings(redis_url=redis_server, data_dir=str(home), threads=1), client=redis_client)
    assert service.scanner.classifier.variant == "int8"
    text = generate_latest(service.metrics.registry).decode()
    assert 'variant="int8"' in text and "photosentry_model_info" in text
