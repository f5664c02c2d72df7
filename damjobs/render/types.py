"""The data that flows between the jobs and the renderer: settings, jobs and results."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from damjobs import cache
from damjobs.render import steps

FAILURE_CLASSES = (
    "missing",
    "empty",
    "corrupt",
    "too_large",
    "unsupported_format",
    "outside_root",
    "timed_out",
    "crashed",
    "render_failed",
)
"""Why an entry failed: the values of EntryResult.failure."""


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """Configuration of the renderer and its worker pool."""

    originals_root: Path
    cache_root: Path
    ownership: cache.FileOwnership
    max_width: int
    """Largest accepted source or output width, in pixels."""
    max_height: int
    """Largest accepted source or output height, in pixels."""
    max_pixels: int
    """Largest accepted width * height of a source or output."""
    default_background: str
    """ImageMagick colour string, e.g. "white", for canvases and for flattening alpha
    into JPEG.
    """
    default_quality: int
    """Encoder quality 1..100 when no quality step is given."""
    default_output_format: str
    timeout_seconds: float
    """Time limit for one source image with all of its entries, in seconds."""
    workers: int
    """Number of worker processes."""
    images_per_worker: int
    """A worker is replaced after it has rendered this many source images."""
    srgb_profile: Path | None
    """ICC profile that CMYK and profiled sources are converted into."""
    cmyk_profile: Path | None
    """ICC profile assumed for CMYK sources that embed none."""
    temp_root: Path
    """Each worker gets its own ImageMagick temporary folder below this one."""


@dataclasses.dataclass(frozen=True)
class CopyTarget:
    """The "original" cache entry: a byte copy of the validated original."""

    entry_id: int
    target: Path
    """Absolute path below the cache root."""


@dataclasses.dataclass(frozen=True)
class Derivative:
    """One rendered cache entry of a source image."""

    entry_id: int
    crop: steps.Step | None
    """The cropping's rectangle as a crop step, applied before `steps`."""
    steps: tuple[steps.Step, ...]
    """The predefined setting's steps, in order."""
    output_format: str
    """jpeg, png or webp."""
    target: Path
    """Absolute path below the cache root."""


@dataclasses.dataclass(frozen=True)
class SourceJob:
    """One original file and every missing cache entry of it."""

    file_id: int
    relative_path: str
    """Untrusted path relative to the originals root."""
    transformable: bool
    """False for PDF, video and other files that only get byte copies and are never
    decoded.
    """
    copies: tuple[CopyTarget, ...]
    derivatives: tuple[Derivative, ...]
    resources: Mapping[int, str]
    """Merge resource file id -> untrusted path relative to the originals root."""


@dataclasses.dataclass(frozen=True)
class EntryResult:
    """The outcome of one cache entry."""

    entry_id: int
    size_bytes: int | None
    """Size of the written file; None when the entry failed."""
    failure: str | None
    """None when the entry was written; otherwise one of FAILURE_CLASSES."""
    message: str
    """Reason for a failure, naming the value and the limit; empty on success."""
