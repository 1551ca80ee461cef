"""scripts/measure_false_matches.py: its vectorised distances are the matcher's, its pair
bookkeeping keeps a picture's own copies out of the false matches, and it has --help."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import measure_false_matches as mfm

skimage_data = pytest.importorskip("skimage.data")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def items() -> list[mfm.Item]:
    out = []
    for index, name in enumerate(("astronaut", "camera", "coffee")):
        img = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        for kind, shown in (("original", img), ("border 8%", mfm.border(img, []))):
            stored, variants, measures = mfm.hash_item(_jpeg(shown), as_query=kind != "original")
            out.append(mfm.Item(name, kind, frozenset({index}), stored, variants, measures))
    return out


def test_distances_are_the_minimum_over_the_query_variants(items: list[mfm.Item]) -> None:
    for algorithm in mfm.PERCEPTUAL:
        got = mfm.distance_matrix(items, items, algorithm, chunk=2)
        for qi, q in enumerate(items):
            for si, s in enumerate(items):
                want = min(int(np.bitwise_count(v ^ s.stored[algorithm]).sum()) for v in q.variants[algorithm])
                assert got[qi, si] == want


def test_a_picture_and_its_framings_are_never_counted_as_false(items: list[mfm.Item]) -> None:
    unrelated = mfm.unrelated_mask(items, items)
    for qi, q in enumerate(items):
        for si, s in enumerate(items):
            assert unrelated[qi, si] == (q.name != s.name)
    collage = mfm.Item("astronaut", "collage 2x2", frozenset({0, 2}))
    assert mfm.unrelated_mask([collage], items)[0].tolist() == [False, False, True, True, False, False]


def test_the_tail_fit_follows_a_normal_distribution() -> None:
    rng = np.random.default_rng(17)
    hist = np.bincount(np.clip(np.round(rng.normal(100, 8, 2_000_000)), 0, 256).astype(int), minlength=257)
    fit = mfm.probit_tail_fit(hist, int(hist.sum()))
    assert fit is not None
    # P(d <= 68) of N(100, 8) is Phi(-3.94) = 4.1e-5.
    assert mfm.tail_probability(fit, 68) == pytest.approx(4.1e-5, rel=0.3)


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        mfm.main(["--help"])
    assert exit_.value.code == 0
    assert "--e2e-ban" in capsys.readouterr().out


def test_framings_keep_the_picture(tmp_path: Path) -> None:
    img = Image.new("RGB", (300, 200), (200, 30, 30))
    for framing in mfm.FRAMINGS:
        out = framing.make(img, [img] * framing.others)
        assert out.mode == "RGB" and min(out.size) > 0
