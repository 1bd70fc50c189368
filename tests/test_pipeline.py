"""The OpenVINO pipeline against diffusers' PyTorch pipeline, and its errors for bad input."""

import shutil

import numpy as np
import pytest
import torch

from helpers.comparison import psnr
from helpers.devices import compute_precision
from helpers.pipeline import OVPixArtPipeline, generate
from helpers.settings import EXAMPLE_PROMPTS, F32_CONFIG, LCM_RECIPE
from helpers.variants import VariantNotReadyError

# FP16-compressed weights against fp32 PyTorch, compiled with an f32 hint: the images differ by rounding only
# (~65 dB measured on the tiny model). 40 dB leaves room for other CPUs' kernels and still fails on any real
# mismatch (a wrong position embedding, timestep or mask gives < 20 dB).
MIN_PSNR_DB = 40.0


@pytest.mark.parametrize("recipe", ["LCM", "standard"])
@pytest.mark.parametrize("height,width", [(1024, 1024), (768, 1344)])
def test_openvino_image_matches_pytorch(pipelines, recipe, height, width):
    reference, ov_pipe = pipelines[recipe]
    expected, _ = generate(reference, EXAMPLE_PROMPTS[1], seed=42, height=height, width=width)
    actual, _ = generate(ov_pipe, EXAMPLE_PROMPTS[1], seed=42, height=height, width=width)
    assert actual.size == expected.size == (width, height)
    assert psnr(expected, actual) > MIN_PSNR_DB


def test_batch_of_two_prompts_with_guidance_matches_pytorch(pipelines):
    reference, ov_pipe = pipelines["standard"]
    kwargs = dict(
        prompt=list(EXAMPLE_PROMPTS[:2]), negative_prompt="blurry", num_inference_steps=5, guidance_scale=4.5,
        height=512, width=768, use_resolution_binning=False, output_type="np",
    )
    expected = reference(**kwargs, generator=torch.Generator().manual_seed(7)).images
    actual = ov_pipe(**kwargs, generator=torch.Generator().manual_seed(7)).images
    assert actual.shape == expected.shape == (2, 512, 768, 3)
    assert 0.0 <= actual.min() and actual.max() <= 1.0
    assert all(psnr(e, a) > MIN_PSNR_DB for e, a in zip(expected, actual))


def test_low_memory_gives_the_same_picture_with_one_part_compiled_at_a_time(tiny_variant, pipelines):
    _, kept = pipelines["LCM"]
    low = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG, low_memory=True)
    parts = (low.text_encoder, low.transformer, low.vae)
    assert low.low_memory and not any(part.is_compiled for part in parts)
    assert kept.text_encoder.is_compiled and not kept.low_memory
    compiled_during_steps = []
    kwargs = dict(height=256, width=256, use_resolution_binning=False, output_type="np")
    expected = kept("a red circle", generator=torch.Generator().manual_seed(3), **kwargs).images
    output = low(
        "a red circle", generator=torch.Generator().manual_seed(3),
        callback=lambda step, t, x: compiled_during_steps.append([part.is_compiled for part in parts]), **kwargs,
    )
    assert np.array_equal(output.images, expected)
    assert compiled_during_steps and all(state == [False, True, False] for state in compiled_during_steps)
    assert [part.is_compiled for part in parts] == [False, False, True]  # the VAE decoded last
    assert len(output.record.seconds["text_encoder"]) == 1


def test_low_memory_is_chosen_from_the_weights_in_memory(tiny_variant, monkeypatch):
    from helpers import devices

    # the device's own answer (an ov.Type) and hints given as strings, named alike
    assert compute_precision("CPU") in ("f32", "bf16", "f16")
    assert compute_precision("AUTO") == compute_precision("CPU")
    assert compute_precision("CPU", {"INFERENCE_PRECISION_HINT": "bf16"}) == "bf16"
    assert compute_precision("CPU", F32_CONFIG) == "f32"

    f32, bf16 = devices.weights_in_memory_gib(tiny_variant, "f32"), devices.weights_in_memory_gib(tiny_variant, "bf16")
    assert f32 == pytest.approx(2 * bf16)  # FP16 weights held in f32 take twice their file
    assert devices.fits_in_memory(tiny_variant, "CPU", F32_CONFIG)
    monkeypatch.setattr(devices, "memory_gib", lambda: f32 / devices.MEMORY_SHARE * 0.99)
    assert not devices.fits_in_memory(tiny_variant, "CPU", F32_CONFIG)
    assert devices.fits_in_memory(tiny_variant, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    assert OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG).low_memory


def test_num_images_per_prompt_and_recipe_defaults(pipelines):
    _, ov_pipe = pipelines["LCM"]
    assert ov_pipe.recipe == LCM_RECIPE
    images = ov_pipe("a red circle", num_images_per_prompt=2, height=256, width=256, use_resolution_binning=False).images
    assert [image.size for image in images] == [(256, 256)] * 2
    assert np.asarray(images[0]).std() > 0 and not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_the_call_and_generate_draw_the_same_picture_by_the_recipe(pipelines):
    _, ov_pipe = pipelines["LCM"]  # the recipe whose steps and guidance are not diffusers' defaults
    size = dict(height=256, width=256, use_resolution_binning=False)
    generated, _ = generate(ov_pipe, "a red circle", seed=3, **size)
    called = ov_pipe("a red circle", generator=torch.Generator("cpu").manual_seed(3), **size).images[0]
    assert np.array_equal(np.asarray(generated), np.asarray(called))
    diffusers_defaults = ov_pipe("a red circle", num_inference_steps=20, guidance_scale=4.5,
                                 generator=torch.Generator("cpu").manual_seed(3), **size).images[0]
    assert not np.array_equal(np.asarray(called), np.asarray(diffusers_defaults))  # the recipe is in the picture


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(prompt=[]), "prompt list is empty"),
        (dict(prompt="   "), "prompt is empty"),
        (dict(prompt="a cat", num_inference_steps=0), "at least 1 step"),
        (dict(prompt="a cat", num_inference_steps=51), "num_inference_steps=51 is more than LCMScheduler takes: use at most 50"),
        (dict(prompt="a cat", height=1001), "height=1001 is not allowed"),
        (dict(prompt="a cat", width=-8), "width=-8 is not allowed"),
        (dict(prompt="a cat", height=520, use_resolution_binning=False), "multiple of 16"),
        (dict(prompt="a cat", num_images_per_prompt=0), "num_images_per_prompt=0 is not allowed: ask for at least 1"),
        (dict(prompt="a cat", num_images_per_prompt=-2), "num_images_per_prompt=-2 is not allowed"),
        (dict(prompt="a cat", height=4096, width=4096, use_resolution_binning=False), "height=4096 is larger than this model draws: at most 2048"),
        (dict(prompt="a cat", width=2056), "width=2056 is larger than this model draws: at most 2048"),
        (dict(prompt="a cat", guidance_scale=-1.0), r"guidance_scale=-1.0 is not allowed: use 0 or more"),
        (dict(prompt="a cat", guidance_scale=float("nan")), r"guidance_scale=nan is not allowed"),
    ],
)
def test_bad_input_is_refused_with_the_fix(pipelines, kwargs, message):
    _, ov_pipe = pipelines["LCM"]
    with pytest.raises(ValueError, match=message):
        ov_pipe(**kwargs)


def test_one_step_needs_the_lcm_scheduler(pipelines):
    # diffusers reads a one-step sample from the scheduler's second output: an IndexError with DPM-Solver
    _, ov_pipe = pipelines["standard"]
    with pytest.raises(ValueError, match="num_inference_steps=1 is not allowed with DPMSolverMultistepScheduler.*at least 2"):
        ov_pipe("a cat", num_inference_steps=1, height=256, width=256, use_resolution_binning=False)
    _, lcm_pipe = pipelines["LCM"]
    image = lcm_pipe("a cat", num_inference_steps=1, height=256, width=256, use_resolution_binning=False).images[0]
    assert image.size == (256, 256)


def test_unknown_device_lists_the_devices(tiny_variant):
    with pytest.raises(ValueError, match=r"Unknown device 'NPU9'.*AUTO"):
        OVPixArtPipeline.from_pretrained(tiny_variant, "NPU9")


def test_missing_variant_says_export_or_run_notebook_1(tmp_path):
    with pytest.raises(VariantNotReadyError, match=r"pass export=True.*run notebook 1 \(01-convert\) or `python -m helpers convert --model .*` first"):
        OVPixArtPipeline.from_pretrained(tmp_path / "nothing-here")


def test_a_diffusers_folder_loads_with_export_only(tiny_standard_source):
    with pytest.raises(VariantNotReadyError, match="is a diffusers PixArtAlphaPipeline folder, not an OpenVINO variant folder: pass export=True"):
        OVPixArtPipeline.from_pretrained(tiny_standard_source)


def test_half_written_variant_is_refused(tiny_variant, tmp_path):
    copy = shutil.copytree(tiny_variant, tmp_path / "FP16")
    (copy / "transformer" / "openvino_model.bin").unlink()
    with pytest.raises(VariantNotReadyError, match="incomplete.*transformer.*run notebook 1"):
        OVPixArtPipeline.from_pretrained(copy)


def test_psnr_on_known_arrays():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")
    with pytest.raises(ValueError, match="same dimensions"):
        psnr(a, np.zeros((2, 2, 3)))


def test_a_sample_size_without_alpha_bins_asks_for_binning_off(tiny_variant, tmp_path):
    copy = shutil.copytree(tiny_variant, tmp_path / "FP16")
    config = copy / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"sample_size": 128', '"sample_size": 256'))
    pipe = OVPixArtPipeline.from_pretrained(copy, "CPU", low_memory=True)  # nothing compiled: refused first
    assert pipe.variant.sizes[0] == "2048×2048"
    with pytest.raises(ValueError, match="no aspect-ratio bins for sample size 256.*use_resolution_binning=False"):
        pipe("a cat")
