"""Render functions for the pool tests, imported by name in the spawned workers.

File id 1001 makes the worker hang, 1002 kills it with a real SIGSEGV and 1003 raises.
Any other job succeeds and reports the worker's process id as the size of each entry, so
tests can see which worker rendered it.
"""

import os
import signal
import time

from damjobs.render.types import EntryResult, RenderSettings, SourceJob

HANG = 1001
SEGFAULT = 1002
RAISE = 1003


def fake_render(job: SourceJob, settings: RenderSettings) -> list[EntryResult]:
    if job.file_id == HANG:
        time.sleep(60)
    if job.file_id == SEGFAULT:
        os.kill(os.getpid(), signal.SIGSEGV)
    if job.file_id == RAISE:
        raise ValueError("render hook failure")
    return [EntryResult(copy.entry_id, os.getpid(), None, "") for copy in job.copies]
