"""Does a photo say where it was taken? GPS coordinates in its EXIF or XMP.

A child's photo with coordinates tells whoever sees it where she lives; the policy can
have such uploads written back without them (:mod:`.scrub`). Only coordinates count
here (GPSLatitude/GPSLongitude): a GPS IFD holding just a timestamp or an altitude
locates no one, though scrubbing removes it all the same.
"""

from __future__ import annotations

import re
import warnings

from PIL import Image

GPS_IFD = 0x8825
GPS_LATITUDE = 0x0002
GPS_LONGITUDE = 0x0004
_XMP_COORDINATES = re.compile(rb"GPS(Latitude|Longitude)")
_XMP_KEYS = ("xmp", "XML:com.adobe.xmp")


def has_coordinates(img: Image.Image) -> bool:
    """Whether ``img`` (opened, not necessarily decoded) carries GPS coordinates in EXIF or
    XMP. Unreadable EXIF counts as none here; the decoder notes it separately."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gps = img.getexif().get_ifd(GPS_IFD)
        if GPS_LATITUDE in gps or GPS_LONGITUDE in gps:
            return True
    except Exception:  # noqa: BLE001 - hostile EXIF: no coordinates we can trust
        pass
    for key in _XMP_KEYS:
        xmp = img.info.get(key)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "replace")
        if isinstance(xmp, bytes) and _XMP_COORDINATES.search(xmp):
            return True
    return False
