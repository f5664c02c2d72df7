"""Fixtures for the render tests: settings on temporary roots and a render helper."""

from pathlib import Path

import pytest
from render_fixtures import Renderer, make_settings

from damjobs import cache
from damjobs.render import pipeline, steps
from damjobs.render.types import (
    CopyTarget,
    Derivative,
    EntryResult,
    RenderSettings,
    SourceJob,
)


@pytest.fixture
def settings(tmp_path: Path) -> RenderSettings:
    return make_settings(tmp_path)


@pytest.fixture
def originals(settings: RenderSettings) -> Path:
    return settings.originals_root


@pytest.fixture
def render(settings: RenderSettings) -> Renderer:
    """
    Render one original through pipeline.render_source and return its results.

    Each item of `derivatives` is (step dicts, output format) or (step dicts, output
    format, crop dict). Entry id 1 is the copy. The derivatives get 2, 3, ... and are
    written to cache/<entry id>.<extension>.
    """

    def run(
        relative_path: str,
        *derivatives: tuple,
        copy: bool = True,
        resources: dict[int, str] | None = None,
        transformable: bool = True,
    ) -> list[EntryResult]:
        copies = (CopyTarget(1, settings.cache_root / "original.bin"),) if copy else ()
        planned = []
        for entry_id, (step_dicts, output_format, *crop) in enumerate(
            derivatives, start=2
        ):
            crop_step = (
                steps.step_from_dict({"kind": "crop", **crop[0]}) if crop else None
            )
            target = (
                settings.cache_root / f"{entry_id}.{cache.EXTENSIONS[output_format]}"
            )
            planned.append(
                Derivative(
                    entry_id,
                    crop_step,
                    steps.parse_steps(step_dicts),
                    output_format,
                    target,
                )
            )
        job = SourceJob(
            7, relative_path, transformable, copies, tuple(planned), resources or {}
        )
        return pipeline.render_source(job, settings)

    return run
