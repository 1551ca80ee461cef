"""The bf16 build (OpenVINO on a CPU with native bf16 units): built from the real model,
verified on real photos, chosen over int8 only when it measured faster, and skipped
for the next build when its blob will not load.

The CI host (Intel Xeon with AMX) has native bf16; elsewhere the tests that need it
are skipped with the reason, and the selection tests still run (they are data).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from photosentry.cli import cli
from photosentry.decode import decode
from photosentry.errors import ModelUnavailable
from photosentry.models.adapter import ClassifierManifest
from photosentry.models.artifacts import Artifact, ArtifactStore, Host, ranked_artifacts
from photosentry.models.loader import load_classifier
from photosentry.models.manifest import OPEN_NSFW, file_sha256, resolve_model_file
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.models.openvino_runtime import PROVIDER, OpenVinoSession, bf16_unavailable
from photosentry.models.optimize import CalibrationSet, band, load_calibration, optimize

from . import corpus as corpus_mod

POLICY_THRESHOLDS = [(0.70, 0.97), (0.30, 0.80)]
needs_bf16 = pytest.mark.skipif(bf16_unavailable() is not None, reason=f"no bf16 here: {bf16_unavailable()}")


@pytest.fixture(scope="module")
def calibration(corpus: corpus_mod.Corpus) -> CalibrationSet:
    return load_calibration([corpus.root / "clean", corpus.banned])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, calibration: CalibrationSet) -> ArtifactStore:
    if bf16_unavailable():
        pytest.skip(f"no bf16 here: {bf16_unavailable()}")
    store = ArtifactStore(tmp_path_factory.mktemp("home"))
    reports = optimize(ClassifierManifest.load("open_nsfw"), store, calibration, POLICY_THRESHOLDS,
                       variants=("int8", "bf16"), methods=("qoperator-percentile",))
    assert [r.variant for r in reports if r.artifact is not None] == ["int8", "bf16"], [r.refused for r in reports]
    return store


def _artifact(variant: str, ms: float) -> Artifact:
    return Artifact(model_id="open_nsfw", variant=variant, file=f"open_nsfw.{variant}", sha256="0" * 64,
                    source_sha256="a" * 64, method=variant, calibration={}, drift={"max": 0.001, "mean": 0.0},
                    flips=0, measurements={"ms": ms})


def test_a_host_runs_the_fastest_build_it_can() -> None:
    rank = lambda arts, host: [a.variant for a in ranked_artifacts(arts, model_id="open_nsfw",  # noqa: E731
                                                                   source_sha256="a" * 64, host=host)]
    amx = Host(("CPUExecutionProvider",), cpu_bf16=True)
    plain = Host(("CPUExecutionProvider",), cpu_bf16=False)
    gpu = Host(("CUDAExecutionProvider", "CPUExecutionProvider"), cpu_bf16=True)
    arts = [_artifact("int8", 4.9), _artifact("bf16", 2.5), _artifact("fp16", 1.0)]
    assert rank(arts, amx) == ["bf16", "int8"]  # fp16 is for GPUs, however fast it measured
    assert rank(arts, plain) == ["int8"]  # no native bf16: its blob would not run well (or at all)
    assert rank(arts, gpu) == ["fp16"]
    # Where int8 measured faster (a CPU with AVX-512 BF16 but no AMX), int8 comes first.
    assert rank([_artifact("int8", 2.0), _artifact("bf16", 3.0)], amx) == ["int8", "bf16"]
    # A bf16 entry whose evidence fails is never ranked.
    assert rank([_artifact("int8", 4.9), replace(_artifact("bf16", 2.5), flips=1)], amx) == ["int8"]


@needs_bf16
def test_optimize_records_the_bf16_evidence(built: ArtifactStore, calibration: CalibrationSet) -> None:
    bf16 = built.find("open_nsfw", "bf16")
    assert bf16 is not None and bf16.runtime == "openvino" and bf16.file == "open_nsfw.bf16.blob"
    assert bf16.sha256 == file_sha256(bf16.path)
    assert bf16.source_sha256 == file_sha256(resolve_model_file(OPEN_NSFW))
    assert bf16.openvino and bf16.calibration["digest"] == calibration.digest
    assert 0 <= bf16.drift["max"] <= 0.03 and bf16.flips == 0 and bf16.passes
    assert bf16.measurements["ms"] > 0 and bf16.measurements["fp32_ms"] > 0
    raw = json.loads(built.manifest_path.read_text())
    assert {e["variant"] for e in raw["artifacts"]} == {"int8", "bf16"}


@needs_bf16
def test_bf16_keeps_every_decision_and_batches_exactly(built: ArtifactStore, corpus: corpus_mod.Corpus,
                                                     classifier: OpenNsfwClassifier) -> None:
    bf16 = OpenNsfwClassifier(artifact=built.find("open_nsfw", "bf16"), threads=1)
    assert bf16.variant == "bf16" and bf16.provider == PROVIDER
    photos = []
    for name, path in {**corpus.clean, **corpus.copies}.items():
        frames = decode(path.read_bytes(), min_side=512).frames
        photos.append(frames)
        a, b = classifier.classify(frames), bf16.classify(frames)
        assert b.variant == "bf16" and b.provider == PROVIDER
        assert abs(a.score - b.score) <= 0.03, name
        assert all(band(a.score, t) == band(b.score, t) for t in POLICY_THRESHOLDS), name
    # A photo's score must not depend on the photos batched with it (rescan batches).
    one_by_one = [bf16.classify(frames).score for frames in photos]
    batched = [s.score for s in bf16.classify_many(photos, batch_size=5)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)


def _install(built: ArtifactStore, data_dir: Path) -> ArtifactStore:
    store = ArtifactStore(data_dir)
    store.home.mkdir(parents=True, exist_ok=True)
    for a in built.load():
        (store.home / a.file).write_bytes(a.path.read_bytes())
        store.save(a)
    return store


@needs_bf16
def test_loader_prefers_the_faster_bf16_and_falls_back_to_int8(built: ArtifactStore, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    store = _install(built, tmp_path / "home")
    bf16, int8 = store.find("open_nsfw", "bf16"), store.find("open_nsfw", "int8")
    assert bf16 is not None and int8 is not None
    # Measured on this host at build time; make the order explicit so the test does
    # not depend on this run's timings.
    store.save(replace(bf16, measurements={**bf16.measurements, "ms": 1.0}))
    store.save(replace(int8, measurements={**int8.measurements, "ms": 2.0}))
    with caplog.at_level(logging.INFO, logger="photosentry.models"):
        clf = load_classifier("open_nsfw", data_dir=tmp_path / "home", threads=1)
    assert clf.variant == "bf16" and "running bf16 artifact" in caplog.text and PROVIDER in caplog.text

    # A blob another OpenVINO release or CPU made (here: not a blob at all, recorded
    # with its sha256, so only the import can catch it): the next build runs, not fp32.
    garbage = store.home / bf16.file
    garbage.write_bytes(b"not an OpenVINO blob" * 100)
    store.save(replace(bf16, sha256=file_sha256(garbage), measurements={**bf16.measurements, "ms": 1.0}))
    with pytest.raises(ModelUnavailable, match="could not load"):
        OpenVinoSession(garbage)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="photosentry.models"):
        clf = load_classifier("open_nsfw", data_dir=tmp_path / "home", threads=1)
    assert clf.variant == "int8"
    assert "open_nsfw.bf16.blob unusable" in caplog.text and "running int8 artifact" in caplog.text


@needs_bf16
def test_cli_builds_lists_and_verifies_bf16(data_dir: Path, corpus: corpus_mod.Corpus) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["models", "optimize", "--calibration", str(corpus.root / "clean"), "--variant", "bf16"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "kept bf16" in out.output and "open_nsfw.bf16.blob" in out.output
    listed = runner.invoke(cli, ["models", "list"], catch_exceptions=False)
    assert "bf16 on this CPU: yes" in listed.output and "open_nsfw bf16  verified" in listed.output
    as_json = json.loads(runner.invoke(cli, ["models", "list", "--json"], catch_exceptions=False).output)
    assert as_json["cpu_bf16"] is True
    assert {m["model"]: m["runs"] for m in as_json["models"]}["open_nsfw"] == "bf16"
    ok = runner.invoke(cli, ["models", "verify"], catch_exceptions=False)
    assert ok.exit_code == 0 and "ok open_nsfw bf16" in ok.output, ok.output
