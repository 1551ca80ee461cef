"""`photosentry rescan s3://bucket/prefix/`: a bucket prefix listed in pages, scanned, moved, resumed.

The same real S3-compatible server as tests/test_s3.py (moto in server mode over HTTP),
a real redis-server for the shared bank, and the real command in a subprocess, killed
with SIGKILL in the middle of a run and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import zlib
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
import redis

from photosentry.rescan.source import S3PrefixSource

from . import workers
from .corpus import Corpus
from .s3_server import S3Buckets
from .test_rescan_e2e import TREE, _kill_group, by_key, complete_rows, corpus_file, rescan, rows_of, start_rescan
from .workers import PHOTOSENTRY

wait_until = partial(workers.wait_until, timeout=90.0)


def test_a_prefix_is_listed_page_by_page_in_key_order_and_resumed_after_the_watermark(s3: S3Buckets) -> None:
    for key in ("photos/b.jpg", "photos/a/b.jpg", "photos/a-b.jpg", "photos/z/\u00e5.jpg", "photos/sub/",
                "photos/odd//x.jpg", "photosx/y.jpg", "other/photos/x.jpg"):
        s3.put(key, b"" if key.endswith("/") else b"photo")
    source = S3PrefixSource(f"s3://{s3.uploads}/photos", client=s3.client, page_size=2)
    items = list(source.items())
    # S3's order (UTF-8 bytes: '-' before '/'), which is the order keys compare in; the
    # console's folder marker is no photo; the odd key is an item (reading refuses it).
    assert [i.key_text for i in items] == ["a-b.jpg", "a/b.jpg", "b.jpg", "odd//x.jpg", "z/\u00e5.jpg"]
    assert [i.key for i in items] == sorted(i.key for i in items)
    assert items[0].source == f"s3://{s3.uploads}/photos/a-b.jpg" and items[0].timestamp is not None
    assert source.count() == 5 and source.key_of("a/b.jpg") == ("a/b.jpg",)
    listings = [r for r in s3.server.requests_naming(s3.uploads) if "list-type=2" in r and "prefix=photos" in r]
    assert len(listings) >= 3  # pages of two, never the whole prefix at once

    source.start_after = ("a/b.jpg",)  # a resume: S3 lists from the watermark on
    assert [i.key_text for i in source.items()] == ["b.jpg", "odd//x.jpg", "z/\u00e5.jpg"]


@pytest.fixture
def env(s3: S3Buckets, redis_server: str, redis_client: redis.Redis, tmp_path: Path) -> dict[str, str]:
    out = {**os.environ, "PHOTOSENTRY_REDIS_URL": redis_server, "PHOTOSENTRY_HOME": str(tmp_path / "home")}
    for name in ("PHOTOSENTRY_POLICY", "PHOTOSENTRY_SOURCE_ROOTS", "PHOTOSENTRY_STORE"):
        out.pop(name, None)
    return out  # the s3 fixture put AWS_ENDPOINT_URL and the test credentials in os.environ


def test_rescan_of_a_bucket_prefix_moves_reports_and_resumes_after_sigkill(
    env: dict[str, str], s3: S3Buckets, corpus: Corpus, tmp_path: Path
) -> None:
    subprocess.run([PHOTOSENTRY, "ban", "add", str(corpus.banned), "--by", "mod", "--reason", "rescan test"],
                   env=env, check=True, capture_output=True)
    names = {f"{i:02d}/{rel.replace('/', '-')}": spec for i in range(2) for rel, spec in TREE.items()}
    for rel, (ref, _, _) in names.items():
        s3.put(f"photos/{rel}", corpus_file(corpus, ref).read_bytes())
    s3.put("photos/odd//name.jpg", corpus.clean["coffee"].read_bytes())
    report = tmp_path / "report.jsonl"
    store = f"s3://{s3.private}/photosentry/"
    args = [f"s3://{s3.uploads}/photos/", "--report", str(report), "-n", "1", "--store", store]
    proc = start_rescan(env, *args, "--rate", "4", log=tmp_path / "first.log")
    try:
        wait_until(lambda: complete_rows(report) >= 3 or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, no chance to clean up
        proc.wait(10)
    finally:
        _kill_group(proc)
    before = complete_rows(report)
    assert 3 <= before < len(names)

    rescan(env, *args, "--resume", check_rc=1)
    rows = rows_of(report)
    assert Counter(str(r["key"]) for r in rows) == Counter([*names, "odd//name.jpg"]), "every object exactly once"
    assert by_key(rows) == {**{rel: (action, reason) for rel, (_, action, reason) in names.items()},
                            "odd//name.jpg": ("quarantine", "source_refused")}
    # Moved as a worker moves them: into the private bucket; allowed ones and the refused one stay.
    blocked = [k for k in s3.keys(s3.private, "photosentry/blocked/") if k.endswith("/content")]
    quarantined = [k for k in s3.keys(s3.private, "photosentry/quarantine/") if k.endswith("/content")]
    assert len(blocked) == 1 and len(quarantined) == 2  # the same bytes twice are stored once
    left = sorted(k for k in s3.keys(prefix="photos/"))
    assert left == sorted([f"photos/{rel}" for rel, (_, action, _) in names.items() if action == "allow"]
                          + ["photos/odd//name.jpg"])
    assert rescan(env, *args, "--resume", check_rc=0).stdout.startswith(f"{report}: this rescan is already complete")


def test_queue_mode_sends_s3_items_to_the_workers_as_urls(redis_client: redis.Redis, tmp_path: Path) -> None:
    from photosentry.rescan.remote import QueueBackend
    from photosentry.rescan.source import Item

    folder = tmp_path / "photos"
    folder.mkdir()
    backend = QueueBackend(redis_client, run_id="r1", dry_run=True, force=False, default_context={},
                           source_roots=("s3://uploads/incoming/", str(folder)), chunk=10)
    url = "s3://uploads/incoming/a.jpg"
    backend.submit(Item(1, url), "rescan:r1:1")
    backend.submit(Item(2, "gone.jpg"), "rescan:r1:2")
    # The object is the workers' to read (this host cannot see it); the missing file is reported here.
    assert [p.path for p in backend._unsent] == [url]
    assert [f.row["status"] for f in backend._ready] == ["missing"]
    backend._flush()
    [job] = [j for j in redis_client.lrange("rq:queue:bulk", 0, -1)]
    data = json.loads(zlib.decompress(redis_client.hget(f"rq:job:{job.decode()}", "data")))
    assert data[2][0]["source"] == {"s3": url} and data[2][0]["dry_run"] is True
