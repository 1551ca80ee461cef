"""Reason codes of the reading stage: every way untrusted bytes can fail to become frames.

One module so that the decoder, the cost planner and the trailer scanner share them;
:mod:`photosentry.decode` re-exports them and the verdict module turns them into
``ReasonCode`` members.
"""

EMPTY_FILE = "empty_file"
TOO_LARGE = "too_large"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
#: An attack: a huge declared size in a file far too small to hold it.
DECOMPRESSION_BOMB = "decompression_bomb"
#: An ordinary picture too big to decode safely in its format (not an attack).
TOO_MANY_PIXELS = "too_many_pixels"
UNREADABLE = "unreadable"
