"""Decoding in tiles: the blending is exact for a decoder that looks at each latent alone, and close for the VAE."""

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.comparison import psnr
from helpers.parts import OVVaeDecoder
from helpers.pipeline import OVPixArtPipeline
from helpers.tiling import decode_in_tiles, ramp, tile_starts


def upsample(latents: torch.Tensor) -> torch.Tensor:
    """A decoder without a receptive field: each latent becomes an 8×8 block of three of its channels."""
    return torch.nn.functional.interpolate(latents[:, :3], scale_factor=8, mode="nearest")


def as_picture(decoded: torch.Tensor) -> np.ndarray:
    return ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) / 2).numpy()


@pytest.mark.parametrize("height,width", [(100, 150), (64, 64), (65, 64), (20, 40), (256, 256)])
@pytest.mark.parametrize("tile,overlap", [(64, 16), (32, 12)])
def test_tiles_blend_back_to_the_whole_decode_of_a_local_decoder(height, width, tile, overlap):
    latents = torch.randn(2, 4, height, width)
    tiled = decode_in_tiles(upsample, latents, tile, overlap)
    assert tiled.shape == (2, 3, height * 8, width * 8)
    torch.testing.assert_close(tiled, upsample(latents), atol=1e-5, rtol=1e-5)


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
