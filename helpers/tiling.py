"""Decoding latents in overlapping tiles, so that the VAE decoder's memory follows the tile, not the picture.

The scheme of diffusers' ``AutoencoderKL.enable_tiling``: square latent tiles that overlap their neighbours,
each decoded alone, averaged where they overlap with weights that ramp linearly across the overlap (a side at the
picture's border keeps its full weight), so that no seam shows. The decoder's mid-block attention then sees one
tile at a time: the picture differs a little from a whole decode, most near the seams.
"""

from __future__ import annotations

from typing import Callable

import torch

TILE_LATENT_SIZE = 64  # 512 px: the VAE's own training size
TILE_OVERLAP = 16  # latents each tile shares with its neighbour (128 px), a quarter of the tile as in diffusers


def check_tiling(tile: int, overlap: int) -> None:
    if not 0 < 2 * overlap < tile:
        raise ValueError(f"Tiles of {tile} latents with an overlap of {overlap}: the overlap must be above 0 and under half the tile.")


def decode_in_tiles(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, tile: int = TILE_LATENT_SIZE,
                    overlap: int = TILE_OVERLAP) -> torch.Tensor:
    """``decode`` (latents ``(B, C, h, w)`` → pictures ``(B, 3, h·s, w·s)``) applied tile by tile and blended."""
    check_tiling(tile, overlap)
    height, width = latents.shape[-2:]
    out = weight = None
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            part = latents[..., top:top + tile, left:left + tile].contiguous()
            piece = decode(part)
            scale = piece.shape[-2] // part.shape[-2]  # pixels per latent
            if out is None:
                out = piece.new_zeros(*piece.shape[:2], height * scale, width * scale)
                weight = piece.new_zeros(height * scale, width * scale)
            # no ramp on a side at the picture's border: near a tile barely inside it, two ramps would both be low there
            # and give the other tile's edge, which lacks its neighbours, a large share
            window = (ramp(piece.shape[-2], overlap * scale, top > 0, top + part.shape[-2] < height)[:, None]
                      * ramp(piece.shape[-1], overlap * scale, left > 0, left + part.shape[-1] < width)[None, :])
            rows, columns = slice(top * scale, top * scale + piece.shape[-2]), slice(left * scale, left * scale + piece.shape[-1])
            out[..., rows, columns] += piece * window
            weight[rows, columns] += window
    return out / weight


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side start: every ``tile - overlap``, the last one flush with the end."""
    if size <= tile:
        return [0]
    return [*range(0, size - tile, tile - overlap), size - tile]


def ramp(length: int, overlap: int, rise: bool = True, fall: bool = True) -> torch.Tensor:
    """A tile's weight along one side: rising over the first ``overlap`` values (if ``rise``), 1 in the middle,
    falling at the end (if ``fall``); never 0, so that every pixel keeps a weight."""
    weights = torch.ones(length)
    edge = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if rise:
        weights[:overlap] = edge
    if fall:
        weights[length - overlap:] = edge.flip(0)
    return weights
