"""RenderPool with spawned worker processes: time limits, crashes, recycling, stop and
real rendering.
"""

import time
from pathlib import Path

import render_pool_hooks as hooks
from PIL import Image as PillowImage
from render_fixtures import convert, make_settings

from damjobs.render import pool, steps
from damjobs.render.types import CopyTarget, Derivative, RenderSettings, SourceJob


def fake_job(file_id: int, cache_root: Path) -> SourceJob:
    return SourceJob(
        file_id,
        "unused.png",
        True,
        (CopyTarget(file_id, cache_root / str(file_id)),),
        (),
        {},
    )


def run_all(settings: RenderSettings, file_ids: list[int]) -> dict[int, list]:
    with pool.RenderPool(settings, render=hooks.fake_render) as render_pool:
        return {
            job.file_id: results
            for job, results in render_pool.run(
                fake_job(i, settings.cache_root) for i in file_ids
            )
        }


def test_hang_times_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, timeout_seconds=1.0)
    started = time.monotonic()
    results = run_all(settings, [hooks.HANG, 1, 2])
    assert time.monotonic() - started < 10
    assert results[hooks.HANG][0].failure == "timed_out"
    assert "timeout_seconds 1" in results[hooks.HANG][0].message
    assert results[1][0].failure is None
    assert results[2][0].failure is None


def test_segfault_isolated(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=1)
    results = run_all(settings, [1, hooks.SEGFAULT, 2])
    assert results[hooks.SEGFAULT][0].failure == "crashed"
    assert "SIGSEGV" in results[hooks.SEGFAULT][0].message
    assert results[1][0].failure is None
    assert results[2][0].failure is None
    # A fresh worker took over after the crash.
    assert results[1][0].size_bytes != results[2][0].size_bytes


def test_exception_fails_job_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=1)
    results = run_all(settings, [hooks.RAISE, 1])
    assert results[hooks.RAISE][0].failure == "crashed"
    assert "ValueError: render hook failure" in results[hooks.RAISE][0].message
    assert results[1][0].failure is None


def test_workers_recycled(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=1, images_per_worker=2)
    results = run_all(settings, [1, 2, 3, 4, 5])
    pids = [results[i][0].size_bytes for i in range(1, 6)]
    assert pids[0] == pids[1]
    assert pids[2] == pids[3]
    assert len({pids[0], pids[2], pids[4]}) == 3


def test_stop_finishes_in_flight(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=2)
    requested_ids = []

    def jobs():
        for file_id in range(1, 100):
            requested_ids.append(file_id)
            yield fake_job(file_id, settings.cache_root)

    finished = []
    with pool.RenderPool(settings, render=hooks.fake_render) as render_pool:
        for job, _results in render_pool.run(jobs()):
            finished.append(job.file_id)
            render_pool.stop()
    assert sorted(finished) == sorted(requested_ids)
    assert len(requested_ids) <= 3


def test_empty_run_spawns_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pool.RenderPool(settings) as render_pool:
        assert list(render_pool.run([])) == []
        assert list(settings.temp_root.iterdir()) == []


def test_temp_folders_removed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=2)
    run_all(settings, [1, hooks.SEGFAULT, 2])
    assert list(settings.temp_root.iterdir()) == []


def test_real_render_in_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, workers=1)
    convert("-size", "120x80", "xc:red", settings.originals_root / "red.png")
    target = settings.cache_root / "ab" / "cd" / "out.webp"
    derivative = Derivative(
        2, None, steps.parse_steps([{"kind": "resize", "width": 60}]), "webp", target
    )
    job = SourceJob(1, "red.png", True, (), (derivative,), {})
    with pool.RenderPool(settings) as render_pool:
        [(_job, results)] = list(render_pool.run([job]))
    assert results[0].failure is None
    with PillowImage.open(target) as image:
        assert image.size == (60, 40)
