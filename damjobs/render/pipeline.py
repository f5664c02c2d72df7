"""Render every missing cache entry of one original, in the calling process.

The original is read, checked (magic number, header size, limits, decoder warnings) and
decoded once. Each derivative is rendered from a clone of the decoded image. A problem
with the original fails all of its entries, but a problem with one derivative fails
only that entry. The pool's worker processes call `render_source`, and so can tests and
single-process callers.
"""

import functools
import logging
from pathlib import Path

from damjobs import cache
from damjobs.errors import PathOutsideRootError, StorageError
from damjobs.render import formats, geometry, steps
from damjobs.render.types import (
    CopyTarget,
    Derivative,
    EntryResult,
    RenderSettings,
    SourceJob,
)
from damjobs.render.wand_setup import (
    RESOURCE_LIMIT_HINT,
    Color,
    Image,
    NoReasonError,
    WandException,
    apply_profile,
    has_profile,
    image_problem,
    is_resource_limit,
    pixel_cache_bytes,
    pixel_cache_limits,
    read_image,
    set_image_type,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

# Wand names of the EXIF orientations 5 to 8, whose display swaps width and height.
_TRANSPOSED_ORIENTATIONS = frozenset(
    {"left_top", "right_top", "right_bottom", "left_bottom"}
)
# Formats that can hold several frames or pages; only the first one is decoded.
_MULTI_FRAME_FORMATS = frozenset({"gif", "tiff", "webp"})
_FALLBACK_FLATTEN_COLOUR = "white"
_PNG_CHUNKS_EXCLUDED_WITH_DPI = (
    "bKGD,caNv,cHRM,eXIf,gAMA,iCCP,iTXt,sRGB,tEXt,zCCP,zTXt,date"
)


class EntryFailure(Exception):
    """A failure with one of FAILURE_CLASSES and a message for the user."""

    def __init__(self, failure: str, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


class DecodedSource:
    """An original: decoded, converted to sRGB, auto-oriented, metadata stripped."""

    def __init__(self, image: Image, full_width: int, full_height: int) -> None:
        self.image = image
        self.full_width = full_width
        """Width of the auto-oriented source at full resolution, used by the plans."""
        self.full_height = full_height
        self.scale_x = image.width / full_width
        """Decoded pixels per full-resolution pixel, below 1 after a reduced decode."""
        self.scale_y = image.height / full_height


def render_source(job: SourceJob, settings: RenderSettings) -> list[EntryResult]:
    """
    Write every copy and derivative of `job`; return one result per entry, copies first.

    Failures of the source or of single entries become results. Only programming errors
    raise.
    """
    try:
        data = read_original(settings.originals_root, job.relative_path)
    except EntryFailure as failure:
        return _fail_all(job, failure)

    if not job.transformable:
        results = [_write_copy(copy, data, settings) for copy in job.copies]
        not_transformable = EntryFailure(
            "unsupported_format",
            f"file {job.file_id} is not transformable, so it has only byte copies",
        )
        results += [
            _failed(derivative.entry_id, not_transformable)
            for derivative in job.derivatives
        ]
        return results

    chains = [_chain(derivative) for derivative in job.derivatives]
    try:
        source = decode_source(data, settings, chains)
    except EntryFailure as failure:
        return _fail_all(job, failure)

    resources = _ResourceCache(job, settings)
    try:
        results = [_write_copy(copy, data, settings) for copy in job.copies]
        for derivative in job.derivatives:
            results.append(_render_entry(derivative, source, resources, settings))
    finally:
        source.image.close()
        resources.close()

    return results


def read_original(root: Path, relative_path: str) -> bytes:
    """
    Return the bytes of a file below `root`.

    Raise EntryFailure when the path leaves the root or the file is missing or empty.
    """
    try:
        path = cache.resolve_inside(root, relative_path)
    except PathOutsideRootError as error:
        raise EntryFailure("outside_root", error.message) from error
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
        raise EntryFailure(
            "missing", f"original {relative_path!r} not found: {error.strerror}"
        ) from error
    except OSError as error:
        raise EntryFailure(
            "missing", f"original {relative_path!r} cannot be read: {error.strerror}"
        ) from error
    if not data:
        raise EntryFailure("empty", f"original {relative_path!r} is empty (0 bytes)")

    return data


def check_source(data: bytes, settings: RenderSettings) -> tuple[str, int, int]:
    """
    Return the sniffed format and header size of an original, before any decoding.

    Raise EntryFailure when the format is not allowed, the header is invalid, the image
    exceeds the configured limits or a JPEG lacks its end marker.
    """
    fmt = formats.sniff_format(data[:16])
    if fmt is None:
        raise EntryFailure(
            "unsupported_format",
            f"content starting with {data[:8]!r} is not one of the allowed formats "
            f"({', '.join(formats.ALLOWED_FORMATS)})",
        )
    size = formats.header_size(data, fmt)
    if size is None:
        raise EntryFailure("corrupt", f"the {fmt} header is truncated or invalid")
    width, height = size
    check_limits(width, height, settings, "image")
    if fmt == "jpeg" and not formats.jpeg_is_complete(data):
        raise EntryFailure(
            "corrupt",
            "the JPEG data is truncated: it does not end with the end-of-image marker",
        )

    return fmt, width, height


def check_limits(
    width: int, height: int, settings: RenderSettings, subject: str
) -> None:
    """Raise EntryFailure("too_large") when a size exceeds max_width, max_height or
    max_pixels.
    """
    if width > settings.max_width:
        raise EntryFailure(
            "too_large",
            f"{subject} width {width} exceeds max_width {settings.max_width}",
        )
    if height > settings.max_height:
        raise EntryFailure(
            "too_large",
            f"{subject} height {height} exceeds max_height {settings.max_height}",
        )
    if width * height > settings.max_pixels:
        raise EntryFailure(
            "too_large",
            f"{subject} size {width}x{height} = {width * height} pixels "
            f"exceeds max_pixels {settings.max_pixels}",
        )


def decode_source(
    data: bytes,
    settings: RenderSettings,
    chains: list[tuple[steps.Step, ...]] | None = None,
) -> DecodedSource:
    """
    Check and decode an original, then convert it to sRGB, auto-orient it and strip its
    metadata.

    `chains` are the step chains that will be applied to the result. A JPEG is decoded
    at the smallest scale that keeps all of them at full quality; None means full
    resolution. Raise EntryFailure when the original is rejected or cannot be decoded.
    """
    fmt, header_width, header_height = check_source(data, settings)
    hint = None
    if fmt == "jpeg" and chains is not None:
        orientation = formats.jpeg_orientation(data)
        min_scale = min_source_scale(header_width, header_height, orientation, chains)
        hint = geometry.jpeg_size_hint(header_width, header_height, min_scale)
    try:
        image = read_image(
            data, fmt, first_frame=fmt in _MULTI_FRAME_FORMATS, jpeg_size=hint
        )
    except WandException as error:
        size = f"{header_width}x{header_height}"
        needed = pixel_cache_bytes(header_width, header_height)
        if is_resource_limit(error):
            raise EntryFailure(
                "too_large",
                f"the {size} {fmt} image needs {needed // MIB} MiB of pixel cache, "
                f"more than ImageMagick's limits allow ({error}): {RESOURCE_LIMIT_HINT}",
            ) from error
        message = f"the {fmt} data cannot be decoded: {error}"
        memory = pixel_cache_limits()["memory"]
        if isinstance(error, NoReasonError) and needed > memory:
            # A truncated file and a file over ImageMagick's limits can both fail
            # without a reason, so the message names both causes.
            message += (
                f". Either the data is corrupt, or the {size} image's pixel cache of "
                f"{needed // MIB} MiB, above ImageMagick's memory limit of "
                f"{memory // MIB} MiB, was refused; if the file opens elsewhere, "
                f"{RESOURCE_LIMIT_HINT}"
            )
        raise EntryFailure("corrupt", message) from error

    try:
        if image.width == 0 or image.height == 0:
            raise EntryFailure(
                "corrupt",
                f"the {fmt} data decoded to an empty "
                f"{image.width}x{image.height} image",
            )
        problem = image_problem(image)
        if problem is not None and problem.is_corrupt:
            raise EntryFailure(
                "corrupt", f"the {fmt} data is truncated or corrupt: {problem.reason}"
            )
        if problem is not None:
            logger.debug(
                "decoder warning %d ignored: %s", problem.severity, problem.reason
            )

        transposed = image.orientation in _TRANSPOSED_ORIENTATIONS
        image.reset_coords()
        convert_to_srgb(image, settings)
        image.auto_orient()
        image.strip()
    except EntryFailure:
        image.close()
        raise
    except WandException as error:
        image.close()
        raise EntryFailure(
            "corrupt", f"the {fmt} image cannot be prepared: {error}"
        ) from error

    if hint is None:
        full_width, full_height = image.width, image.height
    elif transposed:
        full_width, full_height = header_height, header_width
    else:
        full_width, full_height = header_width, header_height

    return DecodedSource(image, full_width, full_height)


def convert_to_srgb(image: Image, settings: RenderSettings) -> None:
    """
    Convert the pixels to sRGB, through ICC profiles when possible.

    A CMYK image without an embedded profile is first given `settings.cmyk_profile`. A
    profiled image is transformed into `settings.srgb_profile` by LCMS. Without profiles
    ImageMagick's colorspace formulas are used, which shift colours of profiled CMYK
    visibly.
    """
    srgb_icc = _read_profile(settings.srgb_profile)
    if (
        image.colorspace == "cmyk"
        and not has_profile(image, "icc")
        and settings.cmyk_profile is not None
    ):
        apply_profile(image, _read_profile(settings.cmyk_profile) or b"")
    if srgb_icc and has_profile(image, "icc"):
        try:
            apply_profile(image, srgb_icc)
        except WandException as error:
            # The embedded profile does not fit the pixels, so use the formulas below.
            logger.info(
                "ICC conversion to sRGB failed, using colorspace conversion: %s", error
            )
    if image.colorspace != "srgb":
        image.transform_colorspace("srgb")


@functools.lru_cache(maxsize=4)
def _read_profile(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise EntryFailure(
            "render_failed", f"ICC profile {path} cannot be read: {error.strerror}"
        ) from error


def min_source_scale(
    width: int,
    height: int,
    orientation: int | None,
    chains: list[tuple[steps.Step, ...]],
) -> float:
    """
    Return the smallest decode scale of a width x height source that keeps every chain
    at full quality.

    `orientation` is the EXIF orientation; 5 to 8 swap width and height, and None
    (unknown) plans for both sizes and takes the larger need. A chain that cannot apply
    is skipped, because its entry fails anyway. Without chains the source is only
    decoded to validate it, so the smallest scale libjpeg offers (1/8) is enough.
    """
    if not chains:
        return 0.125
    if orientation is None:
        sizes = [(width, height), (height, width)]
    elif orientation >= 5:
        sizes = [(height, width)]
    else:
        sizes = [(width, height)]
    needed = 0.0
    for chain in chains:
        for planned_width, planned_height in sizes:
            try:
                plan = geometry.plan_chain(planned_width, planned_height, chain)
            except geometry.StepError:
                continue
            needed = max(needed, plan.min_source_scale)

    return needed or 1.0


class _ResourceCache:
    """Cache of the decoded merge resources of one job."""

    def __init__(self, job: SourceJob, settings: RenderSettings) -> None:
        self.job = job
        self.settings = settings
        self.images: dict[int, Image] = {}

    def get(self, file_id: int) -> Image:
        if file_id in self.images:
            return self.images[file_id]
        relative_path = self.job.resources.get(file_id)
        if relative_path is None:
            raise EntryFailure(
                "render_failed",
                f"merge resource file {file_id} is not among the job's resources",
            )
        try:
            data = read_original(self.settings.originals_root, relative_path)
            decoded = decode_source(data, self.settings)
        except EntryFailure as failure:
            raise EntryFailure(
                "render_failed", f"merge resource file {file_id}: {failure.message}"
            ) from failure
        self.images[file_id] = decoded.image
        return decoded.image

    def close(self) -> None:
        for image in self.images.values():
            image.close()


def _render_entry(
    derivative: Derivative,
    source: DecodedSource,
    resources: _ResourceCache,
    settings: RenderSettings,
) -> EntryResult:
    try:
        target = _checked_target(derivative.target, settings)
        data = render_derivative(derivative, source, resources, settings)
        size = cache.atomic_write(target, data, settings.cache_root, settings.ownership)
    except EntryFailure as failure:
        return _failed(derivative.entry_id, failure)
    except geometry.StepError as error:
        return _failed(derivative.entry_id, EntryFailure("render_failed", str(error)))
    except StorageError as error:
        return _failed(
            derivative.entry_id, EntryFailure("render_failed", error.message)
        )
    except OSError as error:
        # cache.make_parent_folders raises OSError itself, not StorageError.
        message = f"cannot create the folders of {derivative.target}: {error}"
        return _failed(derivative.entry_id, EntryFailure("render_failed", message))
    except WandException as error:
        message = f"ImageMagick failed: {error}"
        if is_resource_limit(error):
            message += f"; {RESOURCE_LIMIT_HINT}"
        return _failed(derivative.entry_id, EntryFailure("render_failed", message))

    return EntryResult(derivative.entry_id, size, None, "")


def render_derivative(
    derivative: Derivative,
    source: DecodedSource,
    resources: _ResourceCache,
    settings: RenderSettings,
) -> bytes:
    """Apply the crop and steps of `derivative` to a clone of the source and return the
    encoded bytes.
    """
    chain = _chain(derivative)
    plan = geometry.plan_chain(source.full_width, source.full_height, chain)
    check_limits(plan.width, plan.height, settings, "output")

    quality = settings.default_quality
    dpi: int | None = None
    scale_x, scale_y = source.scale_x, source.scale_y
    image = source.image.clone()
    try:
        for step, operation in zip(chain, plan.operations, strict=True):
            if isinstance(operation, geometry.Rect):
                _crop(image, operation, scale_x, scale_y)
            elif isinstance(operation, tuple):
                image.resize(operation[0], operation[1])
                scale_x = scale_y = 1.0
            elif isinstance(operation, geometry.CanvasFit):
                assert isinstance(step, steps.Canvas)
                image = _place_on_canvas(
                    image, operation, step.background or settings.default_background
                )
                scale_x = scale_y = 1.0
            elif isinstance(step, steps.Merge):
                image = _merge(image, resources.get(step.resource_file_id), step)
            elif isinstance(step, steps.Dpi):
                dpi = step.dpi
            elif isinstance(step, steps.Quality):
                quality = step.quality
        return encode(image, derivative.output_format, quality, dpi, settings)
    finally:
        image.close()


def _chain(derivative: Derivative) -> tuple[steps.Step, ...]:
    return (
        (derivative.crop,) if derivative.crop is not None else ()
    ) + derivative.steps


def _crop(image: Image, rect: geometry.Rect, scale_x: float, scale_y: float) -> None:
    # The rectangle is in full-resolution pixels, so scale it to the decoded size.
    left = min(round(rect.x * scale_x), image.width - 1)
    top = min(round(rect.y * scale_y), image.height - 1)
    width = max(1, min(round(rect.width * scale_x), image.width - left))
    height = max(1, min(round(rect.height * scale_y), image.height - top))
    image.crop(left, top, width=width, height=height)
    image.reset_coords()


def _place_on_canvas(image: Image, fit: geometry.CanvasFit, background: str) -> Image:
    """Return a new image: `image` scaled to the fit and centred on a canvas; close
    `image`.
    """
    with image:
        image.resize(fit.image_width, fit.image_height)
        canvas = Image(
            width=fit.canvas_width,
            height=fit.canvas_height,
            background=_colour(background),
        )
        try:
            left = (fit.canvas_width - fit.image_width) // 2
            top = (fit.canvas_height - fit.image_height) // 2
            canvas.composite(image, left=left, top=top)
        except BaseException:
            canvas.close()
            raise
    return canvas


def _merge(image: Image, resource: Image, step: steps.Merge) -> Image:
    """Return the image with the resource drawn above or below it; the size stays the
    image's.
    """
    left = {
        "left": 0,
        "center": (image.width - resource.width) // 2,
        "right": image.width - resource.width,
    }
    top = {
        "top": 0,
        "middle": (image.height - resource.height) // 2,
        "bottom": image.height - resource.height,
    }
    x, y = left[step.horizontal], top[step.vertical]
    if step.layer == "above":
        image.composite(resource, left=x, top=y)
        return image

    with image:
        result = Image(
            width=image.width, height=image.height, background=Color("transparent")
        )
        try:
            result.composite(resource, left=x, top=y)
            result.composite(image, left=0, top=0)
        except BaseException:
            result.close()
            raise
    return result


def encode(
    image: Image,
    output_format: str,
    quality: int,
    dpi: int | None,
    settings: RenderSettings,
) -> bytes:
    """Return the image encoded as 8-bit sRGB `output_format`; JPEG gets alpha flattened
    on the background.
    """
    if output_format not in steps.OUTPUT_FORMATS:
        raise EntryFailure(
            "render_failed",
            f"output format {output_format!r} is invalid; "
            f"allowed: {', '.join(steps.OUTPUT_FORMATS)}",
        )

    if output_format == "jpeg":
        if image.alpha_channel:
            # The background colour comes from the PNG bKGD chunk unless it is set here.
            image.background_color = _flatten_colour(settings.default_background)
            image.alpha_channel = "remove"
            image.alpha_channel = "off"
        # A grey source would otherwise give a one-channel JPEG.
        set_image_type(image, "truecolor")
        image.compression_quality = quality
    elif output_format == "webp":
        image.compression_quality = quality
    else:
        # Force truecolour, so that grey or palette sources give 8-bit RGB(A) PNG.
        image.options["png:color-type"] = "6" if image.alpha_channel else "2"
        image.options["png:bit-depth"] = "8"
    image.depth = 8

    if dpi is not None:
        image.units = "pixelsperinch"
        image.resolution = (dpi, dpi)
        if output_format == "png":
            # strip() in ImageMagick 6.9 also excludes pHYs; exclude only the others.
            image.artifacts["png:exclude-chunk"] = _PNG_CHUNKS_EXCLUDED_WITH_DPI

    return bytes(image.make_blob(output_format))


def _colour(value: str) -> Color:
    try:
        return Color(value)
    except (ValueError, WandException) as error:
        raise EntryFailure(
            "render_failed", f"colour {value!r} is not known to ImageMagick: {error}"
        ) from error


def _flatten_colour(value: str) -> Color:
    colour = _colour(value)
    # JPEG has no alpha, so a transparent default background would flatten to black.
    return colour if colour.alpha >= 1.0 else Color(_FALLBACK_FLATTEN_COLOUR)


def _checked_target(target: Path, settings: RenderSettings) -> Path:
    try:
        relative = target.relative_to(settings.cache_root)
        return cache.resolve_inside(settings.cache_root, str(relative))
    except (ValueError, PathOutsideRootError) as error:
        raise EntryFailure(
            "outside_root",
            f"target {target} is not below the cache root {settings.cache_root}",
        ) from error


def _write_copy(copy: CopyTarget, data: bytes, settings: RenderSettings) -> EntryResult:
    try:
        target = _checked_target(copy.target, settings)
        size = cache.atomic_write(target, data, settings.cache_root, settings.ownership)
    except EntryFailure as failure:
        return _failed(copy.entry_id, failure)
    except StorageError as error:
        return _failed(copy.entry_id, EntryFailure("render_failed", error.message))
    except OSError as error:
        message = f"cannot create the folders of {copy.target}: {error}"
        return _failed(copy.entry_id, EntryFailure("render_failed", message))

    return EntryResult(copy.entry_id, size, None, "")


def _failed(entry_id: int, failure: EntryFailure) -> EntryResult:
    return EntryResult(entry_id, None, failure.failure, failure.message)


def _fail_all(job: SourceJob, failure: EntryFailure) -> list[EntryResult]:
    logger.info(
        "file %d: all entries failed (%s): %s",
        job.file_id,
        failure.failure,
        failure.message,
    )
    entry_ids = [copy.entry_id for copy in job.copies] + [
        derivative.entry_id for derivative in job.derivatives
    ]

    return [_failed(entry_id, failure) for entry_id in entry_ids]
