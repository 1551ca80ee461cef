"""The `photosentry` command end to end: real photos, real model, real SQLite bank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from photosentry.cli import cli

from .corpus import Corpus

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def scan_json(*paths: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict[str, dict]]:
    code, out = run("scan", "--json", "--threads", "1", *extra, *map(str, paths))
    verdicts = [json.loads(line) for line in out.splitlines() if line.strip()]
    return code, {Path(v["subject"]).name: v for v in verdicts}


def ban(path: Path, *extra: str) -> str:
    code, out = run("ban", "add", str(path), "--by", "alice", "--reason", "ticket 881", *extra)
    assert code == 0, out
    return out


def test_banned_photo_copies_blocked_others_allowed_hostile_quarantined(corpus: Corpus, data_dir: Path) -> None:
    ban(corpus.banned)
    code, verdicts = scan_json(corpus.root)

    assert code == 1  # some photos were quarantined or blocked
    every_file = [p for p in corpus.root.rglob("*") if p.is_file()]
    assert len(verdicts) == len(every_file), "the scan must go on past bad files"
    for name, path in corpus.copies.items():
        v = verdicts[path.name]
        assert v["action"] == "block", (name, v["reasons"])
        assert v["reasons"][0]["code"] == "bank_match"
        assert v["matches"] and all(m["bank"] == "banned" for m in v["matches"])
        assert v["scores"] == [], "a block match skips the classifier"
    for path in corpus.clean.values():
        v = verdicts[path.name]
        assert v["action"] == "allow", (path.name, v["reasons"])
        assert v["reasons"] == [{"code": "clean", "action": "allow", "text": v["reasons"][0]["text"]}]
        assert v["scores"][0]["model"] == "open_nsfw"
        assert v["matches"] == [], "an unrelated photo must match nothing"
    for reason, path in corpus.hostile.items():
        v = verdicts[path.name]
        assert v["action"] == "quarantine", (path.name, v)
        assert v["reasons"][0]["code"] == reason
        assert v["hashes"]["sha256"]


def test_clean_photos_exit_zero_and_table_output(corpus: Corpus, data_dir: Path) -> None:
    code, out = run("scan", "--threads", "1", *map(str, corpus.clean.values()))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ACTION", "REASON", "DETAIL"]
    assert sum(line.startswith("allow ") for line in lines) == len(corpus.clean)
    assert f"{len(corpus.clean)} photos: {len(corpus.clean)} allow, 0 quarantine, 0 block" in out


def test_remove_lifts_the_ban_and_keeps_history(corpus: Corpus, data_dir: Path) -> None:
    added = ban(corpus.banned, "--label", "rocket")
    rows = [line.split() for line in added.splitlines() if line.strip()[:1].isdigit()]
    ids = [row[0] for row in rows]
    # sha256, md5, pdq, phash, dhash, the PDQ of its crops and rotations and its
    # keypoints and its mirror image's: derived data only, never the photo itself.
    tags = [row[2].split(":")[0] for row in rows]
    assert tags[:5] == ["sha256", "md5", "pdq", "phash", "dhash"] and tags[-2:] == ["orb", "orb"]
    assert set(tags[5:-2]) == {"pdq"} and len(tags[5:-2]) >= 10
    copy = corpus.copies["reencoded_q50"]
    assert scan_json(copy)[1][copy.name]["action"] == "block"

    code, out = run("ban", "remove", *ids, "--by", "bob", "--reason", "appeal 12 granted")
    assert code == 0, out
    code, verdicts = scan_json(copy)
    assert (code, verdicts[copy.name]["action"]) == (0, "allow")

    code, out = run("ban", "list")
    assert "rocket" not in out
    code, out = run("ban", "list", "--all", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["removed_by"] for r in rows} == {"bob"}
    assert {r["removed_reason"] for r in rows} == {"appeal 12 granted"}
    assert all(not r["active"] and r["added_by"] == "alice" for r in rows)


def test_ban_by_hash_and_group_remove(corpus: Corpus, data_dir: Path) -> None:
    from photosentry.decode import decode
    from photosentry.hashes.signals import hash_image

    data = corpus.banned.read_bytes()
    decoded = decode(data)
    pdq = hash_image(data, decoded.frames, decoded.frame_indices).frames[0].hashes[0]
    code, out = run("ban", "add", "--hash", f"pdq:{pdq.value}", "--bank", "csam", "--by", "importer", "--reason", "list 7")
    assert code == 0, out
    mirrored = corpus.copies["mirrored"]
    v = scan_json(mirrored)[1][mirrored.name]
    assert v["action"] == "block" and v["matches"][0]["algorithm"] == "pdq" and v["matches"][0]["variant"] != 0

    ban(corpus.banned)
    sha = hash_image(data, decoded.frames, decoded.frame_indices).sha256
    code, listed = run("ban", "list", "--json")
    own = [json.loads(line) for line in listed.splitlines()]
    assert sum(e["group"] == sha for e in own) > 5  # its hashes, derived hashes and keypoints
    code, out = run("ban", "remove", "--group", sha, "--by", "bob", "--reason", "dup")
    assert code == 0 and out.count("removed") == sum(e["group"] == sha for e in own), out
    code, listed = run("ban", "list", "--json")
    assert [json.loads(line)["group"] for line in listed.splitlines()] == [""]  # the --hash entry stays


def test_minors_profile_from_context(corpus: Corpus, data_dir: Path) -> None:
    photo = corpus.clean["astronaut"]
    _, plain = scan_json(photo)
    _, minors = scan_json(photo, extra=("--context", "recipient_is_minor=true"))
    assert plain[photo.name]["profile"] == "default"
    assert minors[photo.name]["profile"] == "minors"
    assert minors[photo.name]["context"] == {"recipient_is_minor": "true"}


@pytest.mark.parametrize(
    "args",
    [
        ("scan", "/no/such/path"),
        ("scan",),
        ("scan", ".", "--context", "novalue"),
        ("ban", "add", "--hash", "pdq:1234", "--by", "a", "--reason", "r"),
        ("ban", "add", "--hash", "nope:abcd", "--by", "a", "--reason", "r"),
        ("ban", "add", "--hash", "phash:" + "0" * 16, "--by", "a", "--reason", "r"),
        ("ban", "add", "--hash", "phash:c0371bec1be51267", "--reason", "no actor"),
        ("ban", "add", "--by", "a", "--reason", "nothing to add"),
        ("ban", "remove", "--by", "a", "--reason", "r"),
        ("ban", "remove", "999", "--by", "a", "--reason", "r"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], data_dir: Path) -> None:
    code, out = run(*args)
    assert code == 2, out
    assert "Error" in out


def test_ban_add_rejects_unreadable_image(corpus: Corpus, data_dir: Path) -> None:
    code, out = run("ban", "add", str(corpus.hostile["unreadable"]), "--by", "a", "--reason", "r")
    assert code == 2 and "unreadable" in out


def test_policy_that_would_allow_failures_is_a_setup_error(tmp_path: Path, corpus: Corpus, data_dir: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('version = "x"\n[models.open_nsfw]\nquarantine = 0.5\n[fail_closed]\nunreadable = "allow"\n')
    code, out = run("scan", "--policy", str(bad), str(corpus.banned))
    assert code == 3 and "unreadable" in out


def test_ban_configure_changes_match_distance(corpus: Corpus, data_dir: Path) -> None:
    ban(corpus.banned, "--bank", "strict")
    code, out = run("ban", "configure", "strict", "--pdq", "0", "--phash", "0", "--dhash", "0", "--by", "a", "--reason", "r")
    assert code == 0 and "pdq <= 0" in out
    resized = corpus.copies["resized_half"]
    v = scan_json(resized)[1][resized.name]
    # Every hash match within 0 (keypoints in place are not a distance: ban configure
    # sets the hashes' distances).
    assert all(m["distance"] == 0 for m in v["matches"] if m["algorithm"] != "orb")


def test_ban_configure_keeps_what_it_is_not_told(data_dir: Path) -> None:
    base = ("--by", "a", "--reason", "r")
    assert run("ban", "configure", "mods", "--pdq", "20", "--description", "look-alikes", *base)[0] == 0
    code, out = run("ban", "configure", "mods", "--phash", "6", *base)
    assert code == 0 and "pdq <= 20, phash <= 6, dhash <= 8" in out
    from photosentry.config import data_dir as home
    from photosentry.hashes.banks import SqliteBankStore

    with SqliteBankStore(home() / "banks.sqlite3") as store:
        assert store.bank("mods").description == "look-alikes"


@pytest.mark.parametrize(
    "command", [(), ("scan",), ("ban",), ("ban", "add"), ("ban", "list"), ("ban", "remove"), ("ban", "configure")]
)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    code, out = run(*command, "--help")
    assert code == 0 and "Usage:" in out and len(out.splitlines()) > 5


def test_readme_scan_command_runs_the_installed_script(data_dir: Path) -> None:
    """The README's first command, as a user runs it: the console script on examples/."""
    script = Path(sys.executable).with_name("photosentry")
    proc = subprocess.run(
        [str(script), "scan", "examples/photos"], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PHOTOSENTRY_HOME": str(data_dir)},
    )
    assert proc.returncode == 1, proc.stderr
    assert "quarantine not_an_image" in proc.stdout
    assert "quarantine unreadable" in proc.stdout
    assert "4 allow, 2 quarantine, 0 block" in proc.stdout
