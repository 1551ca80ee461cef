"""Source confinement: a path job reads only regular files inside its roots."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from photosentry.errors import UnreadableImage
from photosentry.worker.sources import (
    SOURCE_REFUSED,
    BytesSource,
    PathSource,
    SourceRefused,
    SourceRoots,
    decode_inline,
)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sub" / "ok.jpg").write_bytes(b"photo")
    (outside / "secret.jpg").write_bytes(b"secret")
    return {"root": root, "outside": outside}


def test_reads_relative_and_absolute_paths_inside_the_root(tree: dict[str, Path]) -> None:
    roots = SourceRoots([tree["root"]])
    rel = roots.fetch(PathSource("sub/ok.jpg"), max_bytes=100)
    absolute = roots.fetch(PathSource(str(tree["root"] / "sub" / "ok.jpg")), max_bytes=100)
    assert rel.data == absolute.data == b"photo"
    assert rel.path == (tree["root"] / "sub" / "ok.jpg").resolve()
    assert SourceRoots.still_same(rel)


@pytest.mark.parametrize(
    "raw",
    ["../outside/secret.jpg", "sub/../../outside/secret.jpg", "sub/../sub/ok.jpg", "sub/ok.jpg\x00.png", "", 7],
)
def test_dotdot_nul_and_non_strings_are_refused(tree: dict[str, Path], raw: object) -> None:
    with pytest.raises(SourceRefused) as info:
        SourceRoots([tree["root"]]).resolve(raw)
    assert info.value.code == SOURCE_REFUSED


def test_absolute_path_outside_and_symlink_out_are_refused_without_reading(tree: dict[str, Path]) -> None:
    roots = SourceRoots([tree["root"]])
    secret = tree["outside"] / "secret.jpg"
    (tree["root"] / "link.jpg").symlink_to(secret)
    (tree["root"] / "linkdir").symlink_to(tree["outside"], target_is_directory=True)
    before = os.stat(secret).st_atime_ns
    for raw in (str(secret), "link.jpg", "linkdir/secret.jpg"):
        with pytest.raises(SourceRefused, match="outside"):
            roots.fetch(PathSource(raw), max_bytes=100)
    assert os.stat(secret).st_atime_ns == before


def test_symlink_within_the_root_is_followed(tree: dict[str, Path]) -> None:
    (tree["root"] / "alias.jpg").symlink_to(tree["root"] / "sub" / "ok.jpg")
    assert SourceRoots([tree["root"]]).fetch(PathSource("alias.jpg"), max_bytes=100).data == b"photo"


def test_non_regular_files_and_missing_files_are_refused(tree: dict[str, Path]) -> None:
    os.mkfifo(tree["root"] / "pipe.jpg")  # opening a FIFO for reading would block forever
    roots = SourceRoots([tree["root"]])
    with pytest.raises(SourceRefused, match="not a regular file"):
        roots.fetch(PathSource("pipe.jpg"), max_bytes=100)
    with pytest.raises(SourceRefused, match="not a regular file"):
        roots.fetch(PathSource("sub"), max_bytes=100)
    with pytest.raises(SourceRefused, match="cannot be resolved"):
        roots.fetch(PathSource("missing.jpg"), max_bytes=100)


def test_no_roots_refuses_every_path_but_bytes_still_work(tree: dict[str, Path]) -> None:
    roots = SourceRoots([])
    with pytest.raises(SourceRefused, match="no source roots"):
        roots.fetch(PathSource(str(tree["root"] / "sub" / "ok.jpg")), max_bytes=100)
    assert roots.fetch(BytesSource(b"abc"), max_bytes=100).data == b"abc"


def test_size_limits_for_files_and_inline_bytes(tree: dict[str, Path]) -> None:
    roots = SourceRoots([tree["root"]])
    with pytest.raises(UnreadableImage) as info:
        roots.fetch(PathSource("sub/ok.jpg"), max_bytes=3)
    assert info.value.code == "too_large"
    assert decode_inline(base64.b64encode(b"x" * 10).decode(), max_bytes=10).data == b"x" * 10
    with pytest.raises(UnreadableImage) as info:
        decode_inline(base64.b64encode(b"x" * 100).decode(), max_bytes=10)
    assert info.value.code == "too_large"
    with pytest.raises(SourceRefused, match="base64"):
        decode_inline("not base64!!", max_bytes=10)


def test_a_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        SourceRoots([tmp_path / "nope"])
