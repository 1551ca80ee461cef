"""What a bank holds: entries, bank configurations, changes, and the checks on them.

Plain values, shared by every backend; nothing here reads or writes a store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from ...errors import InvalidHash
from ..codecs import Algorithm, normalize
from ..derived import DerivedHash
from ..localfeatures import LocalFeatures
from ..signals import ImageHashes


class EntrySource(str, Enum):
    """Where a bank entry came from."""

    #: Typed in by a moderator (``ban add --hash``).
    MODERATOR = "moderator"
    #: Hashed from an image a moderator supplied (the image itself is not kept).
    IMAGE = "image"
    #: Read from an import file (industry list, export of another instance).
    IMPORT = "import"
    #: Hashed from a crop or small rotation of an image a moderator supplied
    #: (hashes/derived.py), so cropped and tilted copies of it match too.
    DERIVED = "derived"


class BankKind(str, Enum):
    """What a match in a bank means."""

    #: Banned hashes: a match is evidence against the photo (the policy picks the action).
    BAN = "ban"
    #: Known false positives: a match suppresses ban matches (and what else the policy
    #: allows) for that photo, e.g. photos a moderator released from quarantine.
    ALLOW = "allow"


class ChangeOp(str, Enum):
    ADD = "add"
    REMOVE = "remove"
    BANK = "bank"


@dataclass(frozen=True)
class NewEntry:
    """What a caller supplies to add one hash to a bank."""

    algorithm: Algorithm
    value: str
    bank: str
    label: str = ""
    source: EntrySource = EntrySource.MODERATOR
    #: Ties together the hashes taken from one image, so they can be removed together.
    group: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", normalize(self.algorithm, self.value))
        check_bank_name(self.bank)


@dataclass(frozen=True)
class BankEntry:
    """One banned hash as stored, with its audit fields."""

    id: int
    algorithm: Algorithm
    value: str
    bank: str
    label: str
    reason: str
    added_by: str
    added_at: float
    source: EntrySource
    group: str
    active: bool
    removed_by: str | None = None
    removed_at: float | None = None
    removed_reason: str | None = None

    @property
    def tagged(self) -> str:
        return f"{self.algorithm.value}:{self.value}"

    @property
    def shown(self) -> str:
        """``tagged`` for a table: keypoints (kilobytes of hex) as their count."""
        if self.algorithm.is_features:
            return f"{self.algorithm.value}:{len(LocalFeatures.decode(self.value))} keypoints"
        return self.tagged

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["algorithm"] = self.algorithm.value
        out["source"] = self.source.value
        return out


@dataclass(frozen=True)
class BankConfig:
    """A bank and its per-algorithm match distances (data, so operators tune them live)."""

    name: str
    distances: dict[Algorithm, int] = field(default_factory=dict)
    description: str = ""
    kind: BankKind = BankKind.BAN

    @property
    def is_allow(self) -> bool:
        return self.kind is BankKind.ALLOW

    def distance(self, algorithm: Algorithm) -> int:
        if not algorithm.is_perceptual:
            return 0
        return self.distances.get(algorithm, algorithm.spec.default_distance)


@dataclass(frozen=True)
class Change:
    """One row of the change log; ``version`` is the bank version after it."""

    version: int
    op: ChangeOp
    entry_id: int | None
    bank: str
    actor: str
    reason: str
    at: float


def entries_from_hashes(
    hashes: ImageHashes, bank: str, *, label: str = "", source: EntrySource = EntrySource.IMAGE,
    derived: Sequence[DerivedHash] = (),
    features: LocalFeatures | None = None,
) -> tuple[list[NewEntry], list[str]]:
    """The bank entries for one photo's hashes, grouped by its SHA-256, and warnings.

    Every hash of the photo becomes an entry: SHA-256, MD5 and each frame's PDQ,
    pHash and dHash, then each ``derived`` hash (PDQ of a crop or rotation of it,
    :mod:`..derived`) as a ``derived`` entry labelled with its window, and its
    keypoints (``features``, :mod:`..localfeatures`) as an ``orb`` entry, and those of its
    mirror image (``features.mirror``) as another. A degenerate
    perceptual hash (a blank frame) is skipped with a warning; a weak one (below its
    quality threshold) is kept, with a warning that it will not match on its own.
    """
    group = hashes.sha256
    entries = [NewEntry(algorithm, value, bank, label, source, group) for algorithm, value in hashes.exact().items()]
    warnings: list[str] = []
    for frame in hashes.frames:
        for ph in frame.hashes:
            if ph.weak:
                spec = ph.algorithm.spec
                warnings.append(
                    f"frame {frame.frame}: {spec.label} quality {ph.quality} is below {spec.quality_threshold};"
                    f" its {spec.label} hash will not match on its own"
                )
            try:
                entries.append(NewEntry(ph.algorithm, ph.value, bank, label, source, group))
            except InvalidHash as exc:  # e.g. a blank frame's all-zero hash
                warnings.append(f"frame {frame.frame}: skipped {ph.algorithm.value}: {exc}")
    own = {e.value for e in entries}
    for d in derived:
        if d.value not in own:
            entries.append(NewEntry(Algorithm.PDQ, d.value, bank, f"{label} [{d.name}]" if label else f"[{d.name}]",
                                    EntrySource.DERIVED, group))
    if features is not None:
        entries.append(NewEntry(Algorithm.ORB, features.encode(), bank, label, EntrySource.DERIVED, group))
        if features.mirror is not None:
            entries.append(NewEntry(Algorithm.ORB, features.mirror.encode(), bank,
                                    f"{label} [mirrored]" if label else "[mirrored]", EntrySource.DERIVED, group))
    return entries, warnings



def check_bank_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a bank."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(f"{name!r} is not a valid bank name (letters, digits, - _ . ; up to 64)")


def _check_actor(actor: str, reason: str) -> None:
    if not actor.strip():
        raise ValueError("every change needs who made it (--by)")
    if not reason.strip():
        raise ValueError("every change needs a reason (--reason)")


def _check_distances(distances: dict[Algorithm, int]) -> None:
    for algorithm, distance in distances.items():
        if not algorithm.is_perceptual:
            raise InvalidHash(f"{algorithm.value} is matched exactly; it takes no distance")
        if not 0 <= distance <= algorithm.spec.max_distance:
            raise ValueError(f"{algorithm.value} distance must be in 0..{algorithm.spec.max_distance}, got {distance}")
