"""Hash text formats: parse, validate and convert, compatible with the ecosystem.

- pHash and dHash use imagehash's ``str(hash)`` form: the bits row by row, hex.
- PDQ uses ThreatExchange's 64-hex-digit form (bit 0 of the hash vector is the most
  significant bit of the first digit).
- SHA-256 and MD5 are lowercase hex.
Written as ``algo:value`` wherever the algorithm is not implied. Each algorithm's
width (so its number of hex digits) comes from the registry in :mod:`.algorithms`.
"""

from __future__ import annotations

import string

import numpy as np

from ..errors import InvalidHash
from .algorithms import Algorithm

#: ``Algorithm`` is defined with its registry in :mod:`.algorithms`; most code imports it from here.
__all__ = ["Algorithm", "bits_to_hex", "hamming", "hex_to_words", "normalize", "parse_tagged"]

_HEX = frozenset(string.hexdigits)


def normalize(algorithm: Algorithm, value: str) -> str:
    """Validate ``value`` for ``algorithm`` and return its canonical lowercase hex.

    Raises:
        InvalidHash: wrong length, non-hex characters, or a degenerate all-zero or
            all-one hash (what hashers emit for blank images; it would match noise).
    """
    text = value.strip().lower()
    digits = algorithm.spec.hex_digits
    if len(text) != digits:
        raise InvalidHash(
            f"{value!r} is not a valid {algorithm.value} hash: expected {digits} hex digits, got {len(text)}"
        )
    if not set(text) <= _HEX:
        raise InvalidHash(f"{value!r} is not a valid {algorithm.value} hash: not hexadecimal")
    if set(text) in ({"0"}, {"f"}):
        raise InvalidHash(f"{value!r} is a degenerate {algorithm.value} hash (all bits equal)")
    return text


def parse_tagged(text: str) -> tuple[Algorithm, str]:
    """Parse ``algo:value`` (e.g. ``pdq:8792...``) into its algorithm and canonical hex."""
    algo, sep, value = text.partition(":")
    if not sep:
        raise InvalidHash(f"{text!r} is not of the form algo:value (e.g. pdq:<64 hex digits>)")
    algorithm = Algorithm.parse(algo)
    return algorithm, normalize(algorithm, value)


def bits_to_hex(bits: np.ndarray) -> str:
    """Pack a 0/1 vector (most significant bit first) into lowercase hex."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hex_to_words(value: str) -> np.ndarray:
    """Hex to big-endian uint64 words, the layout the Hamming index scans."""
    raw = bytes.fromhex(value)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def hamming(a: str, b: str) -> int:
    """Hamming distance between two equal-length hex hashes."""
    if len(a) != len(b):
        raise InvalidHash(f"cannot compare hashes of different lengths ({len(a)} and {len(b)} digits)")
    return (int(a, 16) ^ int(b, 16)).bit_count()
