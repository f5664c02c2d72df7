"""Recognise image formats by their magic numbers and read their size from the header.

Pure Python, no decoding: this runs before any bytes reach ImageMagick, so that a
disguised file (for example SVG named .png) never reaches a coder and an oversized image
is rejected before its pixels are allocated.
"""

import struct

ALLOWED_FORMATS = ("jpeg", "png", "gif", "webp", "tiff")
"""Formats that damjobs decodes; the names are ImageMagick coder names."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM (01) and the restart markers RST0-RST7 (D0-D7).
_JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9

_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257
_TIFF_SHORT = 3
_TIFF_LONG = 4


def sniff_format(head: bytes) -> str | None:
    """Return the allowed format whose magic number starts `head`, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"

    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """
    Return (width, height) from the header of `data` in format `fmt`, without decoding.

    Return None when the header is truncated, malformed or declares a zero side. For
    TIFF the size is the first page's; for GIF it is the logical screen.
    """
    readers = {
        "jpeg": _jpeg_size,
        "png": _png_size,
        "gif": _gif_size,
        "webp": _webp_size,
        "tiff": _tiff_size,
    }
    reader = readers.get(fmt)
    if reader is None:
        return None
    try:
        size = reader(data)
    except (struct.error, IndexError):
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None

    return size


def _png_size(data: bytes) -> tuple[int, int] | None:
    # IHDR comes first: length (4), type (4), width (4), height (4), all big-endian.
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])

    return width, height


def _gif_size(data: bytes) -> tuple[int, int] | None:
    width, height = struct.unpack("<HH", data[6:10])

    return width, height


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        # Lossy: a 3-byte frame tag, start code 9D 01 2A, then 14-bit width and height.
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        # Lossless: signature byte 2F, then width-1 and height-1 in 14 bits each.
        if data[20] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        # Extended: 4 bytes of flags, then canvas width-1 and height-1 in 24 bits each.
        if len(data) < 30:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height

    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            # A fill byte before the marker.
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI):
            return None
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF_MARKERS:
            # Segment: length (2), sample precision (1), height (2), width (2).
            if position + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length

    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (ifd_offset,) = struct.unpack(order + "I", data[4:8])
    (entry_count,) = struct.unpack(order + "H", data[ifd_offset : ifd_offset + 2])
    if ifd_offset + 2 + 12 * entry_count > len(data):
        return None

    values: dict[int, int] = {}
    for index in range(entry_count):
        start = ifd_offset + 2 + 12 * index
        tag, field_type, count = struct.unpack(order + "HHI", data[start : start + 8])
        if tag not in (_TIFF_IMAGE_WIDTH, _TIFF_IMAGE_LENGTH) or count != 1:
            continue
        # A value that fits in 4 bytes is stored in the entry itself, left-aligned.
        if field_type == _TIFF_SHORT:
            (values[tag],) = struct.unpack(order + "H", data[start + 8 : start + 10])
        elif field_type == _TIFF_LONG:
            (values[tag],) = struct.unpack(order + "I", data[start + 8 : start + 12])
    if _TIFF_IMAGE_WIDTH not in values or _TIFF_IMAGE_LENGTH not in values:
        return None

    return values[_TIFF_IMAGE_WIDTH], values[_TIFF_IMAGE_LENGTH]


def jpeg_is_complete(data: bytes) -> bool:
    """
    Return True when a JPEG stream ends with the EOI marker FF D9, ignoring trailing NUL
    padding.

    NOTE: a valid JPEG followed by other appended data also fails this check.
    """
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


_EXIF_ORIENTATION = 0x0112


def jpeg_orientation(data: bytes) -> int | None:
    """
    Return the EXIF orientation (1..8) stored in a JPEG's APP1 segment, 1 when there is
    none.

    Return None when the markers or the EXIF block cannot be parsed, so the caller can
    plan for both orientations.
    """
    position = 2
    try:
        while position + 4 <= len(data):
            if data[position] != 0xFF:
                return None
            marker = data[position + 1]
            if marker == 0xFF:
                position += 1
                continue
            if marker in _JPEG_STANDALONE_MARKERS:
                position += 2
                continue
            if marker in (_JPEG_SOS, _JPEG_EOI) or marker in _JPEG_SOF_MARKERS:
                # EXIF must precede the image data, so no orientation tag is coming.
                return 1
            (length,) = struct.unpack(">H", data[position + 2 : position + 4])
            segment = data[position + 4 : position + 2 + length]
            if marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
                return _tiff_orientation(segment[6:])
            position += 2 + length
    except (struct.error, IndexError):
        return None

    return None


def _tiff_orientation(tiff: bytes) -> int | None:
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd_offset,) = struct.unpack(order + "I", tiff[4:8])
    (entry_count,) = struct.unpack(order + "H", tiff[ifd_offset : ifd_offset + 2])
    for index in range(entry_count):
        start = ifd_offset + 2 + 12 * index
        tag, field_type = struct.unpack(order + "HH", tiff[start : start + 4])
        if tag == _EXIF_ORIENTATION and field_type == _TIFF_SHORT:
            (value,) = struct.unpack(order + "H", tiff[start + 8 : start + 10])
            return value if 1 <= value <= 8 else 1

    return 1
