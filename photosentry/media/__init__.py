"""What a photo file holds besides its pixels, and what decoding it will cost.

- :mod:`.codes`: the reading stage's reason codes;
- :mod:`.jpeg`: JPEG marker structure (segments, frame header, end of image);
- :mod:`.budget`: the decode plan (DCT reduction, memory) and bomb / too-many-pixels refusals.
"""
