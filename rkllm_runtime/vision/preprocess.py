"""An image file made into an encoder's input with Pillow: decoded, padded to a square, resized.

The pixel normalisation (mean and standard deviation) is part of the ``.rknn`` file (the vendor's
conversion sets it), so the runtime applies it to the 8-bit RGB pixels given here, as in the vendor demo.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from rkllm_runtime.errors import ImageTooLargeError, InvalidImageError

MAX_IMAGE_BYTES = 20 * 2**20
"""Largest image file accepted (a camera snapshot is a few hundred kilobytes)."""
MAX_PIXELS = 50_000_000
"""Largest image accepted, in pixels: decoding one costs memory before it is resized."""


def decode(data: bytes, at_least: tuple[int, int] | None = None) -> Image.Image:
    """An RGB image from an encoded file (JPEG, PNG, WebP...), turned as its EXIF data says.

    ``at_least``: the size it is wanted at, so that a JPEG decodes at a fraction of its own
    when that still covers it (a 1080p snapshot for a 448-pixel encoder: at half size).
    Raises :class:`ImageTooLargeError` or :class:`InvalidImageError`.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeError(
            f"the image file has {len(data)} bytes, at most {MAX_IMAGE_BYTES} are accepted"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"the image has {width}x{height} pixels, at most {MAX_PIXELS} are accepted"
                )
            if at_least is not None:
                image.draft("RGB", at_least)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"the image is too large to decode: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidImageError(f"not an image that can be read ({err})") from err
    turned = ImageOps.exif_transpose(image)
    if turned.mode in ("RGBA", "LA", "PA") or (turned.mode == "P" and "transparency" in turned.info):
        rgba = turned.convert("RGBA")
        background = Image.new("RGB", turned.size, (255, 255, 255))  # transparency shown on white
        background.paste(rgba, mask=rgba)
        return background
    return turned.convert("RGB")


def fit(image: Image.Image, width: int, height: int, pad: tuple[int, int, int]) -> Image.Image:
    """The image centred on a square of the ``pad`` colour, then resized to the encoder's input."""
    side = max(image.size)
    square = Image.new("RGB", (side, side), pad)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square.resize((width, height), Image.Resampling.BILINEAR)


def pixels(image: Image.Image, planar: bool) -> bytes:
    """The image's 8-bit RGB values: interleaved (NHWC) or one plane per channel (NCHW)."""
    if planar:
        return b"".join(band.tobytes() for band in image.split())
    return image.tobytes()
