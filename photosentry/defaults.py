"""Every default in one place, each with the reason it has that value."""

from __future__ import annotations

DATA_DIR_ENV = "PHOTOSENTRY_HOME"
"""Environment variable naming the data directory (bank database, later stores)."""

DATA_DIR_NAME = "photosentry"
"""Folder created under ``$XDG_DATA_HOME`` (or ``~/.local/share``) when no home is set."""

BANK_DB_FILENAME = "banks.sqlite3"
"""The embedded bank's SQLite file inside the data directory."""

MAX_BYTES = 100 * 1024 * 1024
"""Largest upload read at all. Phone photos are 2-15 MB, but a 200 MP JPEG from a
current phone sensor is 30-70 MB and a motion photo adds its video; 100 MB takes
them while keeping one job's memory bounded (the bytes are held once)."""

MAX_PIXELS = 50_000_000
"""Largest frame decoded (width x height of what the decoder outputs). A JPEG
declaring more is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain to get under
it (a 200 MP photo becomes 3 MP); a format that cannot be reduced (PNG, WebP, HEIC,
AVIF ...) declaring more is refused from its header, as ``too_many_pixels``, or as
``decompression_bomb`` when the file is far too small for its declared size."""

MAX_DECLARED_PIXELS = 400_000_000
"""Largest size a reducible JPEG may declare. Its entropy decoding costs every
declared block even at 1/8 scale (about 1 s per 100 MP on one core); 400 MP is twice
the largest phone sensor (200 MP) and still only a 6 MP frame at 1/8."""

MAX_DECODE_BYTES = 768 * 1024 * 1024
"""Most memory one frame's decoding may hold: its output (4 bytes a pixel at worst)
plus, for a progressive or multi-scan JPEG, every DCT coefficient of the full-size
frame (2 bytes each), which libjpeg keeps whatever the output scale. A 200 MP
progressive 4:2:0 JPEG holds 600 MB and passes; the same at 4:4:4 (1.2 GB) is
refused as ``too_many_pixels``, so a worker stays under 1.5 GB on any photo."""

DECOMPRESSION_BOMB_RATIO = 1000
"""Raw RGB bytes per byte of file above which a file declaring more than
``MAX_PIXELS`` is a ``decompression_bomb`` (an attack) rather than an ordinary picture
that is ``too_many_pixels``. Measured on flat 48 MP frames: Huffman-coded JPEG peaks
at 512:1 (4:2:0, optimised tables), PNG at 1030:1 (deflate's ceiling), lossy WebP at
1686:1; real photos stay under 100:1. The hostile set's bombs are all past 10,000:1."""

MAX_JPEG_SCANS = 500
"""Most scans (SOS segments) a JPEG may have; more is a ``decompression_bomb``,
refused from its marker structure before decoding. libjpeg re-processes every
coefficient of the whole frame for each scan of a progressive file, so the scan count,
not the file size, sets the decoding time: a flat 4096x4096 progressive JPEG with 600
repeated scans is a 130 KB file that takes 11 s to decode (3000 scans: 51 s). Encoders
write about 10 scans (libjpeg's default progression); 500 leaves room for any
hand-tuned progression while bounding a decode to a few seconds."""

MAX_TOTAL_PIXELS = 200_000_000
"""Pixel budget for decoding every frame up to the last sampled one of an animation:
bounds time and memory for files with thousands of frames."""

MAX_FRAMES = 1000
"""Animations with more frames than this are quarantined (``too_many_frames``):
that many frames cannot be sampled densely enough to trust an allow."""

MAX_VIDEO_PIXELS = 1_000_000_000
"""Pixel budget for walking a motion photo's video (frames are decoded in order): 16 s
of 1080p or 4 s of 4K at 30 fps, about 2 s of decoding on one core. Motion photos run
1.5-3 s; a video past the budget is only partly seen and fails closed
(``trailing_unscanned``)."""

SCAN_FRAMES = 8
"""Frames of an animation that are hashed and classified, spread evenly over it;
any one of them can trigger a quarantine or block."""

SCAN_LONGEST_FRAMES = 2
"""Of the ``SCAN_FRAMES`` kept from an animation whose frames are shown for different
times, how many are the frames shown longest (the rest: the first frame, then frames at
evenly spread moments of its running time). A picture shown for 10 s among a thousand
1 ms frames is what a viewer sees; sampling by index alone would almost never keep it."""

HASH_FRAMES = 64
"""Frames of an animation that are hashed and matched, the ``SCAN_FRAMES`` the models see
among them; every frame walked when there are no more than this, else evenly spread.
Hashing and matching cost about 4 ms a frame (PDQ, pHash, dHash and their variants), so
at most about a quarter of a second: most stickers and GIFs have fewer frames, and a
longer animation's frames are a few apart, where a banned picture shown long enough to
see spans several."""

HASH_FRAME_SIDE = 128
"""Longer side a frame that is only hashed is shrunk to before it is held: 256 of them
stay under 13 MB (64 of them 3 MB), and the hashes shrink every frame further anyway (PDQ works on 64 px)."""

DECODE_MIN_SIDE = 256
"""Smallest side the scan decodes a JPEG to (DCT-domain scaling, 1/2 to 1/8): what
the model needs (open_nsfw stretches the photo to 256x256). The hashes need no more:
PDQ filters a reduced frame with the full-resolution photo's own filter
(hashes/perceptual.py), pHash and dHash shrink to 32 and 9 px. Measured on 19 real
1.5-24 MP photos against a full decode (scripts/bench_scan.py --hash-drift): PDQ moves
at most 2 of 256 bits (median 0), pHash at most 2 of 64, dHash at most 1, far inside
the match distances; a 12 MP photo decodes at 1/8 scale, where a progressive JPEG
needs only its DC scans (photosentry/progressive.py)."""

MODEL_DRIFT_TOLERANCE = 0.03
"""Largest |score - fp32 score| an optimised model (int8, fp16) may show on any
calibration photo; `photosentry models optimize/verify` refuse one that drifts more
(or that flips any allow/quarantine/block decision on those photos)."""

SCAN_BATCH_GPU = 16
"""Frames per model call when bulk work (``Scanner.scan_many``, ``rescan --local``) runs
on a GPU: one call per photo leaves a GPU mostly idle, and 16 224x224 inputs (10 MB)
fill it well without holding many photos back; ``--batch`` tunes it per host."""

SCAN_BATCH_CPU = 4
"""Frames per model call for bulk work on CPU. One-thread ONNX Runtime gains little
from batching: ResNet-50 alone runs ~10% more frames/s at 8-32 than at 1, but whole
scans measured within noise of one by one (scripts/bench_scan.py --batch, 0.91-1.09x on
the corpus, 0.98-1.03x on 2-24 MP photos; scripts/bench_rescan.py --batches likewise).
A small batch keeps one code path with GPU hosts while holding few photos back."""

SCAN_BATCH_MAX_BYTES = 256 * 1024 * 1024
"""Most memory (bytes read plus decoded pixels) held by photos waiting for one batched
model call; a batch of large PNGs is cut short at this, so batching never multiplies a
process's worst case by the batch size."""

RESCAN_BATCH_LINGER_S = 0.5
"""A ``rescan --local`` batch still being filled is sent anyway once its first photo
has waited this long, so a slow input (a sparse folder walk, --rate) never holds photos
back for a batch to fill."""

AUTO_BUILD_ENV = "PHOTOSENTRY_AUTO_BUILD"
"""Environment variable that turns off (``0``) the default optimised build: without it a
process that finds no verified int8/bf16 build for its host starts one in the
background, calibrated and verified on the photos shipped in the package
(photosentry/models/autobuild.py), and runs fp32 until it is ready."""

MODELS_DIR_NAME = "models"
"""Folder in the data directory holding optimised model artifacts and their manifest."""

SECOND_MODELS_ENV = "PHOTOSENTRY_SECOND_MODELS"
"""Environment variable listing second-opinion models a worker runs (comma-separated;
``nudenet`` is the one there is). Off by default: NudeNet is AGPL-3.0."""

PDQ_MATCH_DISTANCE = 31
"""PDQ Hamming distance (of 256 bits) that counts as a match. ThreatExchange's
``PDQ_CONFIDENT_MATCH_THRESHOLD``."""

PDQ_QUALITY_THRESHOLD = 50
"""PDQ hashes of lower quality (flat, featureless images) do not match on their own:
ThreatExchange's ``PdqSignal.QUALITY_THRESHOLD``."""

FLAT_PICTURE_SHARE = 0.5
"""A picture (a frame or a region of it) with at least this share of flat colour
(hashes/flatness.py) hashes to its layout, not its content: a hash match between two
such pictures (an upload's and an image ban's) holds for review, never blocks.
Measured: a chat app's screen at 0.58-0.72 (JPEG quality 30-92, downscaled to a
quarter), two chats of one app sharing PDQ 0-18 whatever their words; the 192 strict
photos of the benchmark corpus at most 0.47 (99th percentile 0.42)."""

PHASH_MATCH_DISTANCE = 8
"""pHash distance (of 64 bits) that counts as a match. Measured on real photos
(docs/matching.md): re-encoding, resizing, mirroring, rotation, blur and brightness
stay within 4; unrelated photos are at least 18 apart (median 26) even taking the
minimum over the 8 query variants. 8 keeps a 10-bit margin below that minimum, and
the chance that a random 64-bit pair falls within 8 is 2.8e-10."""

DHASH_MATCH_DISTANCE = 8
"""dHash distance (of 64 bits) that counts as a match: copies stay within 7 except
rotations (PDQ and pHash catch those); unrelated photos are at least 15 apart."""

SHORT_HASH_QUALITY_THRESHOLD = 6
"""pHash and dHash (64 bits) of a frame whose dHash thumbnail margin (the median
difference between neighbouring columns of its 9x8 thumbnail) is under this many grey
levels are weak, as PDQ's below quality 50 are: smooth and frame-dominated pictures
(sky, fog, gradients, bars) collapse to nearly the same 64-bit hashes. Measured on 257
pictures and 2,056 framings (scripts/measure_false_matches.py): it gates about a tenth
of pictures and every different-picture pHash-and-dHash pair found (docs/matching.md)."""

DERIVED_HASH_SIDE = 1024
"""A banned image is reduced to this longest side before its derived crops and
rotations are hashed (hashes/derived.py): PDQ samples 64x64, so nothing it sees is lost."""

FEATURE_COUNT = 256
"""Keypoints stored for a banned image (hashes/localfeatures.py): 36 bytes each, so an
image ban's ``orb`` entry is 9 KB (18 KB of hex in the store). 128 caught one copy in
ten fewer of the crops, letterboxes and screenshots (scripts/bench_copies.py); more
cost memory and matching time per scan."""

FEATURE_BAN_SIDE = 512
"""A banned image is reduced to this longest side before its keypoints are found."""

FEATURE_QUERY_SIDE = 384
"""An upload is reduced to this longest side before its keypoints are found."""

FEATURE_QUERY_COUNT = 500
"""Keypoints found in an upload, once for the whole picture: enough that a banned photo
filling a quarter of it (a collage cell, a screenshot's photo beside lines of text,
whose letters are all corners) keeps a few dozen."""

FEATURE_FAST_THRESHOLD = 10
"""ORB's corner detector threshold (OpenCV's default is 20): lower finds corners in
softer photos."""

FEATURE_IVF_MIN = 4096
"""From this many banned keypoints (8 image bans: 16 keypoint sets) on, they are
searched through an inverted file instead of one by one: at 40 image bans, 1.3 ms a
search instead of 12."""

FEATURE_IVF_LISTS_PER_ROOT = 2.0
"""The inverted file has this many clusters per square root of the keypoints ..."""

FEATURE_IVF_PROBES = 8
"""... and each upload keypoint is looked for in its this many nearest clusters."""

FEATURE_IVF_TRAIN_PER_LIST = 32
"""The clusters are made from at most this many keypoints each, sampled ..."""

FEATURE_IVF_TRAIN_ROUNDS = 10
"""... in this many rounds of k-means: at 4,000 image bans 16 s on one core instead of
73 s with FAISS's defaults (64 and 25); docs/matching.md has what that costs recall."""

FEATURE_IVF_REGROW = 4.0
"""New bans' keypoints join the nearest existing cluster; the clusters are made again
once the bank has grown this many times past what they were made for (the inverted
file's list count then is half of what it should be)."""

FEATURE_IVF_SYNC_MAX = 65_536
"""Up to this many banned keypoints (128 image bans of 2 x 255; under a second) the
clusters are made at the search that needs them; past it, in a background thread
while the old index serves, so that no scan waits a minute for a moderator's ban."""

FEATURE_MAX_DISTANCE = 64
"""Two ORB descriptors (256 bits) further apart than this never pair."""

FEATURE_RATIO = 0.8
"""Lowe's ratio test: a pair is kept when its distance is under this share of the
second-nearest descriptor's."""

FEATURE_RANSAC_PIXELS = 6.0
"""How far (pixels at ``FEATURE_QUERY_SIDE``) a pair may sit from the fitted transform
and still count as an inlier."""

FEATURE_MIN_SCALE = 0.15
"""The banned photo may appear this small in an upload (a quarter of a screenshot)..."""

FEATURE_MAX_SCALE = 6.0
"""... or this much enlarged (a small crop blown up)."""

FEATURE_MIN_SHOWN = 0.3
"""The upload must show at least this share of the banned photo, placed by the fitted
transform: a crop of a fifth off every edge shows 36%, one photo of a banned 2 x 2
collage a quarter (an entry stored before the photo's size was skips the check)."""

FEATURE_MIN_FILL = 0.1
"""... and the banned photo, so placed, must fill at least this share of the upload or
of the region it was found in: a banned chat screenshot shrunk to a stamp in one cell of
another chat (glyphs of one font meeting) is not a copy."""

FEATURE_MIN_SPREAD = 0.02
"""Inliers must spread over at least this share of the banned photo's keypoint area
(the product of the two sides' shares): a logo or a texture in one corner is not it."""

FEATURE_MIN_INLIERS = 8
"""Fewer inliers are not reported at all (unrelated photos reach 4-7 by chance)."""

FEATURE_QUARANTINE_INLIERS = 12
"""From this many inliers a feature match holds the upload for review (at most
quarantine, whatever its bank's action)..."""

FEATURE_BLOCK_INLIERS = 20
"""... and from this many it counts as the banned photo (its bank's action)."""

COPY_DECODE_MIN_SIDE = 512
"""Where there are banks to match, the scan decodes a JPEG to at least this side
instead of ``DECODE_MIN_SIDE``: a collage's cell or the photo in a screenshot is a
quarter of the picture or less; at 256 pixels it keeps too few corners to verify, and
a region's sides land a pixel off, which moves PDQ by a dozen bits."""

FEATURE_REGION_LIMIT = 6
"""Keypoints are also verified region by region in up to this many proposed regions (a
screenshot's photo, collage cells: hashes/regions.py): the pairs that fall inside one
are fitted alone, so the text and the other cells' chance pairs do not outvote them."""

FEATURE_CELL_PASS_GAIN = 1.3
"""A collage cell or a screenshot's photo gets keypoints found on it alone (a pass of
its own, 3-4 ms) where that sees it at least this many times larger than the whole
picture's pass did (a screenshot's photo: 1.7-3x; a photo's own "cells", cut at its
horizon: 1x) ..."""

FEATURE_CELL_ENLARGE = True
"""A region smaller than ``FEATURE_QUERY_SIDE`` (a collage's cell: 250 pixels at the
scan's decode) is enlarged to it for its own keypoint pass: ORB then finds corners at
the scales the ban's, found at 512 pixels, were. bench_copies (seed 17 / 23): collages
of 4 80.0 -> 85.0% / 85.0 -> 86.2%, of 3 82.5 -> 85.0%, overall 96.9 -> 97.3% / 97.1
-> 97.2%, at 1.00-1.02x the scan time; the new false blocks are a figure of four
thresholded copies of a banned picture (ada_threshold of sudoku)."""

FEATURE_CELL_PASS_BELOW = 150
"""... or where fewer than this many of the whole picture's keypoints fall inside it."""

REGION_THUMB_SIDE = 240
"""Region proposals (hashes/regions.py) look for framings on a thumbnail this long.
Measured against 160 on bench_copies' 480 collage copies: cells found exactly went
from 160 to 172 (a seam crossing a third of a collage has half again as many pixels to
show it by), and on 192 innocent photos from 374 to 318 regions and 178 to 159
keypoint passes, for 0.9 ms more a photo in the proposals."""

REGION_CORNER = 0.12
"""A region's corners are looked at for a chat app's rounding within this share of its
short side (regions.square_corners)."""

REGION_HASH_MAX_SIDE = 2048
"""Regions of a frame larger than this (a big PNG or HEIC, decoded whole) are hashed
from a copy shrunk to half of it."""

REGION_MIN_FRAME_SIDE = 64
"""Frames smaller than this get no region proposals (nothing to frame)."""

REGION_LIMIT = 12
"""At most this many regions of a photo are hashed and matched besides the photo: each
adds one PDQ query (about 1 ms to hash, one range search). Most photos have none or
one; a collage of four with a border has six."""

REGION_MIN_AREA = 0.1
"""A proposed region covers at least this share of the picture (a collage's quarter
cell is 0.25; a photo inside a phone screenshot at least a fifth)."""

REGION_MORE_FRAMES = SCAN_FRAMES - 1
"""Frames beyond the first a scan searches for copies as it searches the first (a GIF's,
a TIFF's pages, an image appended to the file): regions, keypoints and the regions'
own keypoints. Every frame the models see of an animation, so that none is left
unsearched behind decoys, and every one that is not the same pixels as a frame searched
already: a frame merely near another may be a decoy's twin (the same picture with the
banned photo blurred out). Bounded: an animation of 8 pictures costs 8 photos' copy
search."""

REGION_CELL_MIN_AREA = 0.04
"""A region that is one photo of a collage (a ``cell``, a ``fitted`` cell, a ``panel``:
:mod:`.hashes.regions`) covers at least this share of the picture, not
``REGION_MIN_AREA``: a collage app that fits each photo whole into its cell leaves a
landscape photo in a narrow cell of a grid of four 6-8% of the picture, and three
square photos in a row on a square canvas 9% each."""

REGION_PANELS = 3
"""At most this many panels a picture beside its ``content`` (four without one): the four
photos of a collage of four."""

REGION_SAME_BOX = 0.97
"""Two proposed regions (or a region and the whole frame) are one query when their
IoU, measured after refinement in frame pixels, is at least this: PDQ tells crops
apart that differ by a couple of percent of a side (IoU 0.92 is a 2% border)."""

REGION_MARGIN_TOLERANCE = 12
"""A pixel is the margin's colour when no channel is further than this (0-255) from
the colour of the outermost line: JPEG noise and soft bar edges stay inside."""

REGION_CLEAN_LINE = 0.9
"""A line of a margin is clean when this share of its pixels is the margin's colour ..."""

REGION_TEXT_LINE = 0.25
"""... and still margin (a caption's line of text) down to this share; under it, the
photo has begun."""

REGION_SHARP_SHARE = 0.25
"""A row or column belongs to the photo when its detail (mean luminance step) is over
this share of the 90th percentile of all rows' (hashes/regions.py ``sharp``)."""

REGION_EDGE_REACH = 0.4
"""A photo's own edge is looked for within this share of each side of the picture ..."""

REGION_EDGE_FILL = 0.7
"""... as a luminance step over ``REGION_SEAM_STEP`` along at least this share of the line."""

REGION_LINE_STEP = 3.0
"""A photo's edge against what surrounds it (hashes/regions.py ``outline``): a pixel of
the line steps by at least this (0-255 luminance) and twice as much as either of the
two lines outside it ..."""

REGION_LINE_FILL = 0.7
"""... along at least this share of the line."""

REGION_FRAME_DEPTH = 0.12
"""A frame of even thickness (hashes/regions.py ``frame``) is looked for up to this share
of the short side deep ..."""

REGION_FRAME_FILL = 0.6
"""... as an edge along at least this share of each side's line (a patterned frame's
edge against the photo steps less than everywhere)."""

REGION_MIN_MARGIN = 0.015
"""Margins thinner than this share of the side are left on: PDQ absorbs them."""

REGION_BACKGROUND_SHARE = 0.03
"""A colour is a screenshot's background when at least this share of the pixels (and
a twentieth of the border) has it."""

REGION_SPLIT_DEPTH = 2
"""A collage is cut along its seams one way, then each piece the other way: grids, and
one large photo beside a stack of small ones."""

REGION_CELL_GUTTER = 0.03
"""Flat lines along a collage cell's edges are cut off up to this share of its side: a
thin gutter; deeper flat lines are the photo's own."""

REGION_SEAM_STEP = 24.0
"""A hard seam between two collage photos: a luminance step over this between two
neighbouring lines ..."""

REGION_SEAM_FILL = 0.6
"""... along at least this share of the line (a horizon or a wall edge rarely crosses
a photo that cleanly; when one does, its cells only add queries)."""

REGION_TIGHT_SHARE = 0.04
"""A region's sides are also tried without uniform lines along them (a chat bubble's
padding, a thin frame the thumbnail cannot see) up to this share of the side; lines
that reach it are the photo's own flat edge, not padding."""

REGION_TIGHT_LIMIT = 4
"""At most this many tightened boxes a photo, beside ``REGION_LIMIT``'s regions."""

REGION_TIGHT_SAME_BOX = 0.995
"""A tightened box is queried unless it nearly coincides with one already kept: a
padding of 8 pixels on one side of a 640-pixel photo is IoU 0.988 with the padded box,
past ``REGION_SAME_BOX``, and moves PDQ by 30 bits."""

REGION_SEAM_COLOUR_FILL = 0.7
"""A seam of colour alone (two photos of one brightness: flowers beside a grey fog):
the largest step of any one channel over ``REGION_SEAM_STEP`` along at least this share
of the line. Stricter than luminance's 0.6: a photo's own coloured edges (a lit tower
against a night sky) step along 60% of a line now and then (bench: 0.7 keeps the
collages found at 0.6 and cuts none of the test photos' towers)."""

AUTO_SNAPSHOT_MIN_ENTRIES = 100_000
"""A matcher that had to read this many entries or more from the store itself (no
usable snapshot) saves what it read as a snapshot, so the next scan, worker or rescan
on the host loads in seconds. Reading 100,000 entries from SQLite takes about a second;
below that a snapshot saves little and would only fill the disk."""

SHARED_INDEX_DIRNAME = "bank-index"
"""Folder of the data directory holding each bank store's shared index files (one folder
per store id), the compiled kernels and this host's layout calibration."""

SHARED_INDEX_ENV = "PHOTOSENTRY_SHARED_INDEX"
"""Set to ``0`` to give every process a private in-memory index (built from the snapshot,
kernels compiled in the process) instead of the host's shared index file: the behaviour
before the shared index, kept as the baseline benchmarks compare against."""

INDEX_BUILD_WAIT_S = 600.0
"""How long a starting process waits for another process building the host's first
index file before building a private one (building 10M entries per algorithm from a
snapshot takes about a minute on a 2-core host; a builder stuck longer is broken)."""

INDEX_CHECK_INTERVAL_S = 1.0
"""How often a process looks for a newer shared index file (a directory listing), so a
compaction reaches every process within about a second, without a restart."""

INDEX_COMPACT_MIN_CHANGES = 20_000
"""A process builds a newer shared index file once its delta (changes applied since the
file) reaches this many changes, or INDEX_COMPACT_FRACTION of the entries if more: the
delta is private memory and its segments are rebuilt as it grows, so it is kept small,
while a rebuild of the file (seconds at 10M) is not started for a handful of bans."""

INDEX_COMPACT_FRACTION = 0.02
"""See INDEX_COMPACT_MIN_CHANGES."""

INDEX_COMPACT_RETRY_S = 30.0
"""After a compaction attempt (done, failed or left to another process), a process waits
this long before trying again."""

DEFAULT_BANK = "banned"
"""Bank that ``photosentry ban add`` writes to when no ``--bank`` is given; the
default policy blocks its matches."""

# -- queue workers (photosentry worker / enqueue_scan) ----------------------------

REDIS_URL_ENV = "PHOTOSENTRY_REDIS_URL"
"""Environment variable naming the Redis that holds the queues, the shared bank, the
verdict stream and the verdict cache."""

SOURCE_ROOTS_ENV = "PHOTOSENTRY_SOURCE_ROOTS"
"""Environment variable listing the folders path sources may name (os.pathsep-separated)."""

CALLBACK_KEY_ENV = "PHOTOSENTRY_CALLBACK_KEY"
"""Environment variable holding the shared key that signs HTTP callbacks (16+ bytes)."""

CALLBACK_NETWORKS_ENV = "PHOTOSENTRY_CALLBACK_ALLOW_NETWORKS"
"""Environment variable listing (comma-separated) networks callbacks may reach although they
are internal, e.g. ``127.0.0.0/8``. Loopback, link-local, metadata, multicast and reserved
addresses are refused by default: a callback URL comes from the job, i.e. from anyone who
can write to the queue."""

UPLOADS_QUEUE = "uploads"
"""High-priority queue: fresh uploads waiting for a verdict. Workers drain it first."""

BULK_QUEUE = "bulk"
"""Low-priority queue: rescans and backfills, taken only when uploads is empty."""

QUEUES = (UPLOADS_QUEUE, BULK_QUEUE)
"""Queues in priority order, as a worker listens to them."""

BULK_VERDICT_STREAM = "photosentry:verdicts:bulk"
"""Stream that verdicts of jobs taken from the bulk queue are recorded on (the queue the
job came from decides, never its payload). Uploads keep ``photosentry:verdicts``, so a
rescan of millions of photos trims only this stream, never an unread upload verdict."""

BULK_VERDICT_STREAM_MAXLEN = 1_000_000
"""Approximate cap on the bulk verdict stream (XADD MAXLEN ~). A ``rescan --queue`` reads
its verdicts as they come (and falls back to job results), so it needs only a few
thousand; the rest is slack for a pipeline acting on rescan results: at 500 photos a
second it holds the last half hour, in about as much Redis memory as the uploads stream."""

MAX_INLINE_BYTES = 10 * 1024 * 1024
"""Largest photo carried inline (base64) in a job payload. Every inline byte sits in
Redis memory until a worker takes the job; bigger photos should be sent by path."""

JOB_TIMEOUT_S = 60
"""Seconds one scan job may run before RQ's death penalty (SIGALRM) stops it. A scan
takes about 0.1 s on one core; 60 s covers a cold disk, a slow classifier and the
callback's retries (about 7.5 s), while a wedged job still ends in minutes."""

JOB_RETRIES = 2
"""Retries after a failed, timed-out or abandoned attempt (three attempts in all),
after which the upload gets a fail-closed ``scan_failed`` verdict."""

CALLBACK_THREADS = 4
"""Callback delivery threads per worker process: a receiver that hangs for a whole attempt
holds up one thread's callbacks, never a scan (photosentry/worker/outbox.py)."""

CALLBACK_DRAIN_S = 10.0
"""How long a stopping worker keeps delivering callbacks that are already due."""

MAX_JOB_RETRIES = 5
"""Most retries a worker grants a job, whatever its hash says: a producer writes
``retries_left``, and a photo that kills workers must reach its verdict in minutes."""

RESULT_TTL_S = 24 * 3600
"""How long RQ keeps a finished job's result (the verdict dict)."""

FAILURE_TTL_S = 7 * 24 * 3600
"""How long RQ keeps a failed job for operators to inspect (`rq info`, FailedJobRegistry)."""

BANK_REFRESH_INTERVAL_S = 0.2
"""A worker refreshes its in-memory bank index before a job when at least this long has
passed since its last refresh: one small Redis read per job at most five times a
second, and a moderator's ban is in force everywhere well within a second."""

VERDICT_CACHE_TTL_S = 24 * 3600
"""How long a verdict stays cached by SHA-256 + bank version + policy version. A new
ban changes the bank version, so it never serves a stale allow; the TTL only bounds
memory."""

WORKER_ALIVE_TTL_S = 5.0
"""A worker process refreshes its liveness key every second with this TTL. A job
started by a worker whose key has expired (killed, host lost) is requeued by any
other worker; 5 s tolerates long GC pauses without letting a lost job wait long."""

REAPER_INTERVAL_S = 1.0
"""How often each worker looks for jobs abandoned by dead workers."""

METRICS_PORT_ENV = "PHOTOSENTRY_METRICS_PORT"
"""Environment variable with the port serving Prometheus metrics (unset: no metrics server)."""

METRICS_HOST = "127.0.0.1"
"""Address the metrics listener binds by default: this host only. In a container,
where Prometheus scrapes from outside, set ``--metrics-host 0.0.0.0`` (or the pod's
address) and let the network policy decide who may reach it."""

METRICS_HOST_ENV = "PHOTOSENTRY_METRICS_HOST"

LOG_FORMAT_ENV = "PHOTOSENTRY_LOG_FORMAT"
"""Environment variable choosing ``json`` or ``text`` logs for every long-running command
(worker and review page alike)."""

# -- retro-hunt (photosentry retrohunt) ----------------------------------------------

HASHLOG_MAX_ENTRIES = 2_000_000
"""Most scan records the hash log keeps (about 600 bytes each in Redis: 1.2 GB). A
retro-hunt can only find photos still in the log; raise it with your Redis memory."""

HASHLOG_RETENTION_DAYS = 30
"""Scan records older than this are dropped: a new ban is looked for in the last
month of uploads (industry lists usually reach us within days of a photo circulating)."""

# -- bulk rescans (photosentry rescan) -------------------------------------------------

RESCAN_QUEUE_CAPACITY = 5000
"""Most rescan jobs outstanding at once with --queue: enough to keep a hundred worker
processes busy for a few seconds, while the bulk queue holds megabytes, not the input."""

RESCAN_CHUNK = 200
"""Rescan jobs enqueued per Redis round trip (one pipeline) with --queue."""

RESCAN_MIN_WINDOW = 1000
"""Fewest items a rescan lets sit between its checkpoint watermark and the newest item
started (4x the in-flight limit when that is more). Bounds what a resume reads back,
and how far one slow photo lets the rest run ahead."""

RESCAN_CHECKPOINT_INTERVAL_S = 1.0
"""How often a rescan fsyncs its report and rewrites its checkpoint: a second of rows is
all a resume ever reads into memory, at the cost of one fsync a second."""

RESCAN_RECORD_TTL_S = 24 * 3600
"""Once a --queue rescan has reported an item, its "already recorded" marker on the verdict
stream expires after this long instead of 30 days: long enough to absorb stray duplicate
jobs, short enough that ten million markers do not hold Redis memory for a month."""

# -- moderator review and repeat uploaders (photosentry review / quarantine / uploader) --

REVIEW_PREFIX = "photosentry:review:"
"""Redis key prefix of the review queue: pending items, item records, claims, audit log."""

REVIEW_LEASE_S = 120
"""How long an item shown to a moderator stays theirs without a renewal. The page
renews every 30 s while open, so a closed tab frees its item within two minutes."""

REVIEW_AUDIT_MAXLEN = 1_000_000
"""Approximate cap on the review audit stream (one entry per decision): years of a
busy moderation team, far below Redis memory limits."""

REVIEW_HOST = "127.0.0.1"
"""The review page listens on localhost only unless told otherwise: it shows
quarantined photos, so exposing it is an explicit choice (behind a TLS proxy)."""

REVIEW_PORT = 8731
"""Port of `photosentry review` (an unassigned one, so it rarely collides)."""

REVIEW_SESSION_S = 8 * 3600
"""A moderator's sign-in lasts one working day; then they sign in again."""

REVIEW_CONFIG_ENV = "PHOTOSENTRY_REVIEW_CONFIG"
"""Environment variable naming the review page's moderator config (TOML)."""

EVIDENCE_DAYS = 90
"""Days a confirmed photo is kept as evidence (policy [review] evidence_days) before
`photosentry quarantine purge` deletes it: long enough for an appeal or a report to
the authorities, short enough not to hoard harmful content."""

UPLOADER_CONTEXT_KEY = "uploader_id"
"""Key of the job context that names the uploader whose record a verdict counts against."""

UPLOADER_BLOCK_PENALTY = 1.0
"""Penalty added to an uploader's score for each upload blocked for its content."""

UPLOADER_CONFIRM_PENALTY = 1.0
"""Penalty added for each of their quarantined uploads a moderator confirmed."""

UPLOADER_THRESHOLD = 2.5
"""Score at which an uploader is flagged. With penalties of 1 and a 30-day half-life,
three content blocks or confirmations within about twelve days reach it (older ones
have decayed too far), and two never do: one mistake or one unlucky match should not
flag a person; a pattern should."""

UPLOADER_HALF_LIFE_DAYS = 30.0
"""Penalties halve every this many days, so an old incident fades and a flag lifts
on its own after a quiet month or two."""

UPLOADER_HISTORY_DAYS = 365
"""How long an uploader's event history is kept after their last event."""

UPLOADER_HISTORY_EVENTS = 1000
"""Most events kept per uploader (newest first): bounds memory for a prolific abuser."""

UPLOADER_PREFIX = "photosentry:uploader:"
"""Redis key prefix of the uploader ledger."""

# -- object storage (s3:// sources and stores; docs/storage.md) ---------------------

STORE_ENV = "PHOTOSENTRY_STORE"
"""Environment variable naming where the quarantine and blocked stores live: a folder,
or ``s3://bucket/prefix/`` (then ``<prefix>quarantine/`` and ``<prefix>blocked/``).
Default: the data directory's ``quarantine/`` and ``blocked/``."""

S3_CONNECT_TIMEOUT_S = 5.0
"""Seconds an S3 connection attempt may take. A store in the same region answers in
milliseconds; a blackholed endpoint must not hold a job until its 60 s timeout."""

S3_READ_TIMEOUT_S = 20.0
"""Seconds an S3 socket read may stall (not the whole transfer: a 100 MB photo streams
for longer on a slow link). The job's own timeout bounds the whole request."""

S3_MAX_ATTEMPTS = 3
"""Attempts per S3 request in botocore's "standard" retry mode (throttling, 5xx,
dropped connections), with its jittered backoff; past them the job itself is retried."""

S3_READ_CHUNK = 1024 * 1024
"""Bytes read from an S3 response body at a time (the whole body is still bounded by
``MAX_BYTES``, whatever Content-Length the server sent)."""

S3_BODY_GRACE_S = 10.0
"""Seconds an S3 response body may take on top of what :data:`S3_BODY_MIN_RATE` allows
for its size. ``S3_READ_TIMEOUT_S`` bounds one stalled socket read only: a server that
drips a byte every few seconds would hold a read for ever without this."""

S3_BODY_MIN_RATE = 512 * 1024
"""Bytes per second an S3 response body must average: a body of N bytes is cut off
after ``S3_BODY_GRACE_S + N / S3_BODY_MIN_RATE`` seconds (a 5 MB photo after 20 s)
and the read fails as transient (:class:`~photosentry.errors.StorageUnavailable`)."""

GIVE_UP_READ_S = 10.0
"""Seconds giving up on a job (its fail-closed ``scan_failed`` verdict) may spend
reading the photo again, to hash it and move it into the quarantine store. Past it the
verdict is recorded without the bytes (the photo stays where it is): giving up must
end, and the worker's watchdog ends a job's process 30 s after its timeout."""
