"""Image files into an encoder's pixels: what is refused, and how a snapshot is fitted."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from rkllm_runtime.errors import ImageTooLargeError, InvalidImageError
from rkllm_runtime.vision import preprocess
from tests.images import RED, image_file


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a? not really", b"%PDF-1.7 a document", RED[: len(RED) // 2]],
    ids=["empty", "bad-header", "pdf", "truncated-jpeg"],
)
def test_what_is_no_image_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidImageError, match="not an image"):
        preprocess.decode(data)


def test_a_file_too_large_is_refused_unread() -> None:
    with pytest.raises(ImageTooLargeError, match="bytes"):
        preprocess.decode(b"\xff\xd8" + b"\0" * preprocess.MAX_IMAGE_BYTES)


def test_an_image_of_too_many_pixels_is_refused_before_decoding() -> None:
    data = io.BytesIO()
    Image.new("1", (8000, 8000)).save(data, "PNG")  # 64 million pixels in a few kilobytes
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        preprocess.decode(data.getvalue())


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP", "GIF"])
def test_the_usual_formats_decode_to_rgb(kind: str) -> None:
    image = preprocess.decode(image_file((0, 0, 250), (32, 16), kind))
    assert (image.mode, image.size) == ("RGB", (32, 16))
    assert image.getpixel((16, 8))[2] > 200  # type: ignore[index]


def test_transparency_is_shown_on_white() -> None:
    data = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(data, "PNG")
    assert preprocess.decode(data.getvalue()).getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    data = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: a portrait taken with the camera on its side
    Image.new("RGB", (40, 20), (0, 200, 0)).save(data, "JPEG", exif=exif)
    assert preprocess.decode(data.getvalue()).size == (20, 40)


def test_a_snapshot_is_padded_to_a_square_then_resized() -> None:
    fitted = preprocess.fit(Image.new("RGB", (400, 200), (255, 0, 0)), 100, 100, (127, 127, 127))
    assert fitted.size == (100, 100)
    assert fitted.getpixel((50, 5)) == (127, 127, 127)  # the band above the picture
    assert fitted.getpixel((50, 50)) == (255, 0, 0)


def test_pixels_are_interleaved_or_planar() -> None:
    image = Image.new("RGB", (2, 1))
    image.putpixel((0, 0), (1, 2, 3))
    image.putpixel((1, 0), (4, 5, 6))
    assert preprocess.pixels(image, planar=False) == bytes([1, 2, 3, 4, 5, 6])
    assert preprocess.pixels(image, planar=True) == bytes([1, 4, 2, 5, 3, 6])


def test_a_large_jpeg_decodes_at_a_fraction_that_still_covers_the_input() -> None:
    snapshot = image_file((0, 0, 250), (1920, 1080))
    assert preprocess.decode(snapshot, (448, 448)).size == (960, 540)  # half the work, still above 448
    assert preprocess.decode(snapshot, (600, 600)).size == (1920, 1080)  # a half would not cover 600
    assert preprocess.decode(image_file((0, 0, 250), (1920, 1080), "PNG"), (448, 448)).size == (1920, 1080)
