"""`photosentry ban import/export/check/history/stats/snapshot`, including hostile input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from photosentry.cli import cli

from .corpus import Corpus

WHO = ("--by", "importer", "--reason", "list 2026-11")
PDQ = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
PDQ2 = "1234567890abcdef" * 4
MD5 = "0123456789abcdef0123456789abcdef"
PHASH = "ba8c84536bd3c366"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_plain_list_import_merges_duplicates_and_writes_a_snapshot(tmp_path: Path, data_dir: Path) -> None:
    text = f"# industry list\npdq {PDQ}\nmd5:{MD5}\n{MD5}\nphash {PHASH}\n\npdq {PDQ}\n"
    code, out = run("ban", "import", write(tmp_path, "list.txt", text.encode()), "--bank", "csam", *WHO)
    assert code == 0, out
    assert "7 lines: 5 valid, 3 new, 2 merged" in out and "snapshot v3" in out
    code, out = run("ban", "import", write(tmp_path, "list.txt", text.encode()), "--bank", "csam", *WHO)
    assert "0 new, 5 merged" in out
    code, out = run("ban", "stats")
    assert code == 0 and "csam" in out and "bank version 3" in out


def test_bad_lines_fail_the_whole_import_with_line_numbers(tmp_path: Path, data_dir: Path) -> None:
    text = (f"pdq {PDQ}\npdq {PDQ[:-1]}\nmd5 {'z' * 32}\nsha1 {MD5}\npdq {'0' * 64}\n"
            f"{PDQ2}\nphash {PHASH}\n").encode()
    path = write(tmp_path, "bad.txt", text)
    result = CliRunner().invoke(cli, ["ban", "import", path, *WHO])
    assert result.exit_code == 1
    err = result.output
    for line, words in ((2, "expected 64 hex digits"), (3, "not hexadecimal"), (4, "not a known hash algorithm"),
                        (5, "degenerate"), (6, "ambiguous")):
        assert f"line {line}: " in err and words in err, err
    assert "5 bad line(s) of 7; nothing imported" in err
    assert run("ban", "list", "--json")[1].count("{") == 0
    code, out = run("ban", "import", path, "--skip-invalid", *WHO)
    assert code == 0 and "2 new" in out and "5 skipped" in out


def test_hostile_files_fail_cleanly(tmp_path: Path, data_dir: Path) -> None:
    huge = b"pdq " + b"a" * 200_000 + b"\n"
    cases = {
        "huge line": (f"pdq {PDQ}\n".encode() + huge + f"md5 {MD5}\n".encode(), "line 2: line longer than"),
        "nul": (f"md5 {MD5}\n".encode() + b"md5 \x00\x00\n", "line 2: contains NUL bytes"),
        "latin-1": (f"md5 {MD5}\n".encode() + "md5 caf\xe9\n".encode("latin-1"), "line 2: not UTF-8"),
        "binary": (bytes(range(256)) * 50, "line 1:"),
        "huge no newline": (b"x" * 3_000_000, "line 1: line longer than"),
        "json garbage": (b'{"algorithm": "md5", "value": ' + b"[" * 5000 + b"\n", "line 1:"),
    }
    for name, (data, expected) in cases.items():
        result = CliRunner().invoke(cli, ["ban", "import", write(tmp_path, "f.txt", data), *WHO])
        assert result.exit_code == 1, name
        assert expected in result.output, (name, result.output[:500])
        assert "nothing imported" in result.output
    assert run("ban", "list", "--json")[1].count("{") == 0


def test_export_round_trips_through_import(tmp_path: Path, data_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run("ban", "add", "--hash", f"pdq:{PDQ}", "--bank", "csam", "--label", "series, \"12\"", *WHO)
    run("ban", "add", "--hash", f"md5:{MD5}", "--hash", f"phash:{PHASH}", *WHO)
    for fmt in ("csv", "jsonl"):
        code, exported = run("ban", "export", "--format", fmt)
        assert code == 0
        other = tmp_path / f"other-{fmt}"
        monkeypatch.setenv("PHOTOSENTRY_HOME", str(other))
        code, out = run("ban", "import", write(tmp_path, f"export.{fmt}", exported.encode()), *WHO)
        assert code == 0 and "3 new" in out, out
        _, listed = run("ban", "list", "--json")
        got = sorted((e["algorithm"], e["value"], e["bank"], e["label"]) for e in map(json.loads, listed.splitlines()))
        assert got == sorted([("pdq", PDQ, "csam", 'series, "12"'), ("md5", MD5, "banned", ""),
                              ("phash", PHASH, "banned", "")])
        monkeypatch.setenv("PHOTOSENTRY_HOME", str(data_dir))


def test_te_pdq_list(tmp_path: Path, data_dir: Path) -> None:
    data = f"{PDQ},100\n{PDQ2},87,extra\n{PDQ2},101\n".encode()
    result = CliRunner().invoke(cli, ["ban", "import", write(tmp_path, "te.csv", data), "--format", "te-pdq", *WHO])
    assert result.exit_code == 1 and "line 3: PDQ quality must be an integer 0-100" in result.output
    code, out = run("ban", "import", write(tmp_path, "te.csv", data), "--skip-invalid", "--bank", "csam", *WHO)
    assert code == 0 and "2 new" in out


def test_check_and_history(corpus: Corpus, data_dir: Path) -> None:
    run("ban", "add", str(corpus.banned), "--bank", "csam", *WHO)
    code, out = run("ban", "check", str(corpus.banned), str(next(iter(corpus.clean.values()))))
    assert code == 1
    assert "bank csam (ban) sha256 distance 0" in out and "bank csam (ban) pdq distance 0" in out
    assert f"{next(iter(corpus.clean.values()))}: no match" in out
    code, out = run("ban", "remove", "1", "--by", "bob", "--reason", "appeal 7")
    code, out = run("ban", "history", "--limit", "3")
    lines = out.splitlines()
    assert "bob" in lines[1] and "remove" in lines[1] and "appeal 7" in lines[1]
    assert "importer" in lines[2] and "add" in lines[2]
    code, out = run("ban", "history", "--entry", "1", "--json")
    assert [json.loads(line)["op"] for line in out.splitlines()] == ["remove", "add"]


def test_an_image_bans_export_round_trips_with_its_keypoints(tmp_path: Path, data_dir: Path, corpus: Corpus,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Red team: an `orb` line (18,432 hex digits) was over the 8 KB line limit, so an
    # image ban's own export could not be imported on another instance.
    code, _ = run("ban", "add", str(corpus.banned), *WHO)
    assert code == 0
    code, exported = run("ban", "export", "--format", "jsonl")
    assert code == 0 and exported.count('"orb"') == 2
    monkeypatch.setenv("PHOTOSENTRY_HOME", str(tmp_path / "other"))
    code, out = run("ban", "import", write(tmp_path, "export.jsonl", exported.encode()), *WHO)
    assert code == 0, out
    _, listed = run("ban", "list", "--json")
    assert sum(json.loads(line)["algorithm"] == "orb" for line in listed.splitlines()) == 2
