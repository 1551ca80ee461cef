"""The quarantine and blocked stores, and the data directory, lie apart from every folder
source root (red team round 3, F8).

With ``--store /srv/private`` inside ``--source-root /srv`` any producer could name
``private/blocked/<sha[:2]>/<sha>/content`` as a path job: the worker read the blocked
photo out of its own store, blocked it again and "moved" it, unlinking the only copy.
Workers, ``rescan --local`` and the review host refuse such a set-up at start (exit 3).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from photosentry import enqueue_scan
from photosentry.cli import cli
from photosentry.hashes.banks import EntrySource, NewEntry
from photosentry.hashes.banks.redis import RedisBankStore
from photosentry.hashes.codecs import Algorithm
from photosentry.models.open_nsfw import OpenNsfwClassifier
from photosentry.worker.actions import ContentStore
from photosentry.worker.pipeline import Scanner
from photosentry.worker.policy import Policy
from photosentry.worker.service import ScanService, ServiceSettings
from photosentry.worker import stores
from photosentry.worker.stores import open_stores

from .corpus import Corpus
from .test_worker import run_burst


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "srv"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "srv-link").symlink_to(root, target_is_directory=True)
    return {"tmp": tmp_path, "root": root, "home": tmp_path / "home"}


@pytest.mark.parametrize("store, home, why", [
    ("srv/private", "home", "the store .* lies inside the source root"),
    ("srv", "home", "the store .* lies inside the source root"),  # the root itself
    (".", "home", "the store .* holds the source root"),
    ("elsewhere", "srv/photosentry-home", "the data directory .* lies inside the source root"),
    ("elsewhere", ".", "the data directory .* holds the source root"),
    (None, "srv/photosentry-home", "the data directory .* lies inside the source root"),  # the default store
    ("srv-link/private", "home", "the store .* lies inside the source root"),  # compared as real paths
])
def test_a_store_or_data_directory_overlapping_a_folder_root_is_refused(
        tree: dict[str, Path], store: str | None, home: str, why: str) -> None:
    tmp = tree["tmp"]
    with pytest.raises(ValueError, match=why):
        stores.check_apart(str(tmp / store) if store else None, tmp / home, [str(tree["root"])])
    with pytest.raises(ValueError, match=why):
        open_stores(str(tmp / store) if store else None, tmp / home, source_roots=[str(tree["root"])])


def test_stores_apart_from_the_roots_are_accepted(tree: dict[str, Path]) -> None:
    tmp = tree["tmp"]
    stores.check_apart(str(tmp / "elsewhere"), tmp / "home", [str(tree["root"]), "s3://uploads/incoming/"])
    stores.check_apart("s3://private/", tmp / "home", [str(tree["root"])])
    (tmp / "srv2").mkdir()  # a sibling whose name starts like the root's is not inside it
    stores.check_apart(str(tmp / "srv2" / "private"), tmp / "srv2-home", [str(tree["root"])])
    opened = open_stores(str(tmp / "elsewhere"), tmp / "home", source_roots=[str(tree["root"])])
    assert isinstance(opened.quarantine, ContentStore)


def test_a_worker_refuses_to_serve_a_root_holding_its_store(
        redis_client: redis.Redis, redis_server: str, tmp_path: Path, corpus: Corpus, policy: Policy,
        classifier: OpenNsfwClassifier) -> None:
    """The red team's attack, end to end: refused when the worker is built, so no job can
    name the blocked photo; with the store apart, the same job cannot reach it."""
    root = tmp_path / "srv"
    root.mkdir()
    scanner = Scanner(policy=policy, matcher=None, classifier=classifier)
    inside = ServiceSettings(redis_url=redis_server, source_roots=(str(root),), data_dir=str(tmp_path / "home"),
                             store=str(root / "private"))
    with pytest.raises(ValueError, match="lies inside the source root"):
        ScanService(inside, client=redis_client, scanner=scanner)

    settings = ServiceSettings(redis_url=redis_server, source_roots=(str(root),), data_dir=str(tmp_path / "home"),
                               store=str(tmp_path / "private"), refresh_interval_s=0.0)
    from photosentry.hashes.matcher import BankMatcher

    service = ScanService(settings, client=redis_client,
                          scanner=Scanner(policy=policy, matcher=BankMatcher(RedisBankStore(redis_client)),
                                          classifier=classifier))
    banned = corpus.banned.read_bytes()
    sha = hashlib.sha256(banned).hexdigest()
    RedisBankStore(redis_client).add([NewEntry(Algorithm.SHA256, sha, "banned", source=EntrySource.MODERATOR)],
                                     actor="mod", reason="test")
    (root / "u1.jpg").write_bytes(banned)
    enqueue_scan(redis_client, source="u1.jpg", upload_id="u1")
    run_burst(redis_client, service)
    content = tmp_path / "private" / "blocked" / sha[:2] / sha / "content"
    assert content.read_bytes() == banned and not (root / "u1.jpg").exists()
    # Any producer knows the hash of their own photo; the path leads nowhere now.
    enqueue_scan(redis_client, source=f"../private/blocked/{sha[:2]}/{sha}/content", upload_id="x1")
    enqueue_scan(redis_client, source=str(content), upload_id="x2")
    run_burst(redis_client, service)
    assert content.read_bytes() == banned


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_worker_rescan_and_review_commands_refuse_the_overlap_as_a_set_up_error(
        tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    for name in ("PHOTOSENTRY_STORE", "PHOTOSENTRY_SOURCE_ROOTS", "PHOTOSENTRY_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = str(tmp_path / "home")
    store_inside = ("--store", str(root / "private"))

    code, out = _cli("--data-dir", home, "worker", "--redis-url", "redis://127.0.0.1:1/0", "--source-root",
                     str(root), *store_inside)
    assert code == 3 and "lies inside the source root" in out, out
    code, out = _cli("--data-dir", str(root / "ps-home"), "worker", "--redis-url", "redis://127.0.0.1:1/0",
                     "--source-root", str(root))
    assert code == 3 and "the data directory" in out, out

    # rescan --local over the folder holding the store (before any scanner starts)
    code, out = _cli("--data-dir", home, "rescan", str(root), *store_inside, "--report", str(tmp_path / "r.jsonl"))
    assert code == 3 and "lies inside the source root" in out, out
    assert not (tmp_path / "r.jsonl").exists()
    code, out = _cli("--data-dir", str(root / "ps-home"), "rescan", str(root), "--report", str(tmp_path / "r.jsonl"))
    assert code == 3 and "the data directory" in out, out

    # the review host: the CLI and the page share build_reviewer
    code, out = _cli("--data-dir", home, "quarantine", "list", "--redis-url", redis_server, "--source-root",
                     str(root), *store_inside)
    assert code == 3 and "lies inside the source root" in out, out
    code, out = _cli("--data-dir", home, "quarantine", "list", "--redis-url", redis_server, "--source-root",
                     str(root), "--store", str(tmp_path / "private"))
    assert code == 0, out
