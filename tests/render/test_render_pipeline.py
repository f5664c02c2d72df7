"""render_source on real ImageMagick with generated originals: validation, colour,
geometry, output.
"""

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image as PillowImage
from PIL import ImageStat
from render_fixtures import ICC_FOLDER, Renderer, add_png_chunk, convert, make_settings

from damjobs.render import pipeline, probe, wand_setup
from damjobs.render.types import RenderSettings
from damjobs.render.wand_setup import WandException, read_image

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def pixel(path: Path, x: int, y: int) -> tuple[int, ...]:
    with PillowImage.open(path) as image:
        return image.convert("RGB").getpixel((x, y))  # type: ignore[return-value]


def close_to(
    actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40
) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def size_of(path: Path) -> tuple[int, int]:
    with PillowImage.open(path) as image:
        return image.size


@pytest.fixture
def quadrants(originals: Path) -> Path:
    """A 200x100 PNG: red top-left, green top-right, blue bottom-left, yellow bottom-
    right.
    """
    path = originals / "quadrants.png"
    convert(
        "-size",
        "100x50",
        "xc:red",
        "xc:lime",
        "+append",
        "(",
        "-size",
        "100x50",
        "xc:blue",
        "xc:yellow",
        "+append",
        ")",
        "-append",
        path,
    )
    return path


# --- validation of the original
# ---------------------------------------------------------


def test_copy_is_byte_identical(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    [result] = render("quadrants.png")
    assert result.failure is None
    assert (settings.cache_root / "original.bin").read_bytes() == quadrants.read_bytes()
    assert result.size_bytes == quadrants.stat().st_size


def test_missing_original(render: Renderer) -> None:
    results = render("nowhere.png", ([], "png"))
    assert [r.failure for r in results] == ["missing", "missing"]


def test_zero_byte_original(render: Renderer, originals: Path) -> None:
    (originals / "empty.jpg").write_bytes(b"")
    assert render("empty.jpg")[0].failure == "empty"


def test_svg_named_png(render: Renderer, originals: Path) -> None:
    (originals / "logo.png").write_bytes(
        b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
    )
    results = render("logo.png", ([], "png"))
    assert [r.failure for r in results] == ["unsupported_format", "unsupported_format"]


def test_policy_blocks_svg_coder() -> None:
    with pytest.raises(WandException, match="not allowed by the security policy"):
        read_image(
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            "svg",
            first_frame=False,
        )


def test_declared_bomb_rejected(render: Renderer, originals: Path) -> None:
    convert("-size", "2x2", "xc:gray", originals / "bomb.png")
    data = bytearray((originals / "bomb.png").read_bytes())
    data[16:24] = (60000).to_bytes(4, "big") * 2
    (originals / "bomb.png").write_bytes(bytes(data))
    [result] = render("bomb.png")
    assert result.failure == "too_large"
    assert "max_width 10000" in result.message


def test_corrupt_lzw_tiff_is_corrupt(render: Renderer, originals: Path) -> None:
    # libtiff reports the broken LZW codes, yet ImageMagick returns an image.
    convert(
        "-size", "600x600", "plasma:fractal", "-seed", "5", "-compress", "lzw",
        originals / "broken.tif",
    )  # fmt: skip
    data = bytearray((originals / "broken.tif").read_bytes())
    middle = range(len(data) // 4, 3 * len(data) // 4)
    for offset in middle:
        data[offset] = (offset * 7919) % 256
    (originals / "broken.tif").write_bytes(bytes(data))

    results = render("broken.tif", ([{"kind": "resize", "width": 100}], "jpeg"))

    assert [r.failure for r in results] == ["corrupt", "corrupt"]
    assert "the tiff data cannot be decoded" in results[1].message


def test_pixel_limit_message(tmp_path: Path, quadrants: Path) -> None:
    settings = make_settings(tmp_path, max_pixels=19999)
    with pytest.raises(
        pipeline.EntryFailure, match="200x100 = 20000 pixels exceeds max_pixels 19999"
    ):
        pipeline.check_source(quadrants.read_bytes(), settings)


def plain_png(width: int, height: int, channels: int = 1) -> bytes:
    """
    Return a valid 8-bit PNG of one shade, grey with 1 channel or RGB with 3, compressed
    row by row.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    colour_type = {1: 0, 3: 2}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (width * channels)
    pixels = b"".join(compressor.compress(row) for _ in range(height))
    pixels += compressor.flush()

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def test_reasonless_decode_names_both_causes(tmp_path: Path) -> None:
    # ImageMagick refuses this valid 81 MP grey PNG without a reason. Its 617 MiB pixel
    # cache is above the memory limit of Debian's policy (256 MiB).
    settings = make_settings(tmp_path, max_pixels=100_000_000)
    assert wand_setup.pixel_cache_limits()["memory"] < 617 * 1024 * 1024

    with pytest.raises(pipeline.EntryFailure) as raised:
        pipeline.decode_source(plain_png(9000, 9000), settings)

    assert raised.value.failure == "corrupt"
    assert "Either the data is corrupt" in raised.value.message
    assert "pixel cache of 617 MiB" in raised.value.message
    assert "policy.xml" in raised.value.message


def test_truncated_small_png_does_not_blame_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    data = plain_png(300, 300, channels=3)

    with pytest.raises(pipeline.EntryFailure) as raised:
        pipeline.decode_source(data[: len(data) // 2], settings)

    assert raised.value.failure == "corrupt"
    assert "policy.xml" not in raised.value.message


def test_pixel_cache_beyond_limits_is_too_large(tmp_path: Path) -> None:
    # 12500 x 11000 RGB needs 1049 MiB of pixel cache. Debian's policy allows 256 MiB of
    # memory, 512 MiB of map and 1 GiB of disk, so ImageMagick raises a CacheError.
    settings = make_settings(
        tmp_path, max_pixels=200_000_000, max_width=20_000, max_height=20_000
    )
    assert wand_setup.pixel_cache_limits()["disk"] < 1049 * 1024 * 1024

    with pytest.raises(pipeline.EntryFailure) as raised:
        pipeline.decode_source(plain_png(12_500, 11_000, channels=3), settings)

    assert raised.value.failure == "too_large"
    assert "needs 1049 MiB of pixel cache" in raised.value.message
    assert "policy.xml" in raised.value.message


@pytest.fixture
def photo_jpeg(originals: Path) -> Path:
    path = originals / "photo.jpg"
    convert("-size", "640x480", "plasma:fractal", "-seed", "3", "-quality", "90", path)
    return path


def test_truncated_jpeg_60_percent(render: Renderer, photo_jpeg: Path) -> None:
    data = photo_jpeg.read_bytes()
    photo_jpeg.write_bytes(data[: len(data) * 6 // 10])
    results = render("photo.jpg", ([], "png"))
    assert [r.failure for r in results] == ["corrupt", "corrupt"]
    assert "truncated" in results[0].message


def test_truncated_jpeg_with_end_marker(render: Renderer, photo_jpeg: Path) -> None:
    # The end marker is put back, so only the decoder's "premature end" warning shows
    # the damage.
    data = photo_jpeg.read_bytes()
    photo_jpeg.write_bytes(data[: len(data) * 6 // 10] + b"\xff\xd9")
    results = render("photo.jpg", ([], "png"))
    assert results[1].failure == "corrupt"
    assert "premature end" in results[1].message.lower()


def test_jpeg_cut_in_header(render: Renderer, photo_jpeg: Path) -> None:
    photo_jpeg.write_bytes(photo_jpeg.read_bytes()[:120])
    assert render("photo.jpg")[0].failure == "corrupt"


def test_garbage_after_jpeg_marker(render: Renderer, originals: Path) -> None:
    (originals / "noise.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + os.urandom(4000) + b"\xff\xd9"
    )
    assert render("noise.jpg")[0].failure == "corrupt"


@pytest.mark.parametrize(
    "name", ["with space.png", "ünïcødé ©.png", "a:b.png", "x[0].png", "%d-[1x1].png"]
)
def test_unusual_file_names(
    render: Renderer, quadrants: Path, name: str, settings: RenderSettings
) -> None:
    quadrants.rename(quadrants.with_name(name))
    results = render(name, ([], "png"))
    assert results[1].failure is None
    assert size_of(settings.cache_root / "2.png") == (200, 100)


def test_dot_dot_outside_root(
    render: Renderer, settings: RenderSettings, quadrants: Path
) -> None:
    outside = settings.originals_root.parent / "outside.png"
    outside.write_bytes(quadrants.read_bytes())
    results = render("../outside.png", ([], "png"))
    assert [r.failure for r in results] == ["outside_root", "outside_root"]


def test_symlink_outside_root(
    render: Renderer, settings: RenderSettings, quadrants: Path
) -> None:
    outside = settings.originals_root.parent / "outside.png"
    outside.write_bytes(quadrants.read_bytes())
    (settings.originals_root / "link.png").symlink_to(outside)
    assert render("link.png")[0].failure == "outside_root"


def test_merge_resource_outside_root(
    render: Renderer, settings: RenderSettings, quadrants: Path
) -> None:
    (settings.originals_root.parent / "mark.png").write_bytes(quadrants.read_bytes())
    results = render(
        "quadrants.png",
        ([{"kind": "merge", "resource_file_id": 5}], "png"),
        resources={5: "../mark.png"},
    )
    assert results[1].failure == "render_failed"
    assert "leaves its root" in results[1].message


def test_not_transformable_copied(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    (originals / "manual.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    results = render("manual.pdf", ([], "png"), transformable=False)
    assert results[0].failure is None
    assert (settings.cache_root / "original.bin").read_bytes() == b"%PDF-1.4\n%%EOF\n"
    assert results[1].failure == "unsupported_format"


# --- orientation, colour, alpha, frames
# ---------------------------------------------------

# EXIF orientation -> the ImageMagick operation that stores the reference so it displays
# upright.
ORIENTATIONS = {
    1: ("TopLeft", []),
    2: ("TopRight", ["-flop"]),
    3: ("BottomRight", ["-rotate", "180"]),
    4: ("BottomLeft", ["-flip"]),
    5: ("LeftTop", ["-transpose"]),
    6: ("RightTop", ["-rotate", "-90"]),
    7: ("RightBottom", ["-transverse"]),
    8: ("LeftBottom", ["-rotate", "90"]),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation(
    render: Renderer, quadrants: Path, settings: RenderSettings, orientation: int
) -> None:
    name, operation = ORIENTATIONS[orientation]
    # -orient only rewrites an EXIF block that already exists, so Pillow adds one first.
    with_exif = quadrants.with_name("exif.jpg")
    exif = PillowImage.Exif()
    exif[0x0112] = 1
    with PillowImage.open(quadrants) as image:
        image.convert("RGB").save(with_exif, exif=exif, quality=95)
    convert(
        with_exif,
        *operation,
        "-orient",
        name,
        "-quality",
        "95",
        quadrants.with_name("oriented.jpg"),
    )
    assert probe.probe_file(quadrants.with_name("oriented.jpg").read_bytes()).exif[
        "Orientation"
    ] == str(orientation)

    results = render("oriented.jpg", ([], "png"))
    output = settings.cache_root / "2.png"
    assert results[1].failure is None
    assert size_of(output) == (200, 100)
    assert close_to(pixel(output, 20, 20), RED)
    assert close_to(pixel(output, 180, 20), GREEN)
    assert close_to(pixel(output, 20, 80), BLUE)
    assert close_to(pixel(output, 180, 80), YELLOW)


def mean_rgb(path: Path) -> list[float]:
    with PillowImage.open(path) as image:
        return ImageStat.Stat(image.convert("RGB")).mean


def cmyk_jpeg(originals: Path, embedded_profile: bool) -> Path:
    """Write cmyk.jpg: rgb(150,110,90), inside the CMYK gamut, converted by LCMS."""
    convert("-size", "64x64", "xc:rgb(150,110,90)", originals / "source.png")
    strip = [] if embedded_profile else ["+profile", "*"]
    path = originals / "cmyk.jpg"
    convert(
        originals / "source.png",
        "-profile",
        ICC_FOLDER / "srgb.icc",
        "-profile",
        ICC_FOLDER / "default_cmyk.icc",
        *strip,
        path,
    )
    with PillowImage.open(path) as source:
        assert source.mode == "CMYK"
        assert ("icc_profile" in source.info) == embedded_profile
    return path


@pytest.mark.parametrize("embedded_profile", [False, True])
def test_cmyk_converted_to_srgb(
    render: Renderer, originals: Path, settings: RenderSettings, embedded_profile: bool
) -> None:
    cmyk_jpeg(originals, embedded_profile)
    results = render("cmyk.jpg", ([], "jpeg"))
    output = settings.cache_root / "2.jpg"
    assert results[1].failure is None
    with PillowImage.open(output) as image:
        assert image.mode == "RGB"
    # ImageMagick's formula conversion gives about (135, 88, 66), so this needs LCMS.
    for channel, expected in zip(mean_rgb(output), (150, 110, 90), strict=True):
        assert abs(channel - expected) < 10


def test_adobe_rgb_source_to_srgb(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert("-size", "64x64", "xc:rgb(150,110,90)", originals / "source.png")
    convert(
        originals / "source.png",
        "-profile",
        ICC_FOLDER / "srgb.icc",
        "-profile",
        ICC_FOLDER / "a98.icc",
        originals / "adobe.jpg",
    )
    results = render("adobe.jpg", ([], "png"))
    assert results[1].failure is None
    output = settings.cache_root / "2.png"
    for channel, expected in zip(mean_rgb(output), (150, 110, 90), strict=True):
        assert abs(channel - expected) < 8


def test_grey_profiled_source(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert(
        "-size",
        "64x64",
        "xc:rgb(120,120,120)",
        "-colorspace",
        "Gray",
        "-profile",
        ICC_FOLDER / "sgray.icc",
        originals / "grey.jpg",
    )
    results = render("grey.jpg", ([], "jpeg"))
    assert results[1].failure is None
    with PillowImage.open(settings.cache_root / "2.jpg") as image:
        assert image.mode == "RGB"


def test_cmyk_without_profiles_configured(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, srgb_profile=None, cmyk_profile=None)
    cmyk_jpeg(settings.originals_root, embedded_profile=False)
    source = pipeline.decode_source(
        (settings.originals_root / "cmyk.jpg").read_bytes(), settings
    )
    with source.image:
        assert source.image.colorspace == "srgb"


def transparent_png(path: Path, hidden_rgb: tuple[int, int, int]) -> None:
    """Write a 40x40 PNG: the left half opaque red, the right half transparent over
    `hidden_rgb`.
    """
    image = PillowImage.new("RGBA", (40, 40), (*hidden_rgb, 0))
    image.paste((255, 0, 0, 255), (0, 0, 20, 40))
    image.save(path)


@pytest.mark.parametrize("hidden_rgb", [(0, 0, 0), (0, 255, 1)])
def test_alpha_flattened_for_jpeg(
    render: Renderer,
    originals: Path,
    settings: RenderSettings,
    hidden_rgb: tuple[int, int, int],
) -> None:
    transparent_png(originals / "alpha.png", hidden_rgb)
    render("alpha.png", ([], "jpeg"))
    output = settings.cache_root / "2.jpg"
    assert close_to(pixel(output, 35, 20), (255, 255, 255), 8)
    assert close_to(pixel(output, 5, 20), RED)


def test_alpha_ignores_bkgd_chunk(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    transparent_png(originals / "alpha.png", (0, 0, 0))
    data = (originals / "alpha.png").read_bytes()
    (originals / "alpha.png").write_bytes(add_png_chunk(data, b"bKGD", b"\x00\x00" * 3))
    render("alpha.png", ([], "jpeg"))
    assert close_to(pixel(settings.cache_root / "2.jpg", 35, 20), (255, 255, 255), 8)


def test_alpha_kept_for_png_and_webp(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    transparent_png(originals / "alpha.png", (0, 255, 1))
    render("alpha.png", ([], "png"), ([], "webp"))
    for name in ("2.png", "3.webp"):
        with PillowImage.open(settings.cache_root / name) as image:
            assert image.convert("RGBA").getpixel((35, 20))[3] == 0


def test_animated_gif_one_file(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert(
        "-size",
        "30x20",
        "xc:red",
        "xc:lime",
        "xc:blue",
        "-loop",
        "0",
        originals / "anim.gif",
    )
    results = render("anim.gif", ([], "png"), copy=False)
    assert results[0].failure is None
    assert sorted(p.name for p in settings.cache_root.iterdir()) == ["2.png"]
    assert close_to(pixel(settings.cache_root / "2.png", 5, 5), RED, 0)


def test_animated_webp_first_frame(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert(
        "-size", "30x20", "xc:red", "xc:lime", "-loop", "0", originals / "anim.webp"
    )
    with PillowImage.open(originals / "anim.webp") as source:
        assert source.n_frames == 2
    results = render("anim.webp", ([], "png"), copy=False)
    assert results[0].failure is None
    assert close_to(pixel(settings.cache_root / "2.png", 5, 5), RED)


def test_multipage_tiff_first_page(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert("-size", "30x20", "xc:blue", "xc:lime", originals / "pages.tif")
    results = render("pages.tif", ([], "jpeg"), copy=False)
    assert results[0].failure is None
    assert sorted(p.name for p in settings.cache_root.iterdir()) == ["2.jpg"]
    assert close_to(pixel(settings.cache_root / "2.jpg", 5, 5), BLUE)


def test_grey_16_bit_to_8_bit_rgb(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    convert(
        "-size",
        "32x32",
        "gradient:black-white",
        "-colorspace",
        "Gray",
        "-depth",
        "16",
        originals / "grey16.png",
    )
    render("grey16.png", ([], "png"), ([], "jpeg"))
    for name in ("2.png", "3.jpg"):
        with PillowImage.open(settings.cache_root / name) as image:
            assert image.mode == "RGB"


def test_metadata_stripped(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    exif = PillowImage.Exif()
    exif[0x010F] = "TestCam"
    PillowImage.new("RGB", (50, 40), "red").save(originals / "cam.jpg", exif=exif)
    render("cam.jpg", ([], "jpeg"))
    with PillowImage.open(settings.cache_root / "2.jpg") as image:
        assert 0x010F not in image.getexif()


# --- steps
# --------------------------------------------------------------------------------


def test_crop_clipped(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    results = render(
        "quadrants.png", ([], "png", {"x": 150, "y": 60, "width": 500, "height": 500})
    )
    output = settings.cache_root / "2.png"
    assert results[1].failure is None
    assert size_of(output) == (50, 40)
    assert close_to(pixel(output, 25, 20), YELLOW, 0)


def test_crop_outside_fails_entry(render: Renderer, quadrants: Path) -> None:
    results = render(
        "quadrants.png",
        ([], "png", {"x": 200, "y": 0, "width": 5, "height": 5}),
        ([], "png"),
    )
    assert [r.failure for r in results] == [None, "render_failed", None]
    assert "crop start (200, 0) lies outside the 200x100 image" in results[1].message


def test_crop_after_reduced_decode(
    render: Renderer, originals: Path, settings: RenderSettings
) -> None:
    # A small second derivative makes the JPEG decode at a reduced scale; the crop must
    # still
    # land on the yellow quadrant in full-resolution coordinates.
    convert(
        "-size",
        "1000x500",
        "xc:red",
        "xc:lime",
        "+append",
        "(",
        "-size",
        "1000x500",
        "xc:blue",
        "xc:yellow",
        "+append",
        ")",
        "-append",
        "-quality",
        "95",
        originals / "big.jpg",
    )
    results = render(
        "big.jpg",
        (
            [{"kind": "resize", "width": 100}],
            "png",
            {"x": 1000, "y": 500, "width": 1000, "height": 500},
        ),
        ([{"kind": "resize", "width": 200}], "png"),
    )
    assert results[1].failure is None
    assert size_of(settings.cache_root / "2.png") == (100, 50)
    assert close_to(pixel(settings.cache_root / "2.png", 3, 3), YELLOW)
    assert close_to(pixel(settings.cache_root / "2.png", 96, 46), YELLOW)
    assert size_of(settings.cache_root / "3.png") == (200, 100)


def test_reduced_decode_is_used(originals: Path, settings: RenderSettings) -> None:
    convert("-size", "2000x1000", "xc:red", "-quality", "90", originals / "big.jpg")
    source = pipeline.decode_source(
        (originals / "big.jpg").read_bytes(),
        settings,
        [(pipeline.steps.Resize(width=200),)],
    )
    with source.image:
        assert source.image.size == (250, 125)
        assert (source.scale_x, source.scale_y) == (0.125, 0.125)
        assert (source.full_width, source.full_height) == (2000, 1000)


@pytest.mark.parametrize(
    ("resize", "expected"),
    [
        ({"width": 50}, (50, 25)),
        ({"height": 20}, (40, 20)),
        ({"width": 30, "height": 70}, (30, 70)),
    ],
)
def test_resize_sizes(
    render: Renderer,
    quadrants: Path,
    settings: RenderSettings,
    resize: dict,
    expected: tuple[int, int],
) -> None:
    render("quadrants.png", ([{"kind": "resize", **resize}], "png"))
    assert size_of(settings.cache_root / "2.png") == expected


def test_canvas_without_enlarge(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    render(
        "quadrants.png",
        (
            [{"kind": "canvas", "width": 400, "height": 400, "background": "#0000ff"}],
            "png",
        ),
    )
    output = settings.cache_root / "2.png"
    assert size_of(output) == (400, 400)
    # The 200x100 image is not enlarged, so it spans x 100..299 and y 150..249.
    assert close_to(pixel(output, 50, 200), BLUE, 0)
    assert close_to(pixel(output, 110, 160), RED, 0)
    assert close_to(pixel(output, 200, 120), BLUE, 0)


def test_canvas_with_enlarge(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    render(
        "quadrants.png",
        ([{"kind": "canvas", "width": 400, "height": 400, "enlarge": True}], "jpeg"),
    )
    output = settings.cache_root / "2.jpg"
    assert size_of(output) == (400, 400)
    # Enlarged to 400x200, centred at y 100..299, on the default white background.
    assert close_to(pixel(output, 20, 120), RED)
    assert close_to(pixel(output, 200, 50), (255, 255, 255))


def test_canvas_one_side(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    render("quadrants.png", ([{"kind": "canvas", "height": 50}], "png"))
    assert size_of(settings.cache_root / "2.png") == (100, 50)


def test_canvas_transparent_background(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    render(
        "quadrants.png",
        (
            [
                {
                    "kind": "canvas",
                    "width": 200,
                    "height": 200,
                    "background": "transparent",
                }
            ],
            "png",
        ),
    )
    with PillowImage.open(settings.cache_root / "2.png") as image:
        assert image.convert("RGBA").getpixel((5, 5))[3] == 0


@pytest.fixture
def mark(originals: Path) -> Path:
    path = originals / "mark.png"
    convert("-size", "20x10", "xc:rgb(0,0,255)", path)
    return path


@pytest.mark.parametrize(
    ("horizontal", "vertical", "inside", "outside"),
    [
        ("left", "top", (2, 2), (25, 2)),
        ("right", "bottom", (197, 97), (175, 97)),
        ("center", "middle", (100, 48), (85, 48)),
    ],
)
def test_merge_above(
    render: Renderer,
    quadrants: Path,
    mark: Path,
    settings: RenderSettings,
    horizontal: str,
    vertical: str,
    inside: tuple[int, int],
    outside: tuple[int, int],
) -> None:
    step = {
        "kind": "merge",
        "resource_file_id": 5,
        "horizontal": horizontal,
        "vertical": vertical,
    }
    render("quadrants.png", ([step], "png"), resources={5: "mark.png"})
    output = settings.cache_root / "2.png"
    assert size_of(output) == (200, 100)
    assert pixel(output, *inside) == BLUE
    assert pixel(output, *outside) != BLUE


def test_merge_below(
    render: Renderer, originals: Path, mark: Path, settings: RenderSettings
) -> None:
    transparent_png(originals / "half.png", (0, 0, 0))
    step = {
        "kind": "merge",
        "resource_file_id": 5,
        "horizontal": "right",
        "vertical": "top",
        "layer": "below",
    }
    render("half.png", ([step], "png"), resources={5: "mark.png"})
    output = settings.cache_root / "2.png"
    assert size_of(output) == (40, 40)
    # The resource shows through the transparent right half but stays under the opaque
    # left half.
    assert pixel(output, 35, 5) == BLUE
    assert pixel(output, 5, 5) == RED


def test_merge_below_opaque_hidden(
    render: Renderer, quadrants: Path, mark: Path, settings: RenderSettings
) -> None:
    step = {
        "kind": "merge",
        "resource_file_id": 5,
        "horizontal": "left",
        "vertical": "top",
        "layer": "below",
    }
    render("quadrants.png", ([step], "png"), resources={5: "mark.png"})
    assert pixel(settings.cache_root / "2.png", 2, 2) == RED


def test_merge_resource_unknown(render: Renderer, quadrants: Path) -> None:
    results = render(
        "quadrants.png",
        ([{"kind": "merge", "resource_file_id": 5}], "png"),
        ([], "png"),
    )
    assert [r.failure for r in results] == [None, "render_failed", None]
    assert "merge resource file 5" in results[1].message


@pytest.mark.parametrize("output_format", ["jpeg", "png"])
def test_dpi_written(
    render: Renderer, quadrants: Path, settings: RenderSettings, output_format: str
) -> None:
    results = render("quadrants.png", ([{"kind": "dpi", "dpi": 300}], output_format))
    assert results[1].failure is None
    with PillowImage.open(next(settings.cache_root.glob("2.*"))) as image:
        assert image.size == (200, 100)
        assert tuple(round(value) for value in image.info["dpi"]) == (300, 300)


@pytest.mark.parametrize("output_format", ["jpeg", "webp"])
def test_quality_changes_size(
    render: Renderer, photo_jpeg: Path, settings: RenderSettings, output_format: str
) -> None:
    results = render(
        "photo.jpg",
        ([{"kind": "quality", "quality": 10}], output_format),
        ([{"kind": "quality", "quality": 95}], output_format),
    )
    assert results[1].size_bytes is not None
    assert results[2].size_bytes is not None
    assert results[1].size_bytes * 2 < results[2].size_bytes


def test_output_too_large(render: Renderer, quadrants: Path) -> None:
    results = render("quadrants.png", ([{"kind": "resize", "width": 20000}], "png"))
    assert results[1].failure == "too_large"
    assert "output width 20000 exceeds max_width 10000" in results[1].message


def test_unwritable_cache_fails_entries(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    (settings.cache_root / "2.png").mkdir()
    results = render("quadrants.png", ([], "png"), ([], "webp"))
    assert [r.failure for r in results] == [None, "render_failed", None]


def test_no_temp_files_left(
    render: Renderer, quadrants: Path, settings: RenderSettings
) -> None:
    render("quadrants.png", ([], "png"), ([], "webp"))
    assert sorted(p.name for p in settings.cache_root.iterdir()) == [
        "2.png",
        "3.webp",
        "original.bin",
    ]


# --- probe
# ----------------------------------------------------------------------------------


def test_probe_reads_exif(originals: Path) -> None:
    exif = PillowImage.Exif()
    exif[0x010F] = "TestCam"
    exif[0x0110] = "Model 7"
    exif[0x0112] = 6
    PillowImage.new("RGB", (64, 48), "red").save(originals / "cam.jpg", exif=exif)
    result = probe.probe_file((originals / "cam.jpg").read_bytes())
    assert (result.format, result.width, result.height) == ("jpeg", 64, 48)
    assert result.exif["Make"] == "TestCam"
    assert result.exif["Model"] == "Model 7"
    assert result.exif["Orientation"] == "6"


def test_probe_not_an_image() -> None:
    result = probe.probe_file(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert result == probe.Probe(None, None, None, {})
