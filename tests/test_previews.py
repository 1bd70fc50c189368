"""Previews: the latent-to-RGB projection fitted and stored, the steps chosen, and a call's previews arriving once per
step without changing its picture."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from helpers.pipeline import OVPixArtPipeline
from helpers.previews import LATENT_RGB_KEY, LatentRGB, Preview, fit_latent_rgb, pictures_as_they_form, preview_steps
from helpers.variants import VariantNotReadyError

SHAPES_VAE = Path(__file__).resolve().parents[1] / "model" / "shapes" / "diffusers" / "vae"
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def tiny_pipe(tiny_variant):
    return OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)


def read_colours(vae: AutoencoderKL, projection: LatentRGB, colours: torch.Tensor) -> torch.Tensor:
    """The mean colour of the previews of flat pictures of ``colours`` (in [-1, 1])."""
    with torch.no_grad():
        latents = vae.encode(colours[:, :, None, None].expand(-1, -1, 64, 64)).latent_dist.mode() * vae.config.scaling_factor
    previews = projection(latents)
    assert previews[0].size == (8, 8)
    return torch.tensor(np.array([np.asarray(p, dtype=np.float32).mean((0, 1)) for p in previews])) / 127.5 - 1


def test_the_projection_fitted_on_a_trained_vae_reads_colours_back():
    vae = AutoencoderKL.from_pretrained(SHAPES_VAE).eval()
    fitted = fit_latent_rgb(vae)
    projection = LatentRGB(torch.tensor(fitted["weight"]), torch.tensor(fitted["bias"]))
    assert projection.weight.shape == (vae.config.latent_channels, 3) and projection.bias.shape == (3,)
    colours = torch.rand(16, 3, generator=torch.Generator().manual_seed(7)) * 1.6 - 0.8  # not the fit's pictures
    assert (read_colours(vae, projection, colours) - colours).abs().mean() < 0.25  # a linear read of a small VAE: rough
    primaries = torch.eye(3) * 1.6 - 0.8
    assert read_colours(vae, projection, primaries).argmax(1).tolist() == [0, 1, 2]  # red reads reddest, ...


def test_the_projection_is_stored_in_every_variant(tiny_variant, tiny_compressed):
    import json

    stored = json.loads((tiny_variant / "vae_decoder" / "config.json").read_text())[LATENT_RGB_KEY]
    assert np.array(stored["weight"]).shape == (4, 3) and len(stored["bias"]) == 3
    for folder in tiny_compressed.values():
        assert json.loads((folder / "vae_decoder" / "config.json").read_text())[LATENT_RGB_KEY] == stored


def test_a_folder_converted_before_previews_is_refused_with_the_fix():
    pipe = SimpleNamespace(full_vae=SimpleNamespace(config={}), variant=SimpleNamespace(folder=Path("model/old/INT8")))
    with pytest.raises(VariantNotReadyError, match=r"no latent preview projection.*delete model/old/FP16/vae_decoder.*convert --model old"):
        LatentRGB.of(pipe)


@pytest.mark.parametrize("steps, count, expected", [
    (4, None, [0, 1, 2]), (20, 2, [9, 18]), (20, 3, [6, 12, 18]), (4, 3, [0, 1, 2]), (4, 5, [0, 1, 2]),
    (4, 0, []), (1, None, []), (2, 2, [0]),
])
def test_previews_follow_every_step_but_the_last_or_spread_evenly(steps, count, expected):
    assert preview_steps(steps, count) == expected


@pytest.mark.parametrize("kind, side", [("linear", 32), ("tiny", 256)])
def test_a_call_yields_a_preview_per_step_then_the_same_picture_as_without(tiny_pipe, kind, side):
    call = dict(height=256, width=256, num_inference_steps=4, num_images_per_prompt=2, use_resolution_binning=False)
    plain = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(5), **call)
    seen = []
    items = list(pictures_as_they_form(tiny_pipe, "a red circle", generator=torch.Generator().manual_seed(5), preview=kind,
                                       callback=lambda step, t, latents: seen.append(step), callback_steps=2, **call))
    previews, output = items[:-1], items[-1]
    assert all(isinstance(item, Preview) for item in previews)
    assert [(p.step, p.steps, len(p.images), p.images[0].size) for p in previews] == [(s, 4, 2, (side, side)) for s in (1, 2, 3)]
    assert seen == [0, 2]  # the caller's own callback, at its own pace
    for found, expected in zip(output.images, plain.images):
        assert np.array_equal(np.asarray(found), np.asarray(expected))


def test_previews_of_an_edit_count_the_steps_it_runs_and_errors_reach_the_caller(tiny_pipe):
    from PIL import Image

    picture = Image.new("RGB", (256, 256), (20, 30, 200))
    items = list(pictures_as_they_form(tiny_pipe, "a red circle", image=picture, strength=0.5, num_inference_steps=8, previews=2))
    assert [(p.step, p.steps) for p in items[:-1]] == [(2, 4), (3, 4)] and items[-1].record.steps == 4
    with pytest.raises(ValueError, match="num_inference_steps"):
        list(pictures_as_they_form(tiny_pipe, "a red circle", num_inference_steps=0))
    with pytest.raises(ValueError, match="preview='big' is not a previewer"):
        list(pictures_as_they_form(tiny_pipe, "a red circle", preview="big"))
