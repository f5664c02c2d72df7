"""Inspect a file that is being imported into the DAM: format, size and EXIF tags."""

import dataclasses
import logging

from damjobs.render import formats
from damjobs.render.wand_setup import Image, WandException

logger = logging.getLogger(__name__)

# ImageMagick 6's default width and height resource limit; ping is skipped above it.
_MAX_PING_SIDE = 16000


@dataclasses.dataclass(frozen=True)
class Probe:
    """
    Format, size and EXIF tags of an imported file.

    The values are None and the EXIF is empty when the file is not an allowed image.
    """

    format: str | None
    width: int | None
    height: int | None
    exif: dict[str, str]
    """EXIF tag name -> value as ImageMagick prints it, e.g. "Make" -> "Canon"."""


def probe_file(data: bytes) -> Probe:
    """
    Return the format, header size and EXIF tags of `data`.

    The format comes from the magic number and the size from the header, without
    decoding. EXIF comes from an ImageMagick ping (header only for JPEG, PNG, TIFF, GIF;
    WebP is decoded fully) of the blob with that explicit format. A file that is no
    allowed image, or whose metadata cannot be read, is not an error: the fields are
    None or empty.
    """
    fmt = formats.sniff_format(data[:16])
    if fmt is None:
        return Probe(None, None, None, {})

    size = formats.header_size(data, fmt)
    if size is None:
        return Probe(fmt, None, None, {})
    width, height = size
    if width > _MAX_PING_SIDE or height > _MAX_PING_SIDE:
        return Probe(fmt, width, height, {})

    return Probe(fmt, width, height, read_exif(data, fmt))


def read_exif(data: bytes, fmt: str) -> dict[str, str]:
    """Return the EXIF tags of an image blob of a known format; empty when there are
    none or on error.
    """
    try:
        with Image.ping(blob=data, format=fmt) as image:
            metadata = dict(image.metadata.items())
    except WandException as error:
        logger.info("EXIF of a %s file cannot be read: %s", fmt, error)
        return {}

    exif = {}
    for key, value in metadata.items():
        name = key.removeprefix("exif:")
        # Skip "exif:thumbnail:..." tags, because they describe the embedded thumbnail.
        if name != key and ":" not in name:
            exif[name] = value

    return exif
