"""The pictures and masks users hand an edit (``helpers.editing``) from outside Python: a file on the command line, an
upload to the images API, a picture and the layers painted over it in the demo's editor. Each is read and checked
here, refused with the problem and the fix in terms of where it came from (``--image``, the form's ``image``), and
given to the pipeline as diffusers takes it: an RGB picture, and a mask whose white is repainted.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# The formats a picture may come in: the ones OpenAI's edits take. PIL opens many more (EPS through Ghostscript,
# among them), which an upload must not reach.
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP")
SIDE_MULTIPLE = 8  # the pixel multiple a picture is drawn at its own size at (the pipeline's check, with binning)


def open_picture(source: bytes | Path, name: str, max_side: int | None = None) -> Image.Image:
    """The picture in a file or an upload (in its own mode: :func:`rgb` gives the pipeline's), or a ``ValueError``
    naming ``name``: not a picture, or (with ``max_side``) larger than that per side, checked from its header before
    its pixels are read."""
    where = f" {source}" if isinstance(source, Path) else ""
    if isinstance(source, Path) and not source.is_file():
        raise ValueError(f"{name}{where}: no such file: give the path of a PNG, JPEG or WebP picture.")
    try:
        picture = Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=PICTURE_FORMATS)
        check_side(picture, name, max_side)
        picture.load()  # a file cut short fails here, not in the pipeline
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ValueError(f"{name}{where} is not a picture: send a PNG, JPEG or WebP file.") from None
    except Image.DecompressionBombError:
        raise ValueError(f"{name}{where} has too many pixels: send a picture of at most {max_side or 2048} per side.") from None
    return picture


def check_side(picture: Image.Image, name: str, max_side: int | None) -> None:
    if max_side is not None and max(picture.size) > max_side:
        raise ValueError(f"{name} is {picture.width}×{picture.height}, larger than this model draws: send a picture of "
                         f"at most {max_side} per side (resize it).")


def rgb(picture: Image.Image) -> Image.Image:
    """The picture as the VAE takes it: three channels (a transparent picture's alpha dropped)."""
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def check_same_size(mask: Image.Image, image: Image.Image, mask_name: str, image_name: str) -> None:
    if mask.size != image.size:
        raise ValueError(f"{mask_name} is {mask.width}×{mask.height} but {image_name} is {image.width}×{image.height}: "
                         f"make the mask the picture's size.")


def transparency_mask(mask: Image.Image, image: Image.Image, name: str = "mask") -> Image.Image:
    """OpenAI's mask (a PNG whose fully transparent pixels mark where to edit) as diffusers' (white: repaint)."""
    has_alpha = "A" in mask.getbands() or "transparency" in mask.info
    if mask.format != "PNG" or not has_alpha:
        raise ValueError(f"{name} has no transparency: send a PNG with an alpha channel, fully transparent (alpha 0) "
                         f"where to edit, as OpenAI's edits take it.")
    check_same_size(mask, image, name, "image")
    alpha = np.asarray(mask.convert("RGBA"))[..., 3]
    if not (alpha == 0).any():
        raise ValueError(f"{name} has no fully transparent pixel, so nothing to edit: make the pixels to edit "
                         f"transparent (alpha 0), or leave {name} out to edit the whole picture.")
    return Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), "L")


def own_size(image: Image.Image, name: str, size_name: str) -> tuple[int, int]:
    """``(height, width)`` of a picture drawn back at its own size, or a ``ValueError`` naming the fix when its sides
    are not multiples of 8 (the pipeline's check would name a height the user never gave)."""
    width, height = image.size
    if width % SIDE_MULTIPLE or height % SIDE_MULTIPLE or min(width, height) < SIDE_MULTIPLE:
        fit = f"{max(8, width // 8 * 8)}×{max(8, height // 8 * 8)}"
        raise ValueError(f"{name} is {width}×{height}: to draw it at its own size its sides must be multiples of 8: "
                         f"give {size_name} (one of the model's sizes, e.g. 1024x1024), or crop it to {fit}.")
    return height, width


def painted_mask(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """The mask painted over a picture in layers (the demo's brush): white wherever a layer has paint, at the
    picture's ``size``; None where nothing is painted (then the whole picture is edited)."""
    painted = np.zeros(size[::-1], dtype=bool)
    for layer in layers:
        alpha = np.asarray(layer.convert("RGBA").resize(size, Image.Resampling.NEAREST))[..., 3]
        painted |= alpha > 0
    return Image.fromarray(painted.astype(np.uint8) * 255, "L") if painted.any() else None


def fitted(picture: Image.Image, max_side: int, resample: Image.Resampling) -> Image.Image:
    """The picture at most ``max_side`` per side (a phone's photo is larger than the model draws), its sides cut to
    multiples of 8 (the pipeline draws a picture back at its own size only then)."""
    scale = min(1.0, max_side / max(picture.size))
    size = tuple(max(8, int(side * scale) // 8 * 8) for side in picture.size)
    return picture if size == picture.size else picture.resize(size, resample)


def editor_inputs(value: dict[str, Any] | None, max_side: int) -> tuple[Image.Image, Image.Image | None]:
    """The picture and the painted mask (None: nothing painted) of the editor's value, both fitted to the model."""
    background = (value or {}).get("background")
    if background is None:
        raise ValueError("No picture to edit: upload one into the editor first (drop it there, or click it).")
    mask = painted_mask([layer for layer in value.get("layers") or [] if layer is not None], background.size)
    image = fitted(rgb(background), max_side, Image.Resampling.LANCZOS)
    return image, None if mask is None else fitted(mask, max_side, Image.Resampling.NEAREST)
