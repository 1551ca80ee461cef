"""What a hash algorithm is: the one registry every other part reads.

An algorithm's width, its default match distance, when one of its hashes is too weak
to match on its own, the SQLite column that holds a bank's distance for it and the
``ban configure`` flag that sets it are facts of the algorithm, so they are written
here once (:data:`ALGORITHMS`) and read everywhere else: the codecs (text form), the
hashers (:mod:`.signals`), the banks, the matcher, the CLI and the scripts. Adding an
algorithm means adding its member and its :class:`AlgorithmSpec` here, and its hasher
in :mod:`.signals`; the registry checks itself when it is imported.

Every text form is lowercase hex of ``bits`` bits, as the ecosystem writes it:
imagehash's ``str(hash)`` for pHash and dHash, ThreatExchange's 64 hex digits for PDQ,
the usual digests for SHA-256 and MD5.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from .. import defaults
from ..errors import InvalidHash, RegistryError


class Algorithm(str, Enum):
    """Every hash algorithm a bank entry can hold."""

    #: SHA-256 of the file's bytes (exact match only).
    SHA256 = "sha256"
    #: MD5 of the file's bytes (exact match only; industry lists still ship it).
    MD5 = "md5"
    #: Meta's PDQ, 256 bits, robust to re-encoding and resizing; 8 dihedral variants.
    PDQ = "pdq"
    #: imagehash's DCT perceptual hash, 64 bits.
    PHASH = "phash"
    #: imagehash's difference hash, 64 bits.
    DHASH = "dhash"
    #: ORB keypoints of a banned image (hashes/localfeatures.py): matched by geometric
    #: verification, not by a distance; stored for image bans only.
    ORB = "orb"

    @property
    def spec(self) -> AlgorithmSpec:
        return ALGORITHMS[self]

    @property
    def bits(self) -> int:
        return self.spec.bits

    @property
    def is_perceptual(self) -> bool:
        return self.spec.perceptual

    @property
    def is_features(self) -> bool:
        return self.spec.features

    @property
    def is_exact(self) -> bool:
        """Matched on the file's exact bytes (SHA-256, MD5): neither a perceptual hash nor keypoints."""
        return not self.spec.perceptual and not self.spec.features

    @property
    def is_hash(self) -> bool:
        """Matched by a hash index (exactly or within a Hamming distance), not by features."""
        return not self.spec.features

    @classmethod
    def parse(cls, name: str) -> Algorithm:
        try:
            return cls(name.strip().lower())
        except ValueError:
            known = ", ".join(a.value for a in cls)
            raise InvalidHash(f"{name!r} is not a known hash algorithm (known: {known})") from None


@dataclass(frozen=True)
class AlgorithmSpec:
    """The facts of one algorithm."""

    algorithm: Algorithm
    bits: int
    #: The name as people write it, for help texts and messages ("PDQ", "pHash").
    label: str
    #: Matched within a Hamming distance (True) or exactly (False).
    perceptual: bool = False
    #: Largest Hamming distance that counts as a match unless a bank sets its own (0: exact).
    default_distance: int = 0
    #: The hasher's own quality score (0-100) below which a hash is weak: it is kept and
    #: reported, but a match on it alone decides nothing. None: the algorithm has no score.
    quality_threshold: int | None = None
    #: A set of local features (keypoints and descriptors), matched by geometric
    #: verification: no distance, no quality, not in the hash indexes.
    features: bool = False

    @property
    def hex_digits(self) -> int:
        return self.bits // 4

    @property
    def max_distance(self) -> int:
        """Largest distance a bank may set: at half the bits, unrelated hashes match."""
        return self.bits // 2 - 1 if self.perceptual else 0

    @property
    def distance_column(self) -> str:
        """The column of SQLite's ``banks`` table holding a bank's distance for it."""
        return f"{self.algorithm.value}_distance"

    @property
    def cli_option(self) -> str:
        """The ``ban configure`` flag that sets a bank's distance for it."""
        return f"--{self.algorithm.value}"

    def is_weak(self, quality: int | None) -> bool:
        """Whether a hash with this quality score is too weak to match on its own (a
        missing score counts as 0 for an algorithm that has one)."""
        return self.quality_threshold is not None and (quality or 0) < self.quality_threshold


def _registry(specs: Iterable[AlgorithmSpec]) -> Mapping[Algorithm, AlgorithmSpec]:
    """The specs by algorithm, checked: one per algorithm, and each one coherent."""
    out: dict[Algorithm, AlgorithmSpec] = {}
    for spec in specs:
        name = spec.algorithm.value
        if spec.algorithm in out:
            raise RegistryError(f"hash algorithm {name!r} is registered twice")
        if spec.bits <= 0 or spec.bits % (64 if spec.perceptual else 4):
            # The Hamming index reads perceptual hashes as 64-bit words.
            raise RegistryError(f"{name}: {spec.bits} bits is not a whole number of "
                                f"{'64-bit words' if spec.perceptual else 'hex digits'}")
        if spec.features and spec.perceptual:
            raise RegistryError(f"{name}: local features are matched by verification, not by a Hamming distance")
        if not spec.perceptual and (spec.default_distance or spec.quality_threshold is not None):
            raise RegistryError(f"{name} is matched exactly: it takes no distance and no quality threshold")
        if not 0 <= spec.default_distance <= spec.max_distance:
            raise RegistryError(f"{name}: default distance {spec.default_distance} is outside 0..{spec.max_distance}")
        out[spec.algorithm] = spec
    missing = [a.value for a in Algorithm if a not in out]
    if missing:
        raise RegistryError(f"hash algorithms without a spec: {', '.join(missing)}")
    return MappingProxyType(out)


#: Every algorithm's facts, in the order of :class:`Algorithm`.
ALGORITHMS: Mapping[Algorithm, AlgorithmSpec] = _registry([
    AlgorithmSpec(Algorithm.SHA256, 256, "SHA-256"),
    AlgorithmSpec(Algorithm.MD5, 128, "MD5"),
    AlgorithmSpec(Algorithm.PDQ, 256, "PDQ", perceptual=True, default_distance=defaults.PDQ_MATCH_DISTANCE,
                  quality_threshold=defaults.PDQ_QUALITY_THRESHOLD),
    # The 64-bit hashes' score is dHash's thumbnail margin (signals.hash_frame): the
    # median difference between neighbouring columns, in grey levels.
    AlgorithmSpec(Algorithm.PHASH, 64, "pHash", perceptual=True, default_distance=defaults.PHASH_MATCH_DISTANCE,
                  quality_threshold=defaults.SHORT_HASH_QUALITY_THRESHOLD),
    AlgorithmSpec(Algorithm.DHASH, 64, "dHash", perceptual=True, default_distance=defaults.DHASH_MATCH_DISTANCE,
                  quality_threshold=defaults.SHORT_HASH_QUALITY_THRESHOLD),
    AlgorithmSpec(Algorithm.ORB, defaults.FEATURE_COUNT * 36 * 8, "ORB features", features=True),
])

#: The perceptual algorithms, in registry order.
PERCEPTUAL: tuple[Algorithm, ...] = tuple(a for a, s in ALGORITHMS.items() if s.perceptual)
#: The algorithms a hash index matches (every one but local features), in registry order.
HASHES: tuple[Algorithm, ...] = tuple(a for a, s in ALGORITHMS.items() if not s.features)

__all__ = ["ALGORITHMS", "HASHES", "PERCEPTUAL", "Algorithm", "AlgorithmSpec"]
