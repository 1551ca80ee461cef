"""Which bank matches are evidence enough to act on: the one rule, applied to every match.

A match is *strong* (it may block or quarantine, as its bank's policy says) when it is:

- ``exact``: the same bytes (SHA-256 or MD5);
- ``pdq``: PDQ within the bank's distance (31 by default) of a photo hash whose PDQ
  quality is at least 50, for the whole photo (``pdq``), for a region of it that may
  hold the banned photo (``pdq_region``), or against a hash derived from a banned
  image's crop or rotation (``pdq_derived``);
- ``features``: the banned image's ORB keypoints mapped onto the photo by one
  rotation-scale-shift, with at least ``FEATURE_BLOCK_INLIERS`` pairs agreeing
  (:mod:`.localfeatures`); with ``FEATURE_QUARANTINE_INLIERS`` or more but fewer,
  ``features_partial``: strong enough to hold the photo for review, never to block it;
- ``two_hashes``: pHash *and* dHash (or either with PDQ or keypoints in place) within
  their distances of the same banned image (one ``group``) in the same bank, from a
  picture with enough detail; independent signals agreeing on one image are what a
  coincidence rarely does.

Everything else is *weak*: kept in the verdict (and ``ban check``) so a moderator sees
it, but it decides nothing. A lone 64-bit hash within 8 is weak: smooth, low-detail
pictures (sky, fog, gradients) collapse to nearly the same 64-bit hashes, and across a
bank of millions such coincidences happen daily (docs/matching.md measures them). A
hash from a low-detail picture (PDQ quality under 50) is weak whatever it matches.

A perceptual hash of a picture that is mostly flat colour (:mod:`.flatness`: the frame
or the region hashed), matching an image ban whose picture was mostly flat too, is
``flat_picture`` (:func:`flat_pair`): strong enough to hold the photo for review, never
to block it. Two app screens hash to their layout, not their text: every chat of one
app with its bubbles on the same sides hashes alike, so such a match may be the banned
screenshot re-saved or any other chat of that app, and only a person can tell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import defaults
from .banks.model import EntrySource
from .codecs import Algorithm
from .flatness import is_flat

if TYPE_CHECKING:
    from .matcher import Match

#: Why a match is strong (it may act) or weak (it is only reported).
EXACT, PDQ, PDQ_REGION, PDQ_DERIVED, TWO_HASHES = "exact", "pdq", "pdq_region", "pdq_derived", "two_hashes"
FEATURES, FEATURES_PARTIAL = "features", "features_partial"
LOW_QUALITY, FLAT_PICTURE = "low_quality", "flat_picture"
LONE_SHORT_HASH, FEW_FEATURES = "lone_64bit", "few_features"
STRONG_BASES = frozenset({EXACT, PDQ, PDQ_REGION, PDQ_DERIVED, TWO_HASHES, FEATURES, FEATURES_PARTIAL, FLAT_PICTURE})
#: Strong enough to hold a photo for review, not to block it: the action is at most quarantine.
REVIEW_ONLY_BASES = frozenset({FEATURES_PARTIAL, FLAT_PICTURE})

#: Entries hashed from a transformed window of a banned image (``EntrySource.DERIVED``).
DERIVED_SOURCE = "derived"


def flat_pair(source: str, banned_flat: float | None) -> bool:
    """Whether a flat picture's hash match (the frame or region hashed) is one between two
    mostly flat pictures (two app screens), which holds a photo for review but never
    blocks it: against an image ban's hash whose picture's flat share (``banned_flat``,
    kept in the ban's keypoint entry) was flat too. A flat copy of a photo that was not
    flat (posterised, cartoon-filtered) keeps the hash's own strength, and so does any
    match against a typed-in hash, an imported list (no keypoint entry: no share) or an
    image ban from before the share was kept. An image ban exported and imported on
    another instance (``source`` import) brings its keypoint entry, and its share, along."""
    return (source != EntrySource.MODERATOR.value
            and banned_flat is not None and is_flat(banned_flat))


def grade(matches: Sequence["Match"]) -> list["Match"]:
    """``matches`` with ``weak`` and ``basis`` set by the rule above (input order kept).

    ``weak`` on the way in means the photo's hash itself was too weak (low quality);
    the rule never makes such a match strong. A ``basis`` of ``flat_picture`` on the way
    in (two flat pictures, :func:`flat_pair`) stays: review-only, and no corroboration.
    """
    # Which algorithms matched each banned image (group) of each bank with a usable hash.
    # Keypoints in place count as one more independent signal.
    seen: dict[tuple[str, str], set[Algorithm]] = {}
    for m in matches:
        usable = m.inliers >= defaults.FEATURE_QUARANTINE_INLIERS if m.algorithm.is_features else \
            m.algorithm.is_perceptual and not m.weak and m.basis != FLAT_PICTURE
        if usable and m.group:
            seen.setdefault((m.bank, m.group), set()).add(m.algorithm)
    out = []
    for m in matches:
        basis = _basis(m, seen)
        out.append(dataclasses.replace(m, weak=basis not in STRONG_BASES, basis=basis))
    return out


def _basis(m: "Match", seen: dict[tuple[str, str], set[Algorithm]]) -> str:
    if m.algorithm.is_features:
        if m.inliers >= defaults.FEATURE_BLOCK_INLIERS:
            return FEATURES
        return FEATURES_PARTIAL if m.inliers >= defaults.FEATURE_QUARANTINE_INLIERS else FEW_FEATURES
    if not m.algorithm.is_perceptual:
        return EXACT
    if m.weak:
        return m.basis or LOW_QUALITY
    if m.basis == FLAT_PICTURE:
        return FLAT_PICTURE
    if m.algorithm is Algorithm.PDQ:
        if m.source == DERIVED_SOURCE:
            return PDQ_DERIVED
        return PDQ_REGION if m.region else PDQ
    if m.group and len(seen.get((m.bank, m.group), ())) >= 2:
        return TWO_HASHES
    return LONE_SHORT_HASH


def describe(m: "Match") -> str:
    """A moderator's phrase for a match's basis."""
    return {
        EXACT: "the same bytes",
        PDQ: "PDQ of the whole photo",
        PDQ_REGION: f"PDQ of a region of the photo ({m.region})",
        PDQ_DERIVED: "PDQ against a crop or rotation of the banned image",
        TWO_HASHES: "two independent hashes of the same banned image",
        FEATURES: f"{m.inliers} keypoints of the banned image in place",
        FEATURES_PARTIAL: f"{m.inliers} keypoints of the banned image in place (enough to review, not to block)",
        FEW_FEATURES: f"only {m.inliers} keypoints of a banned image in place (weak: decides nothing)",
        LOW_QUALITY: "a hash of a low-detail picture (weak: decides nothing)",
        FLAT_PICTURE: "a hash of a picture mostly flat colour, such as an app's screen, met by a banned picture as"
                      " flat: the hashes see the layout, not the text (enough to review, not to block)",
        LONE_SHORT_HASH: f"a lone {m.algorithm.spec.label} match (weak: decides nothing)",
    }.get(m.basis, m.basis)
