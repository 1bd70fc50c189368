"""Decoding in tiles: the blending hides the seams of a decoder that sees its neighbours, and is close for the VAE."""

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.comparison import psnr
from helpers.parts import OVVaeDecoder
from helpers.pipeline import OVPixArtPipeline
from helpers.tiling import decode_in_tiles, ramp, tile_starts


def blur(latents: torch.Tensor) -> torch.Tensor:
    """A decoder that sees its neighbours, as a convolution does: three channels, each latent averaged with the 8
    around it (zeros past the edge), then an 8×8 block. Decoded alone, a tile's border latents lack theirs: a seam."""
    mean = torch.nn.functional.conv2d(latents[:, :3], torch.full((3, 1, 3, 3), 1 / 9), padding=1, groups=3)
    return torch.nn.functional.interpolate(mean, scale_factor=8, mode="nearest")


def seam_bound(latents: torch.Tensor, overlap: int) -> float:
    """The most a blended tiling of :func:`blur` can differ from its whole decode: a tile is wrong only in the 8
    pixels along an inner edge, by at most the 3 of 9 neighbours it lacks there, and weighs at most 8/(8·overlap+1)
    of the pixel (its neighbour's ramp makes up the rest); a row's edge and a column's can cross."""
    return 2 * 8 / (8 * overlap + 1) * 3 / 9 * latents[:, :3].abs().max().item()


def pasted(decode, latents: torch.Tensor, tile: int) -> torch.Tensor:
    """The naive tiling: tiles side by side, each decoded alone, no overlap and no blending."""
    height, width = latents.shape[-2:]
    rows = [torch.cat([decode(latents[..., top:top + tile, left:left + tile]) for left in range(0, width, tile)], dim=-1)
            for top in range(0, height, tile)]
    return torch.cat(rows, dim=-2)


def as_picture(decoded: torch.Tensor) -> np.ndarray:
    return ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) / 2).numpy()


@pytest.mark.parametrize("height,width", [(100, 150), (64, 64), (65, 64), (72, 72), (20, 40), (256, 256)])
@pytest.mark.parametrize("tile,overlap", [(64, 16), (32, 12)])
def test_tiles_blend_back_to_the_whole_decode_without_a_seam(height, width, tile, overlap):
    latents = torch.randn(2, 4, height, width, generator=torch.Generator().manual_seed(height * width))
    tiled, whole = decode_in_tiles(blur, latents, tile, overlap), blur(latents)
    assert tiled.shape == whole.shape == (2, 3, height * 8, width * 8)
    assert (tiled - whole).abs().max() <= seam_bound(latents, overlap)
    if max(height, width) <= tile:  # one tile: the whole decode itself
        torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_tiles_pasted_side_by_side_show_the_seam_the_blending_hides():
    """The stand-in decoder can fail the test above: pasted without blending, its tiles differ from the whole decode
    by more than twice the bound, and only along the tiles' inner edges."""
    latents = torch.randn(1, 4, 128, 96, generator=torch.Generator().manual_seed(0))
    whole, naive = blur(latents), pasted(blur, latents, 64)
    error = (naive - whole).abs()[0].amax(dim=0)  # per pixel
    assert error.max() > 2 * seam_bound(latents, 16)
    seams = torch.zeros_like(error, dtype=torch.bool)
    seams[504:520, :] = True  # 8 pixels either side of the edge between the two rows of tiles, at latent 64
    seams[:, 504:520] = True  # and between the two columns
    assert error[seams].max() == error.max() and error[~seams].max() < 1e-6


def test_tiles_cover_each_side_with_the_overlap_asked():
    assert tile_starts(256, 64, 16) == [0, 48, 96, 144, 192]  # the last one ends at 256
    assert tile_starts(100, 64, 16) == [0, 36]
    assert tile_starts(64, 64, 16) == tile_starts(10, 64, 16) == [0]
    weights = ramp(512, 128)
    assert weights.min() > 0 and weights[128:384].eq(1).all() and torch.equal(weights, weights.flip(0))


@pytest.mark.parametrize("tile,overlap", [(64, 32), (64, 0), (8, 5)])
def test_an_overlap_of_half_the_tile_or_none_is_refused(tiny_variant, tile, overlap):
    vae = OVVaeDecoder(tiny_variant / "vae_decoder", ov.Core(), "CPU", compile_now=False)
    with pytest.raises(ValueError, match="the overlap must be above 0 and under half the tile"):
        vae.enable_tiling(tile, overlap)
    assert not vae.use_tiling


def test_the_openvino_decoder_in_tiles_is_close_to_the_whole_decode(tiny_variant):
    vae = OVVaeDecoder(tiny_variant / "vae_decoder", ov.Core(), "CPU")
    torch.manual_seed(0)
    latents, small = torch.randn(1, 4, 128, 96), torch.randn(1, 4, 64, 48)
    whole, whole_small = vae.decode(latents)[0], vae.decode(small)[0]
    vae.enable_tiling()
    tiled = vae.decode(latents)[0]
    assert tiled.shape == whole.shape == (1, 3, 1024, 768)
    # the tiny VAE's mid-block attention sees one tile at a time: about 38 dB on random latents
    assert 30 < psnr(as_picture(whole), as_picture(tiled)) < float("inf")
    assert torch.equal(vae.decode(small)[0], whole_small)  # one tile: decoded whole
    vae.disable_tiling()
    assert torch.equal(vae.decode(latents)[0], whole)


def test_the_pipeline_decodes_in_tiles_when_its_vae_is_told(tiny_variant):
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU")
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(height=1024, width=768, num_inference_steps=2, output_type="np")
    whole = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs).images[0]
    pipe.vae.enable_tiling()
    output = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kwargs)
    tiled = output.images[0]
    assert len(output.record.seconds["vae_decoder"]) == 3 * 2  # 128 × 96 latents: 3 × 2 tiles of 64 overlapping by 16
    assert tiled.shape == whole.shape == (1024, 768, 3) and 30 < psnr(whole, tiled) < float("inf")
