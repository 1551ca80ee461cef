"""Hostile files (scripts/make_hostile.py) through decode, the Scanner and a real worker.

The promise under test: every file ends in a verdict with a reason code; nothing that
must be refused is allowed and nothing unreadable is ever allowed; the worker neither
crashes, nor hangs past its job timeout, nor goes past a stated memory ceiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from photosentry import defaults, enqueue_scan
from photosentry.decode import DecodedImage, decode
from photosentry.errors import UnreadableImage
from photosentry.media import jpeg
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.verdict import ReasonCode
from scripts import make_hostile
from scripts.make_hostile import Hostile

from . import media_files

PHOTOSENTRY = str(Path(sys.executable).with_name("photosentry"))
REPO = Path(__file__).resolve().parents[1]

MEMORY_CEILING_MB = 3072
"""Peak RSS one worker process may reach on the hostile corpus (docs/operations.md).

Measured: about 1.6 GB, set by the largest legal file (a 49 MP PNG, fully decoded and
hashed) on top of the ~300 MB a warm worker holds. The ceiling leaves room for other
Pillow/NumPy/ONNX Runtime builds; a bomb that gets decoded would blow well past it.
"""

KNOWN_CODES = {c.value for c in ReasonCode}


@pytest.fixture(scope="module")
def hostile() -> list[Hostile]:
    return make_hostile.build(include_large=False)


@pytest.fixture(scope="module")
def scanner(classifier: OpenNsfwClassifier) -> Scanner:
    return Scanner(policy=Policy.default(), matcher=None, classifier=classifier)


def _codes(verdict: Any) -> set[str]:
    return {r.code.value for r in verdict.reasons}


def assert_fail_closed(f: Hostile, verdict: Any) -> None:
    """The property every hostile file must have, whatever else happens."""
    codes = _codes(verdict)
    assert codes and codes <= KNOWN_CODES, (f.name, codes)
    if verdict.action.value == "allow":
        assert f.may_allow, f"{f.name} ({f.note}) must never be allowed"
        assert codes == {"clean"}
        decode(f.data)  # allowed means really readable: this must not raise
    else:
        assert codes & set(f.codes), (f.name, f.note, codes, f.codes)


def test_the_generator_is_deterministic_and_covers_every_category(tmp_path: Path) -> None:
    first, again = make_hostile.build(7, include_large=False), make_hostile.build(7, include_large=False)
    assert [(f.name, f.data) for f in first] == [(f.name, f.data) for f in again]
    other = {f.name: f.data for f in make_hostile.build(8, include_large=False)}
    assert any(other.get(f.name) != f.data for f in first if f.category == "fuzz")
    assert {f.category for f in first} >= {"empty", "non_image", "bomb", "animated", "exif", "polyglot",
                                           "truncated", "bitflip", "fuzz"}
    formats = {make_hostile._ext(f.name.split("-", 2)[1]) for f in first if f.category == "truncated"}
    assert formats == {"jpg", "png", "gif", "webp", "tif"}

    assert make_hostile.main([str(tmp_path / "out"), "--fuzz", "3", "--no-large"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {e["name"] for e in manifest} == {p.name for p in (tmp_path / "out").iterdir()} - {"manifest.json"}
    assert all(set(e) >= {"may_allow", "codes", "sha256", "size", "note"} for e in manifest)


def test_decode_ends_every_hostile_file_in_frames_or_a_reason_code(hostile: list[Hostile]) -> None:
    for f in hostile:
        try:
            image = decode(f.data)
        except UnreadableImage as exc:
            assert exc.code in KNOWN_CODES, (f.name, exc.code)
            if not f.may_allow:
                assert exc.code in f.codes, (f.name, f.note, exc.code, exc.message)
            continue
        assert isinstance(image, DecodedImage) and image.frames, f.name
        if not f.may_allow:  # decodable, so it must be refused for its frame count or what follows it
            assert (image.frames_truncated and "too_many_frames" in f.codes) or (
                image.trailers and "trailing_data" in f.codes), (f.name, f.note)


def test_every_hostile_file_gets_a_fail_closed_verdict(hostile: list[Hostile], scanner: Scanner) -> None:
    for f in hostile:
        assert_fail_closed(f, scanner.scan_bytes(f.data, subject=f.name))


# -- fuzzing: hypothesis mutates real photos in every format ---------------------------------

_BASES = make_hostile.encoded_bases(make_hostile.base_images(make_hostile.DEFAULT_PHOTOS))
_OPS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("byte"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("int32"), st.integers(0, 1 << 20), st.sampled_from([0, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000])),
    st.tuples(st.just("dup"), st.integers(0, 1 << 20), st.integers(1, 600)),
)


def _apply(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, at, arg in ops:
        if not out:
            break
        pos = at % len(out)
        if op == "flip":
            out[pos] ^= 1 << arg
        elif op == "cut":
            del out[pos:]
        elif op == "byte":
            out[pos] = arg
        elif op == "int32":
            out[pos:pos + 4] = arg.to_bytes(4, "big")
        else:
            out[pos:pos] = out[pos:pos + arg]
    return bytes(out)


@settings(max_examples=80, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=st.sampled_from(sorted(_BASES)), ops=st.lists(_OPS, min_size=1, max_size=4))
def test_fuzzed_photos_never_crash_and_are_allowed_only_if_readable(
    scanner: Scanner, base: str, ops: list[tuple[str, int, int]]
) -> None:
    data = _apply(_BASES[base], ops)
    f = Hostile("fuzzed", "fuzz", data, True, make_hostile.DAMAGED, f"{base} {ops}")
    try:
        decode(data)
    except UnreadableImage as exc:
        assert exc.code in KNOWN_CODES
    verdict = scanner.scan_bytes(data, subject="fuzzed")
    assert "scan_failed" not in _codes(verdict), verdict.reasons  # every failure has a precise code
    assert_fail_closed(f, verdict)


# -- a real worker process: verdicts, memory ceiling, timeout ----------------------------------


PEAK_RSS_WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def run_worker(env: dict[str, str], *extra: str, timeout: float = 240) -> tuple[int, int, str]:
    """``photosentry worker --burst`` under a wrapper; returns (exit status, peak RSS in MB of
    any of its processes, output)."""
    cmd = [sys.executable, "-c", PEAK_RSS_WRAPPER, PHOTOSENTRY, "worker", "--burst", "--processes", "1",
           "--threads", "1", "--log-format", "text", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, cwd=REPO)
    out = done.stdout.decode() + done.stderr.decode()
    peak = [int(line.split()[1]) for line in done.stdout.decode().splitlines() if line.startswith("PEAK_RSS_KB")]
    return done.returncode, (peak[0] // 1024 if peak else -1), out


def stream_verdicts(client: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for _, fields in client.xrange("photosentry:verdicts"):
        if fields.get(b"event", b"verdict") == b"verdict":
            out.setdefault(fields[b"upload_id"].decode(), []).append(json.loads(fields[b"verdict"]))
    return out


@pytest.fixture
def worker_env(redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "uploads"
    root.mkdir()
    env = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server, "PHOTOSENTRY_HOME": str(tmp_path / "home"),
           "PHOTOSENTRY_SOURCE_ROOTS": str(root), "PYTHONWARNINGS": "ignore"}
    env.pop("PHOTOSENTRY_CALLBACK_KEY", None)
    return env


def test_a_worker_gives_every_hostile_upload_one_verdict_within_the_memory_ceiling(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    files = make_hostile.build()  # with the 49 MP legal PNG: the most memory any file may take
    root = Path(worker_env["PHOTOSENTRY_SOURCE_ROOTS"])
    for i, f in enumerate(files):
        # Half by path, half inline: both ways a photo reaches the worker.
        source: str | bytes = f.data
        if i % 2:
            (root / f.name).write_bytes(f.data)
            source = f.name
        enqueue_scan(redis_client, source=source, upload_id=f"h-{i}", retries=0)
    code, peak_mb, out = run_worker(worker_env, "--job-timeout", "120")
    assert code == 0, out[-3000:]

    verdicts = stream_verdicts(redis_client)
    assert sorted(verdicts) == sorted(f"h-{i}" for i in range(len(files)))
    for i, f in enumerate(files):
        [verdict] = verdicts[f"h-{i}"]  # exactly one each
        codes = {r["code"] for r in verdict["reasons"]}
        assert "scan_failed" not in codes, (f.name, verdict["reasons"], out[-2000:])
        if verdict["action"] == "allow":
            assert f.may_allow, f.name
            decode(f.data)
        else:
            assert codes & set(f.codes), (f.name, codes)
    print(f"peak RSS of one worker process over {len(files)} hostile files: {peak_mb} MB")
    assert 0 < peak_mb < MEMORY_CEILING_MB, f"peak RSS {peak_mb} MB"
    # Refused uploads left the upload folder for the quarantine store, bytes intact.
    home = Path(worker_env["PHOTOSENTRY_HOME"])
    for i, f in enumerate(files):
        verdict = verdicts[f"h-{i}"][0]
        if verdict["action"] != "allow" and verdict["hashes"] is not None:
            sha = verdict["hashes"]["sha256"]
            assert (home / verdict["action"].replace("block", "blocked") / sha[:2] / sha / "content").read_bytes() \
                == f.data


def test_a_file_slower_than_the_job_timeout_is_quarantined_not_lost(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    slow = make_hostile.slow_but_legal()  # ~3.5 s to decode and hash on one core
    quick = make_hostile.encoded_bases(make_hostile.base_images(make_hostile.DEFAULT_PHOTOS))
    enqueue_scan(redis_client, source=slow.data, upload_id="slow", job_timeout=1, retries=1)
    enqueue_scan(redis_client, source=next(iter(quick.values())), upload_id="quick", job_timeout=60, retries=0)
    code, _, out = run_worker(worker_env, "--job-timeout", "1")
    assert code == 0, out[-3000:]
    verdicts = stream_verdicts(redis_client)
    [slow_verdict] = verdicts["slow"]
    assert slow_verdict["action"] == "quarantine"
    assert slow_verdict["reasons"][0]["code"] == "scan_failed"
    # Wherever the alarm lands (decoding, hashing), it is a timeout: retried, then scan_failed.
    assert "JobTimeoutException" in slow_verdict["reasons"][0]["text"]
    assert "2 attempts" in slow_verdict["reasons"][0]["text"]
    assert [v["action"] for v in verdicts["quick"]] == ["allow"]


# -- red team round three --------------------------------------------------------------------


def test_a_jpeg_with_hundreds_of_progressive_scans_is_a_bomb_refused_before_decoding(scanner: Scanner) -> None:
    """F3: libjpeg goes over the whole frame once per scan, so a small file of repeated
    scans costs seconds to minutes; the scan count is read from the markers instead."""
    flat = Image.new("RGB", (512, 512), (120, 130, 140))
    bomb = media_files.many_scans_jpeg(flat, defaults.MAX_JPEG_SCANS)
    assert jpeg.parse(bomb).scans > defaults.MAX_JPEG_SCANS
    with pytest.raises(UnreadableImage) as refused:
        decode(bomb)
    assert refused.value.code == "decompression_bomb" and "scans" in refused.value.message
    verdict = scanner.scan_bytes(bomb, subject="many-scans.jpg")
    assert verdict.action.value == "quarantine" and "decompression_bomb" in _codes(verdict)

    # An ordinary progressive JPEG (about 10 scans), even one with a few extra, is read.
    assert decode(media_files.many_scans_jpeg(flat, 20)).width == 512
