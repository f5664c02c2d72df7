"""Transformation steps: their parameters, validation and JSON form.

The database stores each step as a kind plus a JSON object of parameters. `parse_steps`
turns a list of `{"kind": ..., <parameters>}` dicts into frozen, hashable step objects
and raises DefinitionError naming the step number, the field, the invalid value and what
is allowed. All sizes and offsets are pixels; `dpi` is dots per inch.
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from damjobs.errors import DefinitionError

OUTPUT_FORMATS = ("jpeg", "png", "webp")
HORIZONTAL_POSITIONS = ("left", "center", "right")
VERTICAL_POSITIONS = ("top", "middle", "bottom")
LAYERS = ("above", "below")
MAX_DPI = 10000
MAX_QUALITY = 100

_COLOUR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")
_COLOUR_HEX = re.compile(
    r"#(?:[0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8}|[0-9A-Fa-f]{12}|[0-9A-Fa-f]{16})"
)
# The hint for a colour that ImageMagick does not know.
COLOUR_HINT = "use a name that `convert -list color` prints, or #rrggbb"
# ImageMagick's functional notations, such as rgb(1,2,3), srgba(0,0,0,0.5) or
# hsl(120,50%,50%); ImageMagick itself checks the numbers.
_COLOUR_FUNCTION = re.compile(
    r"(?:rgb|srgb|hsl|hsb|hwb|gray|cmy|cmyk)a?\([0-9.,%+\- ]{1,80}\)", re.IGNORECASE
)
_COLOUR_FORMS = (
    "a colour name such as 'white', '#rgb', '#rrggbb', '#rrggbbaa', 'rgb(r,g,b)' or "
    "'transparent'"
)


@dataclasses.dataclass(frozen=True)
class Crop:
    """Cut out the rectangle that starts at (x, y); the part outside the image is
    dropped.
    """

    kind: ClassVar[str] = "crop"
    x: int
    y: int
    width: int
    height: int


@dataclasses.dataclass(frozen=True)
class Resize:
    """Scale to width x height; a missing side follows from the aspect ratio."""

    kind: ClassVar[str] = "resize"
    width: int | None = None
    height: int | None = None


@dataclasses.dataclass(frozen=True)
class Canvas:
    """
    Fit the image inside width x height keeping its aspect ratio, and centre it on a
    canvas.

    A missing side is unlimited, and that side of the canvas equals the scaled image.
    The image is only enlarged when `enlarge` is true. `background` None means the
    configured default.
    """

    kind: ClassVar[str] = "canvas"
    width: int | None = None
    height: int | None = None
    enlarge: bool = False
    background: str | None = None


@dataclasses.dataclass(frozen=True)
class Merge:
    """Draw a resource image (a DAM file) at native size at an anchor of the image."""

    kind: ClassVar[str] = "merge"
    resource_file_id: int
    horizontal: str = "center"
    vertical: str = "middle"
    layer: str = "above"


@dataclasses.dataclass(frozen=True)
class Dpi:
    """Set the density metadata written to the output, without resampling."""

    kind: ClassVar[str] = "dpi"
    dpi: int


@dataclasses.dataclass(frozen=True)
class Quality:
    """Set the encoder quality for JPEG and WebP output; PNG output ignores it."""

    kind: ClassVar[str] = "quality"
    quality: int


Step = Crop | Resize | Canvas | Merge | Dpi | Quality

STEP_TYPES: dict[str, type[Step]] = {
    cls.kind: cls for cls in (Crop, Resize, Canvas, Merge, Dpi, Quality)
}


def parse_steps(raw: Sequence[Mapping[str, Any]]) -> tuple[Step, ...]:
    """
    Validate a list of step dicts and return the steps in order. Raise DefinitionError
    that lists the problem of every invalid step.
    """
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise DefinitionError(
            f"steps must be a list of objects, got {type(raw).__name__}"
        )
    parsed = []
    problems = []
    for number, item in enumerate(raw, start=1):
        try:
            parsed.append(_parse_step(item, number))
        except DefinitionError as error:
            problems.append(error.message)
    if problems:
        raise DefinitionError("; ".join(problems))

    return tuple(parsed)


def step_from_dict(raw: Mapping[str, Any]) -> Step:
    """Validate one step dict, as stored in the database; raise DefinitionError."""
    return _parse_step(raw, 1)


def step_to_dict(step: Step) -> dict[str, Any]:
    """Return the JSON-ready dict of a step: its kind and every parameter set."""
    result: dict[str, Any] = {"kind": step.kind}
    for field in dataclasses.fields(step):
        value = getattr(step, field.name)
        if value is not None:
            result[field.name] = value

    return result


def parse_output_format(value: object) -> str:
    """Return `value` if it is one of OUTPUT_FORMATS, else raise DefinitionError."""
    if value not in OUTPUT_FORMATS:
        raise DefinitionError(
            f"output format {value!r} is invalid; allowed: {', '.join(OUTPUT_FORMATS)}"
        )

    return str(value)


class _StepReader:
    """Read and check the parameters of one step, naming the step in every error."""

    def __init__(self, raw: Mapping[str, Any], number: int, kind: str) -> None:
        self.raw = raw
        self.label = f"step {number} ({kind})"

    def fail(self, field: str, value: object, allowed: str) -> DefinitionError:
        return DefinitionError(
            f"{self.label}: {field} {value!r} is invalid; allowed: {allowed}"
        )

    def integer(
        self,
        field: str,
        minimum: int,
        maximum: int | None = None,
        required: bool = True,
    ) -> int | None:
        if field not in self.raw or self.raw[field] is None:
            if required:
                raise DefinitionError(
                    f"{self.label}: {field} is missing; it is required"
                )
            return None
        value = self.raw[field]
        allowed = (
            f"an integer from {minimum} to {maximum}"
            if maximum is not None
            else f"an integer >= {minimum}"
        )
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, value, allowed)
        if value < minimum or (maximum is not None and value > maximum):
            raise self.fail(field, value, allowed)
        return value

    def choice(self, field: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw.get(field, default)
        if value not in choices:
            raise self.fail(field, value, ", ".join(choices))
        return str(value)

    def boolean(self, field: str, default: bool) -> bool:
        value = self.raw.get(field, default)
        if not isinstance(value, bool):
            raise self.fail(field, value, "true or false")
        return value

    def colour(self, field: str) -> str | None:
        value = self.raw.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not (
            _COLOUR_NAME.fullmatch(value)
            or _COLOUR_HEX.fullmatch(value)
            or _COLOUR_FUNCTION.fullmatch(value)
        ):
            raise self.fail(field, value, _COLOUR_FORMS)
        return value


def _parse_step(raw: Mapping[str, Any], number: int) -> Step:
    if not isinstance(raw, Mapping):
        raise DefinitionError(
            f"step {number}: expected an object with a 'kind', got {raw!r}"
        )
    kind = raw.get("kind")
    step_type = STEP_TYPES.get(kind) if isinstance(kind, str) else None
    if step_type is None:
        raise DefinitionError(
            f"step {number}: kind {kind!r} is invalid; allowed: {', '.join(STEP_TYPES)}"
        )

    field_names = [field.name for field in dataclasses.fields(step_type)]
    unknown = sorted(
        str(name) for name in raw if name != "kind" and name not in field_names
    )
    if unknown:
        raise DefinitionError(
            f"step {number} ({kind}): field {unknown[0]!r} is unknown; "
            f"allowed fields: {', '.join(field_names)}"
        )

    reader = _StepReader(raw, number, step_type.kind)
    step: Step
    if step_type is Crop:
        step = Crop(
            x=_required(reader.integer("x", 0)),
            y=_required(reader.integer("y", 0)),
            width=_required(reader.integer("width", 1)),
            height=_required(reader.integer("height", 1)),
        )
    elif step_type is Resize or step_type is Canvas:
        width = reader.integer("width", 1, required=False)
        height = reader.integer("height", 1, required=False)
        if width is None and height is None:
            raise DefinitionError(
                f"{reader.label}: width and height are both missing; give at least one"
            )
        if step_type is Resize:
            step = Resize(width=width, height=height)
        else:
            step = Canvas(
                width=width,
                height=height,
                enlarge=reader.boolean("enlarge", False),
                background=reader.colour("background"),
            )
    elif step_type is Merge:
        step = Merge(
            resource_file_id=_required(reader.integer("resource_file_id", 1)),
            horizontal=reader.choice("horizontal", HORIZONTAL_POSITIONS, "center"),
            vertical=reader.choice("vertical", VERTICAL_POSITIONS, "middle"),
            layer=reader.choice("layer", LAYERS, "above"),
        )
    elif step_type is Dpi:
        step = Dpi(dpi=_required(reader.integer("dpi", 1, MAX_DPI)))
    else:
        step = Quality(quality=_required(reader.integer("quality", 1, MAX_QUALITY)))

    return step


def _required(value: int | None) -> int:
    # `_StepReader.integer(..., required=True)` raises instead of returning None.
    assert value is not None
    return value
