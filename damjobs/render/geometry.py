"""Plan the pixel geometry of a step chain before any pixel is touched.

The plan fixes every size in the pixels of the full-resolution, auto-oriented source.
The renderer follows it even when the JPEG was decoded at a reduced scale, so a
derivative has the same size, crop and enlarge decisions whatever scale the decoder
used.
"""

import dataclasses
import math

from damjobs.render import steps


class StepError(Exception):
    """A step cannot apply to this image, for example a crop that starts outside it."""


@dataclasses.dataclass(frozen=True)
class Rect:
    """A rectangle in pixels: top-left corner and size."""

    x: int
    y: int
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class CanvasFit:
    """Placement of the image by a canvas step: its scaled size and the canvas size."""

    image_width: int
    image_height: int
    canvas_width: int
    canvas_height: int


PlannedOperation = Rect | tuple[int, int] | CanvasFit | None
"""Rect for a crop, (width, height) for a resize, CanvasFit for a canvas, None
otherwise.
"""


@dataclasses.dataclass(frozen=True)
class ChainPlan:
    """The planned operation of every step, the output size, and the decode scale it
    needs.
    """

    operations: tuple[PlannedOperation, ...]
    width: int
    height: int
    min_source_scale: float
    """The smallest decode scale (0 < s <= 1) of the source that loses no output detail.
    """


def clip_crop(step: steps.Crop, width: int, height: int) -> Rect:
    """Return the crop rectangle clipped to a width x height image; raise StepError when
    it starts outside.
    """
    if step.x >= width or step.y >= height:
        raise StepError(
            f"crop start ({step.x}, {step.y}) lies outside the {width}x{height} image; "
            f"x must be below {width} and y below {height}"
        )

    return Rect(
        step.x,
        step.y,
        min(step.width, width - step.x),
        min(step.height, height - step.y),
    )


def resize_size(step: steps.Resize, width: int, height: int) -> tuple[int, int]:
    """Return the output size of a resize step; a missing side keeps the aspect."""
    if step.width is not None and step.height is not None:
        return step.width, step.height
    if step.width is not None:
        return step.width, max(1, round(height * step.width / width))
    assert step.height is not None

    return max(1, round(width * step.height / height)), step.height


def canvas_fit(step: steps.Canvas, width: int, height: int) -> CanvasFit:
    """Return the scaled image size and the canvas size of a canvas step."""
    scale = math.inf
    if step.width is not None:
        scale = min(scale, step.width / width)
    if step.height is not None:
        scale = min(scale, step.height / height)
    if not step.enlarge:
        scale = min(scale, 1.0)

    image_width = max(1, round(width * scale))
    image_height = max(1, round(height * scale))
    if step.width is not None:
        image_width = min(image_width, step.width)
    if step.height is not None:
        image_height = min(image_height, step.height)
    canvas_width = step.width if step.width is not None else image_width
    canvas_height = step.height if step.height is not None else image_height

    return CanvasFit(image_width, image_height, canvas_width, canvas_height)


def plan_chain(width: int, height: int, chain: tuple[steps.Step, ...]) -> ChainPlan:
    """
    Plan a step chain on a width x height image; raise StepError when a step cannot
    apply.

    The decode scale it needs is the narrowest point of the chain, relative to the
    source: the smallest cumulative scale after any resize or canvas step, capped at 1.
    A merge step that runs before the first resize needs the full resolution, because it
    draws the resource at its native size onto source-sized pixels.
    """
    operations: list[PlannedOperation] = []
    scale_x = scale_y = 1.0
    narrowest_x = narrowest_y = 1.0
    resized = False
    needs_full_scale = False

    for step in chain:
        operation: PlannedOperation = None
        if isinstance(step, steps.Crop):
            operation = clip_crop(step, width, height)
            width, height = operation.width, operation.height
        elif isinstance(step, steps.Resize):
            new_width, new_height = resize_size(step, width, height)
            operation = (new_width, new_height)
            scale_x *= new_width / width
            scale_y *= new_height / height
            width, height = new_width, new_height
            resized = True
        elif isinstance(step, steps.Canvas):
            operation = canvas_fit(step, width, height)
            scale_x *= operation.image_width / width
            scale_y *= operation.image_height / height
            width, height = operation.canvas_width, operation.canvas_height
            resized = True
        elif isinstance(step, steps.Merge) and not resized:
            needs_full_scale = True
        operations.append(operation)
        narrowest_x = min(narrowest_x, scale_x)
        narrowest_y = min(narrowest_y, scale_y)

    if needs_full_scale or not resized:
        min_scale = 1.0
    else:
        min_scale = min(1.0, max(narrowest_x, narrowest_y))

    return ChainPlan(tuple(operations), width, height, min_scale)


def jpeg_size_hint(width: int, height: int, min_scale: float) -> tuple[int, int] | None:
    """
    Return the `jpeg:size` hint that makes libjpeg decode at a scale of at least
    `min_scale`.

    ImageMagick 6 turns the hint into denominator = floor(min(width / hint_width, height
    / hint_height)), and libjpeg-turbo then decodes at the smallest M/8 >=
    1/denominator. So choosing denominator = floor(1 / min_scale) and dividing the size
    by it (rounding down, which keeps the ratios at or above the denominator) guarantees
    a decode scale >= min_scale. Return None when no reduction is possible.
    """
    if min_scale <= 0:
        return None
    denominator = min(8, math.floor(1 / min_scale))
    # Below this size the floor division could push a ratio past denominator + 1.
    if denominator < 2 or min(width, height) < 64:
        return None

    return width // denominator, height // denominator
