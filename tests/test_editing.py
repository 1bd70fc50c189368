"""Editing pictures (``helpers.editing``): image-to-image and inpainting on the OpenVINO pipeline against the same code
on diffusers' PyTorch pipeline (f32), the steps ``strength`` picks, what inpainting keeps, the refusals, a folder
without the VAE encoder, and the pieces beside it (static shapes, the step cache, compressed variants)."""

import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import editing
from helpers.comparison import psnr
from helpers.conversion import convert_pipeline
from helpers.parts import missing_encoder_message
from helpers.pipeline import OVPixArtPipeline
from helpers.reference import editing_reference
from helpers.settings import F32_CONFIG, recipe_for
from helpers.shapes import Scene, read_scene, render
from helpers.sources import resolve_model_source
from helpers.step_cache import torch_first_block_cache
from helpers.variants import VAE_ENCODER, Variant, VariantNotReadyError, finish_variant

MIN_PSNR_DB = 40.0  # as for text-to-image (tests/test_pipeline.py): FP16 weights in f32 give ~80 dB here


def noise_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8))


def quarter_mask(width: int, height: int) -> Image.Image:
    """White (repaint) over the bottom-right quarter."""
    mask = Image.new("L", (width, height))
    mask.paste(255, (width // 2, height // 2, width, height))
    return mask


def edit(pipe, prompt: str = "a red circle", seed: int = 3, **kwargs):
    """An edit by the checkpoint's recipe where ``kwargs`` say nothing (diffusers' own pipeline does not apply it)."""
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **recipe_for(pipe.scheduler).call_arguments(**kwargs))


@pytest.fixture(scope="module")
def pairs(tiny_source, tiny_variant, tiny_standard_source, tiny_standard_variant):
    """The PyTorch reference (diffusers' pipeline with the edits mixed in) and the OpenVINO pipeline (f32), by recipe."""
    pairs = {
        "LCM": (editing_reference(tiny_source), OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)),
        "standard": (editing_reference(tiny_standard_source), OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG)),
    }
    for pipe in (pipe for pair in pairs.values() for pipe in pair):
        pipe.set_progress_bar_config(disable=True)
    return pairs


# Both recipes and both edits, each edit once at a non-square aspect-ratio bin (drawn there, given back at its size).
PARITY_CASES = [
    ("LCM", (512, 288), True, {}),  # 16:9: the 1344×768 bin
    ("LCM", (384, 256), False, {"mask_image": quarter_mask(384, 256)}),
    ("standard", (384, 256), False, {}),
    ("standard", (288, 512), True, {"mask_image": quarter_mask(288, 512), "mask_blur": 4}),  # 9:16: the 768×1344 bin
]


@pytest.mark.parametrize("recipe,size,binning,edits", PARITY_CASES)
def test_openvino_edit_matches_pytorch(pairs, recipe, size, binning, edits):
    reference, ov_pipe = pairs[recipe]
    kwargs = dict(image=noise_picture(*size), strength=0.5, num_inference_steps={"LCM": 4, "standard": 8}[recipe],
                  use_resolution_binning=binning, output_type="np", **edits)
    expected, actual = edit(reference, **kwargs).images, edit(ov_pipe, **kwargs).images
    assert actual.shape == expected.shape == (1, size[1], size[0], 3)
    assert psnr(expected[0], actual[0]) > MIN_PSNR_DB


def test_sigma_inpainting_matches_pytorch(sigma_source, sigma_variant):
    reference, ov_pipe = editing_reference(sigma_source), OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG)
    kwargs = dict(image=noise_picture(256, 256), mask_image=quarter_mask(256, 256), strength=0.6, num_inference_steps=5,
                  use_resolution_binning=False, output_type="np")
    expected, actual = edit(reference, **kwargs).images, edit(ov_pipe, **kwargs).images
    assert psnr(expected[0], actual[0]) > MIN_PSNR_DB


@pytest.mark.parametrize("recipe,steps,strength,runs", [("standard", 10, 0.3, 3), ("standard", 10, 0.55, 5), ("standard", 10, 1.0, 10),
                                                         ("LCM", 4, 0.5, 2), ("LCM", 4, 0.25, 1)])
def test_strength_runs_the_last_steps_of_the_schedule(pairs, recipe, steps, strength, runs):
    reference, ov_pipe = pairs[recipe]
    ov_pipe.scheduler.set_timesteps(steps)
    schedule = ov_pipe.scheduler.timesteps.tolist()
    seen = {"OpenVINO": [], "PyTorch": []}
    kwargs = dict(image=noise_picture(256, 256), strength=strength, num_inference_steps=steps, use_resolution_binning=False, output_type="latent")
    output = edit(ov_pipe, callback=lambda step, t, latents: seen["OpenVINO"].append(int(t)), **kwargs)
    edit(reference, callback=lambda step, t, latents: seen["PyTorch"].append(int(t)), **kwargs)
    assert output.record.steps == output.record.num_inference_steps == runs
    assert seen["OpenVINO"] == seen["PyTorch"] == schedule[steps - runs :]


def test_inpainting_keeps_the_pictures_latents_outside_the_mask(pairs):
    _, ov_pipe = pairs["standard"]
    image = noise_picture(384, 256)
    latents = edit(ov_pipe, image=image, mask_image=quarter_mask(384, 256), strength=0.8, num_inference_steps=6,
                   use_resolution_binning=False, output_type="latent").images
    pixels = ov_pipe.image_processor.preprocess(image)
    known = ov_pipe.vae.encode(pixels).latent_dist.mode() * ov_pipe.vae.config.scaling_factor
    outside = torch.ones(32, 48, dtype=torch.bool)
    outside[16:, 24:] = False  # the mask's quarter, in latents
    assert torch.allclose(latents[..., outside], known[..., outside], atol=1e-5)
    assert (latents[..., ~outside] - known[..., ~outside]).abs().mean() > 0.1


@pytest.fixture(scope="module")
def shapes_reference():
    """The shipped shapes model (trained: its pictures and VAE mean something), in PyTorch: the same edit code."""
    pipe = editing_reference(resolve_model_source("shapes"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def vae_round_trip(pipe, image: Image.Image) -> np.ndarray:
    with torch.no_grad():
        latents = pipe.vae.encode(pipe.image_processor.preprocess(image)).latent_dist.mode()
        return pipe.image_processor.postprocess(pipe.vae.decode(latents)[0], output_type="np")[0]


def test_strength_near_zero_gives_the_picture_back(shapes_reference):
    """Two of 50 steps: the picture as its VAE round trip gives it (the shapes VAE's own is 25.6 dB)."""
    image = render(Scene("circle", "red", "top left", "blue"))
    output = edit(shapes_reference, "a red circle at the top left on a blue background", image=image, strength=0.04,
                  num_inference_steps=50, output_type="np").images[0]
    round_trip, given = vae_round_trip(shapes_reference, image), np.asarray(image) / 255.0
    assert psnr(round_trip, output) > 35  # measured 39 dB; strength 0.1: 33, 1 (the same prompt from noise): 21
    assert psnr(given, output) > psnr(given, round_trip) - 0.5


def test_inpainting_draws_in_the_mask_and_keeps_the_rest(shapes_reference):
    image = render(Scene("circle", "red", "top left", "blue"))
    output = edit(shapes_reference, "a yellow square at the bottom right on a blue background", image=image,
                  mask_image=quarter_mask(256, 256), num_inference_steps=10, output_type="np").images[0]
    given, round_trip = np.asarray(image) / 255.0, vae_round_trip(shapes_reference, image)
    outside = np.ones((256, 256), dtype=bool)
    outside[112:, 112:] = False  # the quarter and a margin: the decoder's receptive field
    assert psnr(given[outside], output[outside]) > psnr(given, round_trip) - 1  # measured 26.0 dB against 25.6
    yellow = output[160:224, 160:224].mean(axis=(0, 1))
    assert yellow[0] > 0.6 and yellow[1] > 0.6 and yellow[2] < 0.4, yellow


def test_image_to_image_recolours_the_shape_where_it_was(shapes_reference):
    image = render(Scene("circle", "red", "top left", "blue"))
    output = edit(shapes_reference, "a green circle at the top left on a blue background", image=image, strength=0.7,
                  num_inference_steps=10).images[0]
    assert read_scene(output) == {"shape": "circle", "color": "green", "position": "top left", "background": "blue"}


REFUSALS = [
    ("LCM", dict(image="cat.png"), r"image='cat.png' is a path, not a picture: pass PIL.Image.open\('cat.png'\)"),
    ("LCM", dict(image=42), r"image is not a picture \(it is int\): pass a PIL image"),
    ("LCM", dict(mask_image=quarter_mask(128, 128)), r"mask_image is 128×128 but image is 256×256: .*resize\(image.size\)"),
    ("LCM", dict(mask_image=Image.new("L", (256, 256), 40)), r"marks nothing to repaint.*white marks what to repaint"),
    ("LCM", dict(strength=0), r"strength=0 is not allowed: use a number in \(0, 1\]"),
    ("LCM", dict(strength=1.5), r"strength=1.5 is not allowed"),
    ("LCM", dict(strength="strong"), r"strength='strong' is not allowed"),
    ("LCM", dict(strength=0.2), r"strength=0.2 runs 0 of the 4 steps.*use strength=0.25 or more"),
    ("standard", dict(strength=0.05), r"runs 1 of the 20 steps, and DPMSolverMultistepScheduler needs at least 2: use strength=0.1"),
    ("LCM", dict(image=None, mask_image=quarter_mask(256, 256)), r"mask_image edits a picture: pass image= \(the picture to edit\) too, or leave it out"),
    ("LCM", dict(latents=torch.zeros(1, 4, 32, 32)), r"An edit starts from its picture: leave latents out"),
    ("LCM", dict(padding_mask_crop=8), r"padding_mask_crop crops around a mask"),
    ("LCM", dict(image=[noise_picture(256, 256)] * 2), r"image holds 2 pictures for 1 prompt: pass one for all"),
]


@pytest.mark.parametrize("engine", ["OpenVINO", "PyTorch"])
@pytest.mark.parametrize("recipe,change,message", REFUSALS)
def test_bad_edits_are_refused_naming_the_fix(pairs, engine, recipe, change, message):
    reference, ov_pipe = pairs[recipe]
    pipe = ov_pipe if engine == "OpenVINO" else reference
    kwargs = dict(image=noise_picture(256, 256), use_resolution_binning=False, output_type="latent") | change
    with pytest.raises(ValueError, match=message):
        edit(pipe, **kwargs)


def test_a_folder_without_the_encoder_draws_and_names_the_command_that_adds_it(tiny_source, tiny_variant, tmp_path):
    folder = shutil.copytree(tiny_variant, tmp_path / "tiny" / "FP16")
    shutil.rmtree(folder / VAE_ENCODER)
    finish_variant(folder, folder, {"variant": "FP16", "source": str(tiny_source)}, show_progress=False)  # as made before
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG)
    assert pipe.vae_encoder is None and len(pipe.parts) == 3
    assert edit(pipe, height=256, width=256, use_resolution_binning=False).images[0].size == (256, 256)
    with pytest.raises(VariantNotReadyError, match=rf"{re.escape(str(folder))} has no VAE encoder .*`python -m helpers convert --model tiny`"):
        edit(pipe, image=noise_picture(256, 256), use_resolution_binning=False)
    assert list(convert_pipeline(tiny_source, folder, report=lambda line: None)) == [VAE_ENCODER]  # what the command does
    assert VAE_ENCODER in Variant.load(folder).index["parts"]
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG)
    assert edit(pipe, image=noise_picture(256, 256), use_resolution_binning=False).images[0].size == (256, 256)


def test_a_compressed_folder_without_the_encoder_names_both_commands(tmp_path):
    message = missing_encoder_message(tmp_path / "tiny" / "W8A8")
    assert "`python -m helpers convert --model tiny`, then " in message
    assert "`python -m helpers compress --model tiny --variant W8A8` to add it" in message


def test_static_shapes_take_an_edit_of_their_size(pairs, tiny_standard_variant):
    _, dynamic = pairs["standard"]
    static = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, compile=False)
    static.reshape(height=256, width=384, use_resolution_binning=False)
    kwargs = dict(image=noise_picture(384, 256), mask_image=quarter_mask(384, 256), strength=0.5, num_inference_steps=6,
                  use_resolution_binning=False, output_type="np")
    assert np.abs(edit(static, **kwargs).images - edit(dynamic, **kwargs).images).max() < 1e-4
    ports = static.vae_encoder.request.model_inputs
    assert [list(port.get_shape()) for port in ports] == [[1, 3, 256, 384]]  # one picture at a time, at the call's size
    with pytest.raises(ValueError, match=r"reshaped to static shapes .* 384×256.*pipe\.reshape\(batch_size=1, height=256, width=256"):
        edit(static, **kwargs | dict(image=noise_picture(256, 256), mask_image=quarter_mask(256, 256)))


def test_the_step_cache_edits_as_diffusers_first_block_cache_does(pairs, tiny_standard_variant):
    reference, _ = pairs["standard"]
    cached = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, step_cache=0.1)
    kwargs = dict(image=noise_picture(384, 256), strength=0.75, num_inference_steps=12, use_resolution_binning=False, output_type="np")
    output = edit(cached, **kwargs)
    with torch_first_block_cache(reference.transformer, 0.1) as counts:
        expected = edit(reference, **kwargs).images
    assert {"computed": output.record.computed, "reused": output.record.reused} == counts
    assert counts["computed"] + counts["reused"] == 9 and counts["reused"] > 0
    assert psnr(expected[0], output.images[0]) > MIN_PSNR_DB


def test_compressed_variants_edit_close_to_fp16(pairs, tiny_compressed):
    """The encoder compressed as the decoder is: every scheme's edit stays close to FP16's (as its pictures do)."""
    _, fp16 = pairs["LCM"]
    kwargs = dict(image=noise_picture(384, 256), mask_image=quarter_mask(384, 256), strength=0.75, use_resolution_binning=False, output_type="np")
    expected = edit(fp16, **kwargs).images[0]
    for name, folder in tiny_compressed.items():
        assert Variant.load(folder).compression[VAE_ENCODER] == Variant.load(folder).compression["vae_decoder"]
        actual = edit(OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG), **kwargs).images[0]
        assert psnr(expected, actual) > 35, name  # as tests/test_compression.py asks of their pictures


def test_padding_mask_crop_redraws_around_the_mask_and_pastes_it_back(pairs):
    _, ov_pipe = pairs["LCM"]
    image, mask = noise_picture(256, 256), Image.new("L", (256, 256))
    mask.paste(255, (160, 160, 208, 208))
    output = edit(ov_pipe, image=image, mask_image=mask, padding_mask_crop=16, use_resolution_binning=False).images[0]
    assert output.size == image.size
    outside = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(output)[outside], np.asarray(image)[outside])
    assert not np.array_equal(np.asarray(output)[~outside], np.asarray(image)[~outside])


def test_quarter_masks_and_the_pixels_they_keep():
    mask = editing.quarter_mask(384, 256, "bottom right")
    assert editing.quarter_box(384, 256, "bottom right") == (192, 128, 384, 256) and editing.quarter_box(384, 256, "top left") == (0, 0, 192, 128)
    white = np.asarray(mask) == 255
    assert mask.size == (384, 256) and white[128:, 192:].all() and white.sum() == 192 * 128
    assert np.array_equal(editing.kept_pixels(mask), ~white)
    kept = editing.kept_pixels(mask, margin=16)  # 16 pixels kept clear of the mask, towards the picture's middle
    assert kept[:112].all() and kept[:, :176].all() and not kept[112:, 176:].any()
    with pytest.raises(ValueError, match="Unknown quarter 'middle': choose one of top left, top right"):
        editing.quarter_mask(256, 256, "middle")


def test_the_vae_round_trip_is_the_same_on_openvino_and_pytorch(pairs):
    reference, ov_pipe = pairs["standard"]
    image = noise_picture(384, 256)
    expected, actual = editing.vae_round_trip(reference, image), editing.vae_round_trip(ov_pipe, image)
    assert actual.size == expected.size == image.size
    assert psnr(expected, actual) > MIN_PSNR_DB
