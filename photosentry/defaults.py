"""Every default in one place, each with the reason it has that value."""

from __future__ import annotations

DATA_DIR_ENV = "PHOTOSENTRY_HOME"
"""Environment variable naming the data directory (bank database, later stores)."""

DATA_DIR_NAME = "photosentry"
"""Folder created under ``$XDG_DATA_HOME`` (or ``~/.local/share``) when no home is set."""

BANK_DB_FILENAME = "banks.sqlite3"
"""The embedded bank's SQLite file inside the data directory."""

MAX_BYTES = 50 * 1024 * 1024
"""Largest upload read at all. Phone photos are 2-15 MB; 50 MB leaves room for
panoramas while keeping one job's memory bounded."""

MAX_PIXELS = 50_000_000
"""Largest single frame decoded (width x height). 50 MP covers current phone
sensors; anything bigger is treated as a decompression bomb and never decoded."""

MAX_TOTAL_PIXELS = 200_000_000
"""Pixel budget for decoding every frame up to the last sampled one of an animation:
bounds time and memory for files with thousands of frames."""

MAX_FRAMES = 1000
"""Animations with more frames than this are quarantined (``too_many_frames``):
that many frames cannot be sampled densely enough to trust an allow."""

SCAN_FRAMES = 8
"""Frames of an animation that are hashed and classified, spread evenly over it;
any one of them can trigger a quarantine or block."""

PDQ_MATCH_DISTANCE = 31
"""PDQ Hamming distance (of 256 bits) that counts as a match. ThreatExchange's
``PDQ_CONFIDENT_MATCH_THRESHOLD``."""

PDQ_QUALITY_THRESHOLD = 50
"""PDQ hashes of lower quality (flat, featureless images) do not match on their own:
ThreatExchange's ``PdqSignal.QUALITY_THRESHOLD``."""

PHASH_MATCH_DISTANCE = 8
"""pHash distance (of 64 bits) that counts as a match. Measured on real photos
(docs/matching.md): re-encoding, resizing, mirroring, rotation, blur and brightness
stay within 4; unrelated photos are at least 18 apart (median 26) even taking the
minimum over the 8 query variants. 8 keeps a 10-bit margin below that minimum, and
the chance that a random 64-bit pair falls within 8 is 2.8e-10."""

DHASH_MATCH_DISTANCE = 8
"""dHash distance (of 64 bits) that counts as a match: copies stay within 7 except
rotations (PDQ and pHash catch those); unrelated photos are at least 15 apart."""

DEFAULT_BANK = "banned"
"""Bank that ``photosentry ban add`` writes to when no ``--bank`` is given; the
default policy blocks its matches."""
