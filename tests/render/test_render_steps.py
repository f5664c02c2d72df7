"""Step validation, JSON round trip and geometry planning, without ImageMagick."""

import pytest

from damjobs.errors import DefinitionError
from damjobs.render import geometry, steps, wand_setup


def error_of(raw: list) -> str:
    with pytest.raises(DefinitionError) as caught:
        steps.parse_steps(raw)
    return caught.value.message


def test_parse_every_kind() -> None:
    parsed = steps.parse_steps(
        [
            {"kind": "crop", "x": 0, "y": 5, "width": 10, "height": 20},
            {"kind": "resize", "width": 100},
            {
                "kind": "canvas",
                "height": 50,
                "enlarge": True,
                "background": "#ff000080",
            },
            {
                "kind": "merge",
                "resource_file_id": 3,
                "horizontal": "left",
                "vertical": "bottom",
                "layer": "below",
            },
            {"kind": "dpi", "dpi": 300},
            {"kind": "quality", "quality": 40},
        ]
    )
    assert parsed == (
        steps.Crop(0, 5, 10, 20),
        steps.Resize(width=100),
        steps.Canvas(height=50, enlarge=True, background="#ff000080"),
        steps.Merge(3, "left", "bottom", "below"),
        steps.Dpi(300),
        steps.Quality(40),
    )


def test_steps_are_hashable() -> None:
    parsed = steps.parse_steps(
        [{"kind": "resize", "width": 10}, {"kind": "resize", "width": 10}]
    )
    assert len(set(parsed)) == 1


def test_dict_round_trip() -> None:
    raw = [
        {"kind": "canvas", "width": 80, "enlarge": False, "background": "transparent"},
        {
            "kind": "merge",
            "resource_file_id": 9,
            "horizontal": "right",
            "vertical": "top",
            "layer": "above",
        },
    ]
    parsed = steps.parse_steps(raw)
    assert [steps.step_to_dict(step) for step in parsed] == raw
    assert (
        tuple(steps.step_from_dict(steps.step_to_dict(step)) for step in parsed)
        == parsed
    )


def test_unknown_kind_lists_allowed() -> None:
    message = error_of([{"kind": "resize", "width": 1}, {"kind": "blur"}])
    assert message.startswith("step 2:")
    assert "'blur'" in message
    assert "crop, resize, canvas, merge, dpi, quality" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"kind": "crop", "x": -1, "y": 0, "width": 1, "height": 1},
            "x -1 is invalid; allowed: an integer >= 0",
        ),
        (
            {"kind": "crop", "x": 0, "y": 0, "width": 0, "height": 1},
            "width 0 is invalid; allowed: an integer >= 1",
        ),
        ({"kind": "crop", "x": 0, "y": 0, "width": 2}, "height is missing"),
        ({"kind": "resize", "width": 1.5}, "width 1.5 is invalid"),
        ({"kind": "resize", "width": True}, "width True is invalid"),
        ({"kind": "resize"}, "width and height are both missing"),
        (
            {"kind": "canvas", "width": 5, "enlarge": "yes"},
            "enlarge 'yes' is invalid; allowed: true or false",
        ),
        (
            {"kind": "canvas", "width": 5, "background": "url(x)"},
            "background 'url(x)' is invalid",
        ),
        (
            {"kind": "merge", "resource_file_id": 1, "horizontal": "middle"},
            "horizontal 'middle' is invalid; allowed: left, center, right",
        ),
        (
            {"kind": "merge", "resource_file_id": 1, "vertical": "center"},
            "vertical 'center' is invalid; allowed: top, middle, bottom",
        ),
        (
            {"kind": "merge", "resource_file_id": 1, "layer": "behind"},
            "layer 'behind' is invalid; allowed: above, below",
        ),
        (
            {"kind": "dpi", "dpi": 10001},
            "dpi 10001 is invalid; allowed: an integer from 1 to 10000",
        ),
        (
            {"kind": "quality", "quality": 0},
            "quality 0 is invalid; allowed: an integer from 1 to 100",
        ),
        (
            {"kind": "quality", "quality": 50, "level": 2},
            "field 'level' is unknown; allowed fields: quality",
        ),
    ],
)
def test_invalid_field_message(raw: dict, expected: str) -> None:
    message = error_of([raw])
    assert message.startswith(f"step 1 ({raw['kind']}): ")
    assert expected in message


def test_steps_not_a_list() -> None:
    assert "must be a list" in error_of("resize")  # type: ignore[arg-type]


def test_output_format_validation() -> None:
    assert steps.parse_output_format("webp") == "webp"
    with pytest.raises(
        DefinitionError, match="'gif' is invalid; allowed: jpeg, png, webp"
    ):
        steps.parse_output_format("gif")


def test_plan_resize_one_side() -> None:
    plan = geometry.plan_chain(400, 300, (steps.Resize(width=200),))
    assert (plan.width, plan.height) == (200, 150)
    assert plan.min_source_scale == 0.5


def test_plan_crop_clipped() -> None:
    plan = geometry.plan_chain(400, 300, (steps.Crop(350, 250, 100, 100),))
    assert plan.operations[0] == geometry.Rect(350, 250, 50, 50)
    assert plan.min_source_scale == 1.0


def test_plan_crop_start_outside() -> None:
    with pytest.raises(
        geometry.StepError,
        match=r"crop start \(400, 0\) lies outside the 400x300 image",
    ):
        geometry.plan_chain(400, 300, (steps.Crop(400, 0, 10, 10),))


def test_plan_canvas_no_enlarge() -> None:
    plan = geometry.plan_chain(100, 50, (steps.Canvas(width=400, height=400),))
    assert plan.operations[0] == geometry.CanvasFit(100, 50, 400, 400)


def test_plan_canvas_missing_side() -> None:
    plan = geometry.plan_chain(400, 200, (steps.Canvas(width=100),))
    assert (plan.width, plan.height) == (100, 50)


def test_plan_merge_before_resize_full_scale() -> None:
    plan = geometry.plan_chain(4000, 3000, (steps.Merge(1), steps.Resize(width=100)))
    assert plan.min_source_scale == 1.0


def test_jpeg_hint_divides() -> None:
    assert geometry.jpeg_size_hint(11000, 8250, 0.25) == (2750, 2062)
    assert geometry.jpeg_size_hint(800, 600, 0.6) is None


@pytest.mark.parametrize(
    ("value", "known"),
    [
        ("white", True),
        ("grey50", True),
        ("#ff000080", True),
        ("rgb(10,20,30)", True),
        ("whit", False),
        ("", False),
        (" white", False),
        ("white ", False),
    ],
)
def test_known_colours(value, known):
    assert wand_setup.is_known_colour(value) is known


def test_every_invalid_step_is_listed():
    with pytest.raises(DefinitionError) as raised:
        steps.parse_steps(
            [
                {"kind": "canvas", "width": 5, "background": "url(x)"},
                {"kind": "resize", "width": 10},
                {"kind": "spin"},
            ]
        )

    assert "step 1" in raised.value.message
    assert "step 3" in raised.value.message
    assert "step 2" not in raised.value.message
