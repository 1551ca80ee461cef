"""Acting on a path source after its scan touches only the file that was read, beneath its
root, never through a symlink (red team round 3, F1 and F2).

An uploader who can write in a source root can swap a directory for a symlink at any
moment (``renameat2(RENAME_EXCHANGE)``, no hook needed) and can write the next upload over
the path, by rename or in place. Whatever they do between the read and the act, a move
must not delete, and a minors rewrite must not write, anything but the file that was
read, and only while it still holds the bytes that were decided on. Each attack runs
here twice: at one chosen instant (a hook, deterministic), and as the red team's race (a
process flipping the directory and the symlink while real jobs run, bounded).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image
from rq.job import Job
from rq.serializers import JSONSerializer

from photosentry import enqueue_scan
from photosentry.errors import SourceRefused
from photosentry.media import scrub
from photosentry.worker import confined
from photosentry.worker.actions import ContentStore
from photosentry.worker.service import ScanService
from photosentry.worker.sources import FileOrigin, PathSource, SourceRoots
from photosentry.worker.verdict import Action

from . import corpus as corpus_mod
from . import media_files
from .test_worker import run_burst

MINOR = {"recipient_is_minor": True}
#: What an attacker hides in an ICC profile (it survives the scrubber verbatim).
KEY_LINE = b"\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRedTeamKeyRedTeamKeyRedTeamKey attacker@redteam\n"
OWNER_KEYS = b"ssh-ed25519 AAAAOwnersOwnKey owner@host\n"

_LIBC = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two directory entries atomically, as the attacker does."""
    if _LIBC.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _exchange_works(tmp: Path) -> bool:
    (tmp / ".x-a").mkdir()
    (tmp / ".x-b").symlink_to(tmp)
    try:
        exchange(tmp / ".x-a", tmp / ".x-b")
    except OSError:
        return False
    finally:
        for name in (".x-a", ".x-b"):
            p = tmp / name
            p.unlink() if p.is_symlink() else p.rmdir()
    return True


@pytest.fixture
def swappable(tmp_path: Path) -> None:
    if not _exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here: the attack cannot be staged")


@pytest.fixture(params=["openat2", "walk"])
def resolve_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reaching a folder beneath a root: openat2 where the kernel has it, and
    the O_NOFOLLOW component walk used elsewhere."""
    if request.param == "walk":
        monkeypatch.setattr(confined, "use_openat2", False)
    return str(request.param)


@pytest.fixture(scope="module")
def coffee(corpus: corpus_mod.Corpus) -> Image.Image:
    with Image.open(corpus.clean["coffee"]) as img:
        return img.convert("RGB").resize((320, 240))


def gps_jpeg(coffee: Image.Image, icc: bytes = KEY_LINE * 4) -> bytes:
    """A clean photo with GPS coordinates: a minors upload of it is allowed and rewritten."""
    return media_files.encode(coffee, "JPEG", quality=90, exif=media_files.gps_exif(), icc_profile=icc)


def real_dir(a: Path, b: Path) -> Path:
    """Whichever of the two names holds the directory now (the other is the symlink)."""
    return a if a.is_dir() and not a.is_symlink() else b


def leftovers(*folders: Path) -> list[str]:
    return [p.name for f in folders for p in f.iterdir() if p.name.startswith(".photosentry-")]


def verdict_of(client: redis.Redis, job_id: str) -> dict:
    return Job.fetch(job_id, connection=client, serializer=JSONSerializer).return_value()


@pytest.fixture
def layout(service: ScanService, tmp_path: Path) -> dict[str, Path]:
    """root/u (a folder uploads go to), root/u-swap (the attacker's symlink to a folder
    outside every root), and that outside folder."""
    root = Path(service.settings.source_roots[0])
    outside = tmp_path / "victim"
    outside.mkdir()
    (root / "u").mkdir()
    (root / "u-swap").symlink_to(outside, target_is_directory=True)
    return {"root": root, "u": root / "u", "link": root / "u-swap", "outside": outside}


# -- F1: the minors rewrite -----------------------------------------------------------------------


def test_a_rewrite_never_writes_through_a_folder_swapped_for_a_symlink(
        swappable: None, redis_client: redis.Redis, service: ScanService, layout: dict[str, Path],
        coffee: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    target = layout["outside"] / "authorized_keys"
    target.write_bytes(OWNER_KEYS)
    photo = gps_jpeg(coffee)
    (layout["u"] / "authorized_keys").write_bytes(photo)
    strip = scrub.strip_metadata

    def swap_then_strip(data: bytes, fmt: str) -> bytes:  # runs after the read, before the write
        exchange(layout["u"], layout["link"])  # root/u is now a symlink to the victim's folder
        return strip(data, fmt)

    monkeypatch.setattr(scrub, "strip_metadata", swap_then_strip)
    job = enqueue_scan(redis_client, source="u/authorized_keys", upload_id="m-1", context=MINOR)
    run_burst(redis_client, service)

    verdict = verdict_of(redis_client, job)
    assert verdict["action"] == "allow" and verdict["rewrite"] == ["strip_metadata"]
    assert target.read_bytes() == OWNER_KEYS  # nothing written outside the root
    assert (layout["link"] / "authorized_keys").read_bytes() == photo  # the upload, moved away: left alone
    assert leftovers(layout["outside"], layout["link"]) == []


def test_a_rewrite_never_replaces_a_new_upload_renamed_into_place(
        redis_client: redis.Redis, service: ScanService, coffee: Image.Image, corpus: corpus_mod.Corpus,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(service.settings.source_roots[0])
    path = root / "avatar.jpg"
    path.write_bytes(gps_jpeg(coffee))
    new = corpus.clean["chelsea"].read_bytes()
    strip = scrub.strip_metadata

    def new_upload_arrives(data: bytes, fmt: str) -> bytes:
        (root / ".incoming").write_bytes(new)
        os.replace(root / ".incoming", path)  # a pipeline writing the next upload by rename
        return strip(data, fmt)

    monkeypatch.setattr(scrub, "strip_metadata", new_upload_arrives)
    job = enqueue_scan(redis_client, source="avatar.jpg", upload_id="m-2", context=MINOR)
    run_burst(redis_client, service)
    assert verdict_of(redis_client, job)["rewrite"] == ["strip_metadata"]
    assert path.read_bytes() == new
    assert leftovers(root) == []


def test_a_rewrite_swaps_back_a_file_that_took_the_name_just_before_the_swap(
        swappable: None, tmp_path: Path, coffee: Image.Image, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    photo = gps_jpeg(coffee)
    (root / "a.jpg").write_bytes(photo)
    fetched = SourceRoots([root]).fetch(PathSource("a.jpg"), max_bytes=10**7)
    real_exchange, calls = confined.exchange, []

    def late_upload(dir_fd: int, a: str, b: str) -> bool:
        if not calls:  # after the last identity check: the narrowest window there is
            (root / ".incoming").write_bytes(b"the next upload")
            os.replace(root / ".incoming", root / "a.jpg")
        calls.append((a, b))
        return real_exchange(dir_fd, a, b)

    monkeypatch.setattr(confined, "exchange", late_upload)
    assert fetched.origin.replace(scrub.strip_metadata(photo, "jpeg"), hashlib.sha256(photo).hexdigest()) is False
    assert len(calls) == 2  # swapped in, saw another file come out, swapped it back
    assert (root / "a.jpg").read_bytes() == b"the next upload"
    assert leftovers(root) == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["exchange", "rename"])
def test_a_rewrite_keeps_the_mode_and_replaces_only_what_was_read(
        tmp_path: Path, coffee: Image.Image, monkeypatch: pytest.MonkeyPatch, resolve_mode: str,
        renameat2: bool) -> None:
    if not renameat2:
        monkeypatch.setattr(confined, "use_renameat2", False)
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    photo = gps_jpeg(coffee)
    (root / "d" / "a.jpg").write_bytes(photo)
    os.chmod(root / "d" / "a.jpg", 0o640)
    fetched = SourceRoots([root]).fetch(PathSource("d/a.jpg"), max_bytes=10**7)
    clean = scrub.strip_metadata(photo, "jpeg")
    assert fetched.origin.replace(clean, hashlib.sha256(photo).hexdigest()) is True
    assert (root / "d" / "a.jpg").read_bytes() == clean
    assert (root / "d" / "a.jpg").stat().st_mode & 0o7777 == 0o640
    assert leftovers(root / "d") == []
    # Done once: the file is no longer what was read, so a replay changes nothing.
    assert fetched.origin.replace(b"other", hashlib.sha256(photo).hexdigest()) is False
    assert (root / "d" / "a.jpg").read_bytes() == clean


# -- F2: quarantine and block moves --------------------------------------------------------------


def test_a_move_never_unlinks_through_a_folder_swapped_for_a_symlink(
        swappable: None, redis_client: redis.Redis, service: ScanService, layout: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    victim = layout["outside"] / "bank.sqlite"
    victim.write_bytes(b"precious data outside the root\n")
    upload = b"not a photo " * 50
    (layout["u"] / "bank.sqlite").write_bytes(upload)
    put = ContentStore.put

    def put_then_swap(self: ContentStore, *args: object, **kwargs: object) -> object:  # the window of a move
        stored = put(self, *args, **kwargs)  # type: ignore[arg-type]
        exchange(layout["u"], layout["link"])
        return stored

    monkeypatch.setattr(ContentStore, "put", put_then_swap)
    job = enqueue_scan(redis_client, source="u/bank.sqlite", upload_id="q-1")
    run_burst(redis_client, service)

    assert verdict_of(redis_client, job)["action"] == "quarantine"
    assert victim.read_bytes() == b"precious data outside the root\n"
    assert (layout["link"] / "bank.sqlite").read_bytes() == upload  # not what the path names now: left
    assert service.actions.stores[Action.QUARANTINE].read(hashlib.sha256(upload).hexdigest()) == upload
    assert leftovers(layout["outside"], layout["link"]) == []


def test_a_file_rewritten_in_place_after_the_read_is_not_deleted(
        redis_client: redis.Redis, service: ScanService, corpus: corpus_mod.Corpus,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(service.settings.source_roots[0])
    path = root / "avatar.jpg"
    read = b"junk, quarantined as unreadable " * 20
    path.write_bytes(read)
    written = b"the next upload, same size and inode".ljust(len(read), b".")
    scan = service.scanner.scan_bytes

    def scan_then_pipeline_writes(data: bytes, **kwargs: object) -> object:
        verdict = scan(data, **kwargs)
        with open(path, "r+b") as fh:  # same inode, same size
            fh.write(written)
        return verdict

    monkeypatch.setattr(service.scanner, "scan_bytes", scan_then_pipeline_writes)
    inode = path.stat().st_ino
    job = enqueue_scan(redis_client, source="avatar.jpg", upload_id="q-2")
    run_burst(redis_client, service)

    assert verdict_of(redis_client, job)["action"] == "quarantine"
    assert path.read_bytes() == written and path.stat().st_ino == inode  # never scanned: never deleted
    assert service.actions.stores[Action.QUARANTINE].read(hashlib.sha256(read).hexdigest()) == read
    assert leftovers(root) == []


def test_a_removal_checks_the_bytes_and_puts_back_anything_else(tmp_path: Path) -> None:
    upload = tmp_path / "inbox" / "a.jpg"
    upload.parent.mkdir()
    upload.write_bytes(b"new bytes, never scanned")
    # A caller's bare path (no identity): only the bytes decide.
    assert FileOrigin(upload).remove(hashlib.sha256(b"what was stored").hexdigest()) is False
    assert upload.read_bytes() == b"new bytes, never scanned" and leftovers(upload.parent) == []
    assert FileOrigin(upload).remove(hashlib.sha256(b"new bytes, never scanned").hexdigest()) is True
    assert not upload.exists() and leftovers(upload.parent) == []


def test_a_removal_never_puts_back_over_a_file_that_appeared_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, resolve_mode: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"read")
    fetched = SourceRoots([root]).fetch(PathSource("a.jpg"), max_bytes=100)
    check = FileOrigin._holds_what_was_read

    def another_arrives(self: FileOrigin, dir_fd: int, name: str, sha: str | None) -> bool:
        (root / "a.jpg").write_bytes(b"newer")  # the name was free for a moment: a new upload took it
        check(self, dir_fd, name, sha)
        return False

    monkeypatch.setattr(FileOrigin, "_holds_what_was_read", another_arrives)
    with caplog.at_level(logging.ERROR):
        assert fetched.origin.remove(hashlib.sha256(b"read").hexdigest()) is False
    assert (root / "a.jpg").read_bytes() == b"newer"
    kept = leftovers(root)
    assert len(kept) == 1 and (root / kept[0]).read_bytes() == b"read"  # nothing lost: kept, and said so
    assert "kept under a private name" in caplog.text


def test_an_origin_sent_to_another_process_acts_the_same(tmp_path: Path, resolve_mode: str) -> None:
    """rescan --local: a pool process reads, the parent moves (the origin is pickled)."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.bin").write_bytes(b"quarantined")
    fetched = pickle.loads(pickle.dumps(SourceRoots([root]).fetch(PathSource("d/a.bin"), max_bytes=100)))
    assert SourceRoots.still_same(fetched)
    assert fetched.origin.remove(hashlib.sha256(b"quarantined").hexdigest()) is True
    assert not (root / "d" / "a.bin").exists()


@pytest.mark.parametrize("act", ["remove", "replace", "still_same"])
def test_acts_refuse_a_folder_swapped_for_a_symlink(
        swappable: None, tmp_path: Path, resolve_mode: str, act: str) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "u").mkdir(parents=True)
    outside.mkdir()
    (root / "swap").symlink_to(outside, target_is_directory=True)
    (root / "u" / "f").write_bytes(b"upload")
    (outside / "f").write_bytes(b"victim")
    fetched = SourceRoots([root]).fetch(PathSource("u/f"), max_bytes=100)
    exchange(root / "u", root / "swap")
    sha = hashlib.sha256(b"upload").hexdigest()
    if act == "remove":
        assert fetched.origin.remove(sha) is False
    elif act == "replace":
        assert fetched.origin.replace(b"stripped", sha) is False
    else:
        assert fetched.origin.still_same() is False
    assert (outside / "f").read_bytes() == b"victim"
    assert (root / "swap" / "f").read_bytes() == b"upload"
    # Swapped back: the very folder read in, so it is acted on.
    exchange(root / "u", root / "swap")
    assert fetched.origin.still_same()


def test_a_read_refuses_a_folder_swapped_for_a_symlink_after_the_check(
        swappable: None, tmp_path: Path, resolve_mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "u").mkdir(parents=True)
    outside.mkdir()
    (root / "swap").symlink_to(outside, target_is_directory=True)
    (root / "u" / "f").write_bytes(b"upload")
    (outside / "f").write_bytes(b"secret")
    roots = SourceRoots([root])
    resolve = roots.resolve

    def resolve_then_swap(raw: object) -> tuple[Path, Path]:
        found = resolve(raw)
        exchange(root / "u", root / "swap")
        return found

    monkeypatch.setattr(roots, "resolve", resolve_then_swap)
    # (Held before too, by a /proc/self/fd check after the open; now the open itself fails.)
    with pytest.raises(SourceRefused, match="u/f"):
        roots.fetch(PathSource("u/f"), max_bytes=100)


def test_open_dir_follows_no_symlink_and_never_leaves_the_root(tmp_path: Path, resolve_mode: str) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    (root / "a" / "inner").symlink_to(root / "a" / "b", target_is_directory=True)  # even one staying inside
    (root / "a" / "file").write_bytes(b"")
    fd = confined.open_dir(root, ("a", "b"))
    try:
        assert os.fstat(fd).st_ino == (root / "a" / "b").stat().st_ino
    finally:
        os.close(fd)
    for parts in (("a", "up"), ("a", "inner"), ("a", "file"), ("a", ".."), ("..",), ("a/b",), ("missing",)):
        with pytest.raises(OSError):
            os.close(confined.open_dir(root, parts))


# -- the red team's race: no hook, a process flipping a folder and a symlink -------------------------

_FLIPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b = (os.fsencode(p) for p in sys.argv[1:3])
print("flipping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)
    time.sleep(0.0002)
"""
RACE_JOBS = 200  # the unfixed worker lost a file outside the root within 20 jobs of this


@pytest.fixture
def flipper(layout: dict[str, Path]) -> Iterator[Callable[[], None]]:
    procs: list[subprocess.Popen[str]] = []

    def start() -> None:
        proc = subprocess.Popen([sys.executable, "-c", _FLIPPER, str(layout["u"]), str(layout["link"])],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "flipping"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_racing_moves_never_delete_a_file_outside_the_root(
        swappable: None, redis_client: redis.Redis, service: ScanService, layout: dict[str, Path],
        flipper: Callable[[], None]) -> None:
    names = [f"f{i}.db" for i in range(RACE_JOBS)]
    for name in names:
        (layout["u"] / name).write_bytes(b"not a photo: " + name.encode() * 40)  # quarantined, each its own bytes
        (layout["outside"] / name).write_bytes(b"precious")
        enqueue_scan(redis_client, source=f"u/{name}", upload_id=f"q-{name}")
    flipper()
    run_burst(redis_client, service)
    assert sorted(p.name for p in layout["outside"].iterdir()) == sorted(names)
    assert all((layout["outside"] / n).read_bytes() == b"precious" for n in names)
    assert redis_client.xlen("photosentry:verdicts") == RACE_JOBS
    assert leftovers(layout["outside"], real_dir(layout["u"], layout["link"])) == []


def test_racing_rewrites_never_write_a_file_outside_the_root(
        swappable: None, redis_client: redis.Redis, service: ScanService, layout: dict[str, Path],
        coffee: Image.Image, flipper: Callable[[], None]) -> None:
    photo = gps_jpeg(coffee)
    names = [f"k{i}" for i in range(RACE_JOBS)]
    for name in names:
        (layout["u"] / name).write_bytes(photo)
        (layout["outside"] / name).write_bytes(OWNER_KEYS)
        enqueue_scan(redis_client, source=f"u/{name}", upload_id=f"m-{name}", context=MINOR)
    flipper()
    run_burst(redis_client, service)
    assert all((layout["outside"] / n).read_bytes() == OWNER_KEYS for n in names)
    assert redis_client.xlen("photosentry:verdicts") == RACE_JOBS
    assert leftovers(layout["outside"], real_dir(layout["u"], layout["link"])) == []


# -- the review host: putting a released photo back --------------------------------------------------


def test_a_release_never_restores_through_a_folder_swapped_for_a_symlink(
        swappable: None, redis_client: redis.Redis, service: ScanService, layout: dict[str, Path]) -> None:
    from photosentry.review.decisions import Reviewer

    upload = b"unreadable, held for a moderator " * 10
    (layout["u"] / "authorized_keys").write_bytes(upload)
    job = enqueue_scan(redis_client, source="u/authorized_keys", upload_id="r-1")
    run_burst(redis_client, service)
    assert verdict_of(redis_client, job)["action"] == "quarantine"
    assert not (layout["u"] / "authorized_keys").exists()  # moved into the quarantine store
    reviewer = Reviewer(redis_client, home=Path(service.settings.data_dir),
                        source_roots=service.settings.source_roots)
    [item] = reviewer.queue.pending(limit=10)
    item_id = item.item_id
    resolve = reviewer.roots.resolve

    def resolve_then_swap(raw: object) -> tuple[Path, Path]:
        found = resolve(raw)
        exchange(layout["u"], layout["link"])  # root/u -> the victim's folder, once it was checked
        return found

    reviewer.roots.resolve = resolve_then_swap  # type: ignore[method-assign]
    outcome = reviewer.release(item_id, actor="alice", reason="fine", take_lease=True, deliver=False)
    assert outcome.effects["restored_to"] is None and "not restored" in outcome.effects["restore_note"]
    assert list(layout["outside"].iterdir()) == []
    # Swapped back: the folder it came from, reached without a symlink, gets it.
    reviewer.roots.resolve = resolve  # type: ignore[method-assign]
    exchange(layout["u"], layout["link"])
    assert reviewer._restore(reviewer.queue.get(item_id).record, upload)["restored_to"] == \
        str(layout["u"].resolve() / "authorized_keys")
    assert (layout["u"] / "authorized_keys").read_bytes() == upload
    assert leftovers(layout["u"], layout["outside"]) == []
