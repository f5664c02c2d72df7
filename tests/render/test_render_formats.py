"""Magic-number sniffing and header sizes, on files written by ImageMagick."""

from pathlib import Path

import pytest
from render_fixtures import convert

from damjobs.render import formats

HOSTILE_PAYLOADS = {
    "svg": (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg">'
        b'<image href="/etc/hostname"/></svg>'
    ),
    "svg without prolog": b"<svg width='10' height='10'></svg>",
    "msl": b'<?xml version="1.0"?><image><read filename="/etc/hostname"/></image>',
    "mvg": (
        b"push graphic-context\nviewbox 0 0 10 10\n"
        b"image over 0,0 10,10 '/etc/hostname'\n"
    ),
    "text": b"text:/etc/hostname",
    "empty": b"",
    "pdf": b"%PDF-1.4\n",
    "bigtiff": b"II+\x00\x08\x00\x00\x00",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PAYLOADS))
def test_sniff_rejects_payload(name: str) -> None:
    assert formats.sniff_format(HOSTILE_PAYLOADS[name]) is None


@pytest.mark.parametrize(
    ("output", "options", "expected_format"),
    [
        ("a.jpg", [], "jpeg"),
        ("a.jpg", ["-interlace", "JPEG"], "jpeg"),
        ("a.png", [], "png"),
        ("a.gif", [], "gif"),
        ("a.webp", [], "webp"),
        ("a.webp", ["-define", "webp:lossless=true"], "webp"),
        (
            "a.webp",
            ["-alpha", "set", "-channel", "A", "-evaluate", "set", "50%"],
            "webp",
        ),
        ("a.tif", [], "tiff"),
        ("a.tif", ["-endian", "MSB"], "tiff"),
    ],
)
def test_sniff_and_header_size(
    tmp_path: Path, output: str, options: list[str], expected_format: str
) -> None:
    path = tmp_path / output
    convert("-size", "123x45", "gradient:red-blue", *options, path)
    data = path.read_bytes()
    assert formats.sniff_format(data[:16]) == expected_format
    assert formats.header_size(data, expected_format) == (123, 45)


def test_webp_chunk_kinds(tmp_path: Path) -> None:
    # The parametrised cases above must cover the VP8, VP8L and VP8X layouts.
    chunks = set()
    for name, options in [
        ("lossy", []),
        ("lossless", ["-define", "webp:lossless=true"]),
        ("alpha", ["-alpha", "set"]),
    ]:
        path = tmp_path / f"{name}.webp"
        convert(
            "-size",
            "8x8",
            "xc:rgba(255,0,0,0.5)" if name == "alpha" else "xc:red",
            *options,
            path,
        )
        chunks.add(path.read_bytes()[12:16])
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}


def test_svg_named_png_not_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(HOSTILE_PAYLOADS["svg"])
    assert formats.sniff_format(path.read_bytes()[:16]) is None


def test_header_size_declared_bomb(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    convert("-size", "2x2", "xc:gray", path)
    data = bytearray(path.read_bytes())
    data[16:24] = (60000).to_bytes(4, "big") * 2
    assert formats.header_size(bytes(data), "png") == (60000, 60000)


def test_header_size_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    convert("-size", "64x64", "xc:red", path)
    data = path.read_bytes()
    # Cut off before the start-of-frame segment: no size can be read.
    sof = data.index(b"\xff\xc0")
    assert formats.header_size(data[:sof], "jpeg") is None
    assert formats.header_size(b"\x89PNG\r\n\x1a\n", "png") is None
    assert formats.header_size(b"GIF89a", "gif") is None


def test_jpeg_complete_marker(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    convert("-size", "64x64", "xc:red", path)
    data = path.read_bytes()
    assert formats.jpeg_is_complete(data)
    assert not formats.jpeg_is_complete(data[: len(data) * 6 // 10])
