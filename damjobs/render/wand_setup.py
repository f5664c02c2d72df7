"""The one module that imports Wand, after putting damjobs's ImageMagick policy in
place.

ImageMagick reads `MAGICK_CONFIGURE_PATH` once, when the library is loaded, and then
applies every policy.xml it finds there in addition to the system one. So this module
sets the variable before its `import wand` and raises if Wand was imported earlier by
someone else. Every other damjobs module reaches Wand through the names exported here.

It also wraps the MagickCore calls that Wand 0.7 does not expose: reading the exception
that a coder left on the image, and applying an ICC profile with a colour transform.
"""

import contextlib
import ctypes
import importlib.resources
import os
import sys
import warnings

_POLICY_FOLDER_CONTEXT = contextlib.ExitStack()


def _policy_folder() -> str:
    """
    Return the folder of damjobs's policy.xml: the package folder when it is on disk.

    ImageMagick looks in that folder only for its own configuration names (policy.xml,
    colors.xml, delegates.xml and the like), so the Python files beside it are ignored.
    """
    resource = importlib.resources.files("damjobs.render") / "policy.xml"
    path = _POLICY_FOLDER_CONTEXT.enter_context(importlib.resources.as_file(resource))

    return str(path.parent)


if "wand.api" in sys.modules:
    raise RuntimeError(
        "Wand was imported before damjobs.render.wand_setup, "
        "so damjobs's ImageMagick policy "
        "is not active; import Wand only through damjobs.render.wand_setup"
    )

POLICY_FOLDER = _policy_folder()
_configured = os.environ.get("MAGICK_CONFIGURE_PATH", "")
if POLICY_FOLDER not in _configured.split(os.pathsep):
    os.environ["MAGICK_CONFIGURE_PATH"] = os.pathsep.join(
        p for p in (POLICY_FOLDER, _configured) if p
    )

from wand.api import libmagick, library  # noqa: E402
from wand.color import Color  # noqa: E402
from wand.exceptions import (  # noqa: E402
    CacheError,
    ResourceLimitError,
    ResourceLimitFatalError,
    ResourceLimitWarning,
    WandException,
)
from wand.image import IMAGE_TYPES, Image  # noqa: E402
from wand.resource import limits as resource_limits  # noqa: E402

__all__ = [
    "POLICY_FOLDER",
    "Color",
    "Image",
    "ImageProblem",
    "NoReasonError",
    "WandException",
    "apply_profile",
    "has_profile",
    "image_problem",
    "is_known_colour",
    "is_resource_limit",
    "pixel_cache_bytes",
    "pixel_cache_limits",
    "read_image",
    "set_image_type",
]

# Severity values of MagickCore's ExceptionType enum (ImageMagick 6,
# magick/exception.h).
ERROR_SEVERITY = 400
CORRUPT_IMAGE_WARNING = 325


class _ExceptionInfoHead(ctypes.Structure):
    """The leading fields of MagickCore's ExceptionInfo struct, which is all this module
    reads.
    """

    _fields_ = [
        ("severity", ctypes.c_int),
        ("error_number", ctypes.c_int),
        ("reason", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
    ]


libmagick.GetImageException.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
libmagick.GetImageException.restype = None
libmagick.DestroyExceptionInfo.argtypes = [ctypes.c_void_p]
libmagick.DestroyExceptionInfo.restype = ctypes.c_void_p
library.MagickProfileImage.argtypes = [
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
]
library.MagickProfileImage.restype = ctypes.c_int
library.MagickSetFilename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
library.MagickSetFormat.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
library.MagickReadImageBlob.argtypes = [
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_size_t,
]
library.MagickReadImageBlob.restype = ctypes.c_int
library.MagickSetType.argtypes = [ctypes.c_void_p, ctypes.c_int]
library.MagickSetType.restype = ctypes.c_int


class ImageProblem:
    """The highest-severity exception that a coder recorded on a decoded image."""

    def __init__(self, severity: int, reason: str) -> None:
        self.severity = severity
        self.reason = reason

    @property
    def is_corrupt(self) -> bool:
        """True for errors and for the warning libjpeg gives on a truncated file."""
        return self.severity >= ERROR_SEVERITY or self.severity == CORRUPT_IMAGE_WARNING

    def __repr__(self) -> str:
        return f"ImageProblem({self.severity}, {self.reason!r})"


class NoReasonError(WandException):
    """A MagickWand call failed without setting an exception."""


def read_image(
    data: bytes,
    fmt: str,
    *,
    first_frame: bool,
    jpeg_size: tuple[int, int] | None = None,
) -> Image:
    """
    Decode `data` with the coder of `fmt` and no content sniffing.

    `first_frame` reads only frame or page 0 of a GIF, TIFF or WebP. It works through
    the "[0]" scene suffix on the fixed name "buffer.<fmt>", not a name from the input.
    `jpeg_size` is the `jpeg:size` hint that lets libjpeg decode at a reduced scale.
    Raise WandException when the read fails.
    """
    image = Image()
    try:
        if jpeg_size is not None:
            image.options["jpeg:size"] = f"{jpeg_size[0]}x{jpeg_size[1]}"
        coder = fmt.encode()
        library.MagickSetFormat(image.wand, coder)
        suffix = b"[0]" if first_frame else b""
        library.MagickSetFilename(image.wand, b"buffer." + coder + suffix)
        if not library.MagickReadImageBlob(image.wand, data, len(data)):
            image.raise_exception()
            raise NoReasonError(
                f"ImageMagick could not read the {fmt} data and gave no reason"
            )
        # A coder can report an error and still return an image. The TIFF coder does
        # so for corrupt LZW data. Wand would raise it at the next operation instead.
        if library.MagickGetExceptionType(image.wand) >= ERROR_SEVERITY:
            image.raise_exception()
    except BaseException:
        image.close()
        raise

    return image


def image_problem(image: Image) -> ImageProblem | None:
    """
    Return the exception that the coder stored on the image, or None.

    Wand only looks at the wand's exception after a failed read. Coders of ImageMagick 6
    report warnings, and some errors, on the image struct instead, where only
    GetImageException reads them.
    """
    info = libmagick.AcquireExceptionInfo()
    try:
        libmagick.GetImageException(library.GetImageFromMagickWand(image.wand), info)
        head = _ExceptionInfoHead.from_address(info)
        if head.severity == 0:
            return None
        parts = [
            part.decode(errors="replace")
            for part in (head.reason, head.description)
            if part
        ]
        return ImageProblem(head.severity, " ".join(parts))
    finally:
        libmagick.DestroyExceptionInfo(info)


def has_profile(image: Image, name: str) -> bool:
    """Return True when the image carries the named profile, e.g. "icc"."""
    # Wand 0.7's ProfileDict returns None for a missing key instead of raising KeyError,
    # so the `in` operator of its Mapping base class is always True.
    return name in list(image.profiles)


def apply_profile(image: Image, icc: bytes) -> None:
    """
    Apply an ICC profile through MagickProfileImage.

    When the image already has a profile, the pixels are transformed from that profile
    into `icc` by LCMS; otherwise `icc` is only attached and describes the existing
    pixels. Wand's `profiles[...] = ...` always only attaches, so it cannot convert.
    """
    buffer = ctypes.create_string_buffer(icc, len(icc))
    if not library.MagickProfileImage(image.wand, b"icc", buffer, len(icc)):
        image.raise_exception()
        raise WandException(
            "ImageMagick could not apply the ICC profile and gave no reason"
        )


def set_image_type(image: Image, image_type: str) -> None:
    """
    Set the image type that the encoder writes, e.g. "truecolor".

    Wand's `type` property converts the pixels but leaves the wand's own type setting
    alone, and ImageMagick 6's JPEG encoder still writes all-grey pixels as a one-
    channel JPEG unless that setting is TrueColor.
    """
    library.MagickSetType(image.wand, IMAGE_TYPES.index(image_type))


def is_known_colour(value: str) -> bool:
    """
    Return True when ImageMagick can parse `value` as a colour, such as 'white'. An empty
    value and one with spaces around it are rejected, although ImageMagick reads them
    (the empty one as white).
    """
    if not value or value != value.strip():
        return False
    with warnings.catch_warnings():
        # Wand warns about an unknown name before it raises ValueError.
        warnings.simplefilter("ignore")
        try:
            with Color(value):
                pass
        except ValueError:
            return False

    return True


# Bytes per pixel in the pixel cache of a Q16 ImageMagick 6 build: four 16-bit channels.
PIXEL_CACHE_BYTES_PER_PIXEL = 8

# The hint for an image too large for ImageMagick's resource limits.
RESOURCE_LIMIT_HINT = (
    "raise the memory, map and disk limits in ImageMagick's policy.xml "
    "(`identify -list resource` prints them) or lower render.max_pixels"
)


def pixel_cache_bytes(width: int, height: int) -> int:
    """Return the pixel cache size of one width x height image in a Q16 build."""
    return width * height * PIXEL_CACHE_BYTES_PER_PIXEL


def pixel_cache_limits() -> dict[str, int]:
    """Return ImageMagick's memory, map and disk limits in bytes, as the policy sets them."""
    return {name: int(resource_limits[name]) for name in ("memory", "map", "disk")}


def is_resource_limit(error: WandException) -> bool:
    """
    Return True when `error` reports a resource limit, such as "cache resources
    exhausted" (a CacheError) when an image needs more pixel cache than the limits allow.
    """
    return isinstance(
        error,
        CacheError
        | ResourceLimitError
        | ResourceLimitFatalError
        | ResourceLimitWarning,
    )
