"""Image sizes: the aspect-ratio bins diffusers defines for each transformer sample size, as the model reads them,
and the one reader of "W×H" sizes (``parse_size``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN,
    ASPECT_RATIO_512_BIN,
    ASPECT_RATIO_1024_BIN,
)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

# Latent side (the transformer's ``sample_size``) -> {aspect ratio: [height, width]}; the VAE scales by 8.
ASPECT_RATIO_BINS = {32: ASPECT_RATIO_256_BIN, 64: ASPECT_RATIO_512_BIN, 128: ASPECT_RATIO_1024_BIN, 256: ASPECT_RATIO_2048_BIN}


def aspect_ratio_bins(sample_size: int) -> dict[str, list[float]]:
    """The bins of a sample size, or a ``ValueError`` naming the sample sizes that have bins."""
    if sample_size not in ASPECT_RATIO_BINS:
        sides = ", ".join(f"{s} ({s * 8}²)" for s in ASPECT_RATIO_BINS)
        raise ValueError(f"Transformer sample_size {sample_size!r} has no aspect-ratio bins: diffusers has bins for {sides}.")
    return ASPECT_RATIO_BINS[sample_size]


def sample_size_of(folder: Path) -> int:
    """The transformer's ``sample_size`` in a diffusers folder (a variant's: ``Variant.sample_size``)."""
    return json.loads((Path(folder) / "transformer" / "config.json").read_text())["sample_size"]


def bin_sizes(sample_size: int) -> list[tuple[int, int]]:
    """``(height, width)`` of every bin, squarest first, landscape before portrait."""
    sizes = {(int(h), int(w)) for h, w in aspect_ratio_bins(sample_size).values()}
    return sorted(sizes, key=lambda hw: (abs(np.log(hw[1] / hw[0])), hw[1] < hw[0], hw))


def largest_side(sample_size: int) -> int:
    """The longest side, in pixels, of a sample size's bins (2048 for 1024² models: the 1:4 bins); twice the native
    side for a sample size without bins."""
    if sample_size not in ASPECT_RATIO_BINS:
        return 2 * 8 * sample_size
    return int(max(max(hw) for hw in ASPECT_RATIO_BINS[sample_size].values()))


def size_choices(sample_size: int) -> list[str]:
    """The picture sizes of a sample size, as "W×H" strings: its aspect-ratio bins, squarest first."""
    return [f"{w}×{h}" for h, w in bin_sizes(sample_size)]


def native_size(sample_size: int) -> tuple[int, int]:
    """``(height, width)`` of a sample size's square picture: the latent side times the VAE's 8."""
    return sample_size * 8, sample_size * 8


def wide_size(sample_size: int, ratio: float = 16 / 9) -> tuple[int, int]:
    """``(height, width)`` of the landscape bin closest to ``ratio`` (16:9: 1344×768 for sample size 128)."""
    landscape = [hw for hw in bin_sizes(sample_size) if hw[1] > hw[0]]
    return min(landscape, key=lambda hw: abs(np.log(hw[1] / hw[0] / ratio)))


def format_size(height: int, width: int) -> str:
    """The "W×H" string the demo shows for a size."""
    return f"{width}×{height}"


def parse_size(text: str, allowed: Iterable[str] | None = None) -> tuple[int, int]:
    """``(height, width)`` from "W×H" (or "WxH"): the one reader of sizes, for the command line, the demo and the API.

    A ``ValueError`` naming what to write instead when ``allowed`` (a model's "W×H" choices) is given and does not
    hold ``text``, or when ``text`` is not a size.
    """
    normalized = str(text).strip().lower().replace("x", "×").replace(" ", "")
    if allowed is not None and normalized not in (choices := list(allowed)):
        raise ValueError(f"The model can't make {text!r}: pick one of its sizes, e.g. {', '.join(choices[:5])}.")
    match = re.fullmatch(r"(\d+)×(\d+)", normalized)
    if match is None:
        raise ValueError(f"{text!r} is not a size: write it as WIDTHxHEIGHT, e.g. 1024x1024")
    width, height = (int(side) for side in match.groups())
    return height, width
