"""Hash golden values against the reference libraries, and the hash text codecs."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import imagehash
import pytest
from PIL import Image
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_bytes

from photosentry.decode import decode
from photosentry.errors import InvalidHash
from photosentry.hashes.codecs import Algorithm, bits_to_hex, hamming, hex_to_words, normalize, parse_tagged
from photosentry.hashes.signals import (
    _DIHEDRAL,
    SIGNALS,
    DHashSignal,
    ImageHashes,
    Md5Signal,
    PdqSignal,
    PHashSignal,
    Sha256Signal,
    hash_bytes,
    hash_image,
)

from . import corpus as corpus_mod

PDQ_SAMPLE = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


@functools.cache  # the corpus is read-only and session-scoped
def hashes_of(path: Path) -> ImageHashes:
    data = path.read_bytes()
    image = decode(data)
    return hash_image(data, image.frames, image.frame_indices)


def photos(corpus: corpus_mod.Corpus) -> dict[str, Path]:
    return {"banned": corpus.banned, **corpus.clean, **corpus.copies}


# -- golden values against the reference implementations --------------------------


def test_pdq_equals_threatexchange(corpus: corpus_mod.Corpus) -> None:
    for name, path in photos(corpus).items():
        ours = hashes_of(path).frames[0].get(Algorithm.PDQ)
        value, quality = pdq_from_bytes(path.read_bytes())
        assert ours is not None
        assert (ours.value, ours.quality) == (value, quality), name


def test_phash_and_dhash_equal_imagehash(corpus: corpus_mod.Corpus) -> None:
    for name, path in photos(corpus).items():
        frame = hashes_of(path).frames[0]
        with Image.open(path) as img:
            expected_phash = str(imagehash.phash(img))
            expected_dhash = str(imagehash.dhash(img))
        assert frame.get(Algorithm.PHASH).value == expected_phash, name
        assert frame.get(Algorithm.DHASH).value == expected_dhash, name


def test_a_scans_quick_thumbnails_stay_within_two_bits_of_what_a_ban_stores(corpus: corpus_mod.Corpus) -> None:
    # A scan makes its pHash and dHash thumbnails after a box reduction (1 ms saved a
    # photo, perceptual.QUICK_REDUCING_GAP); a ban stores imagehash's exact values. On
    # photos with detail (dHash margin >= 6, all but flat pictures) they stay close.
    moved = []
    for name, path in photos(corpus).items():
        data = path.read_bytes()
        image = decode(data)
        exact = hash_image(data, image.frames, image.frame_indices).frames[0]
        quick = hash_image(data, image.frames, image.frame_indices, quick=True).frames[0]
        assert exact.get(Algorithm.PDQ) == quick.get(Algorithm.PDQ), name
        for algorithm in (Algorithm.PHASH, Algorithm.DHASH):
            a, b = exact.get(algorithm), quick.get(algorithm)
            assert a is not None and b is not None
            if not a.weak:
                moved.append(hamming(a.value, b.value))
    assert moved and max(moved) <= 6 and sum(moved) / len(moved) <= 2, moved


def test_every_variant_equals_the_reference_libraries(corpus: corpus_mod.Corpus) -> None:
    """The variants come from one DCT each (hashes/perceptual.py); they must equal what
    pdqhash.compute_dihedral gives and what imagehash gives on each transposed thumbnail."""
    import numpy as np
    import pdqhash

    for name, path in photos(corpus).items():
        rgb = decode(path.read_bytes()).frames[0]
        image = Image.fromarray(rgb)
        vectors, quality = pdqhash.compute_dihedral(np.ascontiguousarray(rgb))
        pdq = PdqSignal.hash_frame(rgb, image)
        assert pdq.variants == tuple(bits_to_hex(v) for v in vectors), name
        assert pdq.quality == quality, name
        thumb = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
        expected = tuple(str(imagehash.phash(thumb if t is None else thumb.transpose(t))) for t in _DIHEDRAL)
        assert PHashSignal.hash_frame(rgb, image).variants == expected, name
        small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
        mirrored = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert DHashSignal.hash_frame(rgb, image).variants == (str(imagehash.dhash(small)),
                                                               str(imagehash.dhash(mirrored))), name


def test_tiny_frames_get_pdqs_empty_hash() -> None:
    import numpy as np
    import pdqhash

    rgb = np.full((4, 40, 3), 200, dtype=np.uint8)
    vectors, quality = pdqhash.compute_dihedral(rgb)
    ours = PdqSignal.hash_frame(rgb, Image.fromarray(rgb))
    assert ours.variants == tuple(bits_to_hex(v) for v in vectors) == ("0" * 64,) * 8
    assert ours.quality == quality == 0


def test_imagehash_round_trip(corpus: corpus_mod.Corpus) -> None:
    frame = hashes_of(corpus.banned).frames[0]
    for algorithm, reference in ((Algorithm.PHASH, imagehash.phash), (Algorithm.DHASH, imagehash.dhash)):
        text = frame.get(algorithm).value
        parsed = imagehash.hex_to_hash(text)
        assert str(parsed) == text
        with Image.open(corpus.banned) as img:
            assert parsed - reference(img) == 0


def test_exact_hashes_equal_hashlib(corpus: corpus_mod.Corpus) -> None:
    for name, path in photos(corpus).items():
        data = path.read_bytes()
        hashes = hashes_of(path)
        assert hashes.sha256 == hashlib.sha256(data).hexdigest() == Sha256Signal.hash_bytes(data), name
        assert hashes.md5 == hashlib.md5(data).hexdigest() == Md5Signal.hash_bytes(data), name
    empty = hash_bytes(b"")
    assert empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert empty.frames == ()


def test_pdq_variants(corpus: corpus_mod.Corpus) -> None:
    original = hashes_of(corpus.banned).frames[0].get(Algorithm.PDQ)
    assert len(original.variants) == 8
    assert original.variants[0] == original.value
    assert len(set(original.variants)) == 8

    mirrored = hashes_of(corpus.copies["mirrored"]).frames[0].get(Algorithm.PDQ)
    # As is, the mirror is unrelated; against the original's variants it is a match.
    assert hamming(mirrored.value, original.value) > PdqSignal.default_distance
    assert min(hamming(mirrored.value, v) for v in original.variants) <= PdqSignal.default_distance

    rotated = hashes_of(corpus.copies["rotated_90"]).frames[0].get(Algorithm.PDQ)
    assert min(hamming(rotated.value, v) for v in original.variants) <= PdqSignal.default_distance


def test_phash_and_dhash_variants(corpus: corpus_mod.Corpus) -> None:
    original = hashes_of(corpus.banned).frames[0]
    mirrored = hashes_of(corpus.copies["mirrored"]).frames[0]
    for algorithm in (Algorithm.PHASH, Algorithm.DHASH):
        ours = original.get(algorithm)
        assert ours.variants[0] == ours.value
        assert min(hamming(mirrored.get(algorithm).value, v) for v in ours.variants) <= SIGNALS[
            algorithm
        ].default_distance
    assert len(original.get(Algorithm.PHASH).variants) == 8
    assert len(original.get(Algorithm.DHASH).variants) == 2


def test_phash_variants_track_transposed_photos(corpus: corpus_mod.Corpus) -> None:
    """Variants come from the transposed 32x32 thumbnail; hashing each transposed photo
    agrees up to resampling rounding (a couple of bits near the median)."""
    for name in ("banned", "astronaut", "retina"):
        path = corpus.banned if name == "banned" else corpus.clean[name]
        variants = hashes_of(path).frames[0].get(Algorithm.PHASH).variants
        image = Image.fromarray(decode(path.read_bytes()).frames[0])
        for variant, transpose in zip(variants, _DIHEDRAL, strict=True):
            full = str(imagehash.phash(image if transpose is None else image.transpose(transpose)))
            assert hamming(variant, full) <= 4, (name, transpose)


def test_copies_near_and_clean_photos_far(corpus: corpus_mod.Corpus) -> None:
    banned = hashes_of(corpus.banned).frames[0].get(Algorithm.PDQ)
    for name in ("reencoded_q50", "resized_half", "as_png"):
        copy = hashes_of(corpus.copies[name]).frames[0].get(Algorithm.PDQ)
        assert hamming(copy.value, banned.value) <= PdqSignal.default_distance, name
    for name, path in corpus.clean.items():
        clean = hashes_of(path).frames[0].get(Algorithm.PDQ)
        assert min(hamming(clean.value, v) for v in banned.variants) > 64, name


def test_image_hashes_to_dict(corpus: corpus_mod.Corpus) -> None:
    out = hashes_of(corpus.banned).to_dict()
    # The 64-bit hashes' score is dHash's thumbnail margin, which pHash carries too.
    assert set(out) == {"sha256", "md5", "pdq", "pdq_quality", "phash", "dhash", "phash_quality", "dhash_quality"}
    assert out["phash_quality"] == out["dhash_quality"]
    assert out["pdq_quality"] == 100


def test_signal_classes() -> None:
    assert [s.algorithm for s in (PdqSignal, PHashSignal, DHashSignal)] == [
        Algorithm.PDQ,
        Algorithm.PHASH,
        Algorithm.DHASH,
    ]
    assert set(SIGNALS) == {a for a in Algorithm if a.is_hash}  # local features are no hash
    assert SIGNALS[Algorithm.SHA256].default_distance == 0


# -- codecs ---------------------------------------------------------------------------


def test_normalize_accepts_and_canonicalises() -> None:
    assert normalize(Algorithm.PDQ, "  " + PDQ_SAMPLE.upper() + "\n") == PDQ_SAMPLE
    assert normalize(Algorithm.PHASH, "ba8c84536bd3c366") == "ba8c84536bd3c366"
    assert normalize(Algorithm.MD5, "d41d8cd98f00b204e9800998ecf8427e") == "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize(
    "algorithm, value",
    [
        (Algorithm.PDQ, PDQ_SAMPLE[:-1]),  # one digit short
        (Algorithm.PDQ, PDQ_SAMPLE + "0"),  # one digit long
        (Algorithm.PHASH, PDQ_SAMPLE),  # a PDQ where a pHash belongs
        (Algorithm.PHASH, "ba8c84536bd3c36g"),  # not hex
        (Algorithm.SHA256, "x" * 64),
        (Algorithm.PDQ, "0" * 64),  # degenerate
        (Algorithm.DHASH, "F" * 16),  # degenerate
        (Algorithm.MD5, ""),
    ],
)
def test_normalize_rejects(algorithm: Algorithm, value: str) -> None:
    with pytest.raises(InvalidHash):
        normalize(algorithm, value)


def test_invalid_hash_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalize(Algorithm.PDQ, "nope")


def test_parse_tagged() -> None:
    assert parse_tagged(f"pdq:{PDQ_SAMPLE}") == (Algorithm.PDQ, PDQ_SAMPLE)
    assert parse_tagged("PHash:BA8C84536BD3C366") == (Algorithm.PHASH, "ba8c84536bd3c366")
    for bad in (f"nope:{PDQ_SAMPLE}", PDQ_SAMPLE, "pdq:1234", "phash:"):
        with pytest.raises(InvalidHash):
            parse_tagged(bad)


def test_hamming() -> None:
    assert hamming("ba8c84536bd3c366", "ba8c84536bd3c366") == 0
    assert hamming("0000000000000001", "0000000000000003") == 1
    assert hamming("ffffffffffffffff", "0000000000000000") == 64
    assert hamming("8000000000000000", "0000000000000001") == 2
    with pytest.raises(InvalidHash):
        hamming("abcd", "abcdef")


def test_bits_and_words() -> None:
    bits = [1, 0, 0, 0, 0, 0, 0, 0] + [0] * 55 + [1]
    assert bits_to_hex(bits) == "8000000000000001"
    words = hex_to_words(PDQ_SAMPLE)
    assert words.shape == (4,)
    assert "".join(f"{int(w):016x}" for w in words) == PDQ_SAMPLE


def test_algorithm_parse() -> None:
    assert Algorithm.parse(" PDQ ") is Algorithm.PDQ
    assert Algorithm.PDQ.bits == 256 and Algorithm.PHASH.bits == 64
    assert Algorithm.PDQ.is_perceptual and not Algorithm.SHA256.is_perceptual
    with pytest.raises(InvalidHash):
        Algorithm.parse("crc32")
