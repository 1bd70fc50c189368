"""PixArt-Σ through the same flow: tiny-sigma (sample size 256, no micro-conditions, 300-token prompts) against
diffusers' own PixArtSigmaPipeline."""

import numpy as np
import openvino as ov
import pytest
import torch
from diffusers import PixArtSigmaPipeline

from helpers.building import build_random
from helpers.comparison import psnr
from helpers.compression import compress_variant
from helpers.conversion import SDXL_VAE_ACTIVATIONS_SCALE_FACTOR
from helpers.pipeline import OVPixArtPipeline, OVPixArtSigmaPipeline
from helpers.schemes import COMPRESSION_SCHEMES
from helpers.settings import F32_CONFIG, STANDARD_RECIPE
from helpers.sources import pipeline_class_name
from helpers.variants import Variant, variant_dir

MIN_PSNR_DB = 40.0  # as for α (tests/test_pipeline.py): rounding alone gives ~65 dB on the tiny models
LONG_PROMPT = " ".join(["a red circle at the top left on a blue background, flat colours, clean edges"] * 30)


@pytest.fixture(scope="module")
def pipelines(sigma_source, sigma_variant):
    return PixArtSigmaPipeline.from_pretrained(sigma_source), OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG)


def test_tiny_sigma_is_a_sigma_checkpoint_and_its_variant_says_so(sigma_source, sigma_variant, pipelines):
    assert pipeline_class_name(sigma_source) == "PixArtSigmaPipeline"
    assert Variant.load(sigma_variant).pipeline_name == "PixArtSigmaPipeline"
    _, ov_pipe = pipelines
    assert isinstance(ov_pipe, OVPixArtSigmaPipeline) and ov_pipe.recipe == STANDARD_RECIPE
    assert Variant.load(sigma_variant).sizes[0] == "2048×2048"  # the 2048 bins of sample size 256


@pytest.mark.parametrize("part", ["vae_decoder", "vae_encoder"])
def test_its_sdxl_vae_carries_the_fp16_activation_scaling_as_optimum_gives_it(sigma_variant, part):
    model = ov.Core().read_model(sigma_variant / part / "openvino_model.xml")
    assert model.get_rt_info(["runtime_options", "ACTIVATIONS_SCALE_FACTOR"]).astype(str) == SDXL_VAE_ACTIVATIONS_SCALE_FACTOR == "128.0"


def test_transformer_ir_has_no_micro_conditions(sigma_variant):
    model = ov.Core().read_model(sigma_variant / "transformer" / "openvino_model.xml")
    names = {port.get_any_name() for port in model.inputs}
    assert names == {"hidden_states", "encoder_hidden_states", "encoder_attention_mask", "timestep"}


@pytest.mark.parametrize("height,width", [(512, 512), (384, 640)])
def test_openvino_matches_pytorch_square_and_not(pipelines, height, width):
    reference, ov_pipe = pipelines
    # both with the checkpoint's recipe, which the OpenVINO pipeline applies by itself
    kwargs = ov_pipe.recipe.call_arguments(height=height, width=width, use_resolution_binning=False, num_inference_steps=8, output_type="np")
    expected = reference("a red circle", generator=torch.Generator().manual_seed(3), **kwargs).images
    actual = ov_pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs).images
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert psnr(expected[0], actual[0]) > MIN_PSNR_DB


def test_batch_of_two_guided_with_a_300_token_prompt_matches_pytorch(pipelines):
    reference, ov_pipe = pipelines
    tokens = reference.tokenizer(LONG_PROMPT).input_ids
    assert len(tokens) > 300  # cut to 300 by both pipelines, as diffusers does (α would keep 120)
    kwargs = dict(
        prompt=[LONG_PROMPT, "a blue square"], negative_prompt="blurry", num_inference_steps=5, guidance_scale=4.5,
        height=256, width=384, use_resolution_binning=False, output_type="np",
    )
    expected = reference(**kwargs, generator=torch.Generator().manual_seed(7)).images
    actual = ov_pipe(**kwargs, generator=torch.Generator().manual_seed(7)).images
    assert actual.shape == expected.shape == (2, 256, 384, 3)
    assert all(psnr(e, a) > MIN_PSNR_DB for e, a in zip(expected, actual))
    embeds, mask = ov_pipe.encode_prompt(LONG_PROMPT, do_classifier_free_guidance=False)[:2]
    assert embeds.shape[1] == 300 and int(mask.sum()) == 300  # the OpenVINO T5 took all 300 tokens


def test_a_longer_max_sequence_length_reaches_the_ir_whole_as_in_pytorch(pipelines):
    """No prompt limit of our own: diffusers cuts at ``max_sequence_length`` (300 for Σ) and nothing fails past it,
    since the IRs' token axis is dynamic; so the pipeline adds no error for long prompts."""
    reference, ov_pipe = pipelines
    prompt = " ".join([LONG_PROMPT] * 3)
    assert len(reference.tokenizer(prompt).input_ids) > 600
    encode = dict(do_classifier_free_guidance=False, max_sequence_length=600)
    expected, actual = reference.encode_prompt(prompt, **encode)[0], ov_pipe.encode_prompt(prompt, **encode)[0]
    assert actual.shape == expected.shape == (1, 600, reference.text_encoder.config.d_model)
    # the IR's weights are stored in FP16: about 2e-3 on values of standard deviation 1, as at 300 tokens
    torch.testing.assert_close(actual, expected, atol=5e-3, rtol=1e-2)
    kwargs = ov_pipe.recipe.call_arguments(max_sequence_length=600, num_inference_steps=2, height=256, width=256, use_resolution_binning=False, output_type="np")
    image = ov_pipe(prompt, generator=torch.Generator().manual_seed(1), **kwargs).images[0]
    assert psnr(reference(prompt, generator=torch.Generator().manual_seed(1), **kwargs).images[0], image) > MIN_PSNR_DB


def test_binning_maps_to_the_2048_bins_and_back(pipelines):
    _, ov_pipe = pipelines
    image = ov_pipe("a red circle", num_inference_steps=2, height=600, width=1000).images[0]
    assert image.size == (1000, 600)


def test_compressed_sigma_variant_loads_as_sigma(model_root, sigma_variant):
    folder = variant_dir("tiny-sigma", "INT8", root=model_root)
    compress_variant(sigma_variant, folder, COMPRESSION_SCHEMES["INT8"], report=lambda message: None)
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU")
    assert isinstance(pipe, OVPixArtSigmaPipeline)
    image = pipe("a red circle", num_inference_steps=2, height=256, width=256, use_resolution_binning=False).images[0]
    assert image.size == (256, 256) and np.asarray(image).std() > 0


def test_build_random_makes_a_sigma_1024_folder(tmp_path):
    folder = build_random(tmp_path / "sigma-1024" / "diffusers", preset="tiny", sample_size=128, scheduler="dpm", family="sigma")
    pipe = PixArtSigmaPipeline.from_pretrained(folder)
    assert pipeline_class_name(folder) == "PixArtSigmaPipeline"
    assert pipe.transformer.config.sample_size == 128 and not pipe.transformer.use_additional_conditions
    assert pipe.vae.config.scaling_factor == 0.13025
    with pytest.raises(ValueError, match="Unknown family 'gamma'"):
        build_random(tmp_path / "x", preset="tiny", family="gamma")
