"""Static shapes (``pipe.reshape``): the same pictures as dynamic shapes, refusals that name ``reshape``, and the
static-only device route (NPU) through the pipeline, the CLI's flag and the demo."""

import numpy as np
import pytest
import torch

from helpers import pipeline as pipeline_module
from helpers.pipeline import OVPixArtPipeline
from helpers.settings import F32_CONFIG
from helpers.static_shapes import CallShape, needs_static_shapes

GUIDED_BATCH = dict(prompt=["a red circle", "a blue square"], negative_prompt="blurry", num_inference_steps=4, guidance_scale=4.5,
                    height=768, width=1344, output_type="np")


def draw(pipe, **kwargs):
    return pipe(**kwargs, generator=torch.Generator().manual_seed(5)).images


def static_inputs(part) -> dict[str, list[int]]:
    """The shapes the part's compiled models take (every input of a reshaped part is static)."""
    shapes = {}
    for request in part.requests.values():
        shapes |= {port.get_any_name(): list(port.get_shape()) for port in request.model_inputs}
    return shapes


@pytest.fixture(scope="module")
def standard_static(tiny_standard_variant):
    """tiny-standard with static shapes for a guided batch of 2 prompts at the 16:9 bin (f32, as the dynamic one)."""
    return OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, compile=False).reshape(
        batch_size=2, height=768, width=1344, guidance_scale=4.5
    )


def test_static_shapes_give_the_dynamic_pipelines_pictures(pipelines, standard_static):
    _, dynamic = pipelines["standard"]
    expected, actual = draw(dynamic, **GUIDED_BATCH), draw(standard_static, **GUIDED_BATCH)
    assert actual.shape == expected.shape == (2, 768, 1344, 3)
    assert np.abs(actual - expected).max() < 1e-4
    # guidance doubles the transformer's batch; 1344×768 is 168×96 latents; T5 pads to 120 tokens
    assert static_inputs(standard_static.transformer)["hidden_states"] == [4, 4, 96, 168]
    assert static_inputs(standard_static.text_encoder)["input_ids"] == [2, 120]
    assert static_inputs(standard_static.vae)["latent_sample"] == [2, 4, 96, 168]


@pytest.mark.parametrize(
    "change,named",
    [
        (dict(prompt="a red circle"), "1 prompt"),
        (dict(height=1024, width=1024), "1024×1024"),
        (dict(num_images_per_prompt=2), "2 pictures each"),
        (dict(guidance_scale=0.0), "without guidance"),
        (dict(max_sequence_length=60), "60 tokens"),
    ],
)
def test_a_reshaped_pipeline_refuses_other_shapes_naming_reshape(standard_static, change, named):
    with pytest.raises(ValueError, match="reshape") as error:
        draw(standard_static, **(GUIDED_BATCH | change))
    assert named in str(error.value) and "pipe.reshape(batch_size=" in str(error.value)


def test_a_size_that_bins_to_the_reshaped_size_is_drawn(standard_static):
    """The pipeline maps 1336×776 to the 1344×768 bin, as the reshape did: the same shapes, so it draws (and resizes
    the picture back to the size asked, as diffusers does)."""
    assert draw(standard_static, **(GUIDED_BATCH | dict(height=776, width=1336))).shape == (2, 776, 1336, 3)


def test_reshape_refuses_bad_arguments_with_the_fix(standard_static):
    with pytest.raises(ValueError, match="batch_size=0 is not allowed"):
        standard_static.reshape(batch_size=0)
    with pytest.raises(ValueError, match="height=1000 is not allowed"):
        standard_static.reshape(height=1000, use_resolution_binning=False)


def test_sigma_reshaped_with_the_step_cache_gives_the_dynamic_cached_picture(sigma_variant):
    size = dict(height=512, width=768, use_resolution_binning=False)
    kwargs = dict(prompt="a red circle", num_inference_steps=6, guidance_scale=4.5, output_type="np", **size)
    dynamic = OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG, step_cache=0.2)
    static = OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG, step_cache=0.2, compile=False)
    static.reshape(guidance_scale=4.5, **size)
    expected, actual = (pipe(**kwargs, generator=torch.Generator().manual_seed(5)) for pipe in (dynamic, static))
    assert static.static_shape.prompt_length == 300  # PixArt-Σ pads its prompts to 300 tokens
    assert actual.record.reused == expected.record.reused > 0 and actual.record.steps == expected.record.steps
    assert np.abs(actual.images - expected.images).max() < 1e-4


def test_a_static_only_device_reshapes_at_each_call_whose_shapes_change(tiny_variant, monkeypatch):
    """An NPU compiles static shapes only; no NPU here, so the CPU stands in for one."""
    monkeypatch.setattr(pipeline_module, "needs_static_shapes", lambda device: True)
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)
    assert pipe.reshape_each_call and not any(part.is_compiled for part in (pipe.text_encoder, pipe.transformer, pipe.vae))
    kwargs = dict(num_inference_steps=2, use_resolution_binning=False, output_type="np")
    assert pipe("a red circle", height=256, width=256, **kwargs).images.shape == (1, 256, 256, 3)
    assert pipe.static_shape == CallShape(1, 1, False, 256, 256, 120)
    assert pipe("a red circle", height=256, width=512, num_images_per_prompt=2, **kwargs).images.shape == (2, 256, 512, 3)
    assert pipe.static_shape == CallShape(1, 2, False, 256, 512, 120)
    pipe.reshape_each_call = False
    with pytest.raises(ValueError, match=r"pipe\.reshape\(batch_size=1, height=256, width=256"):
        pipe("a red circle", height=256, width=256, **kwargs)


def test_needs_static_shapes_names_the_npu():
    assert needs_static_shapes("NPU") and needs_static_shapes("HETERO:NPU,CPU")
    assert not needs_static_shapes("CPU") and not needs_static_shapes("AUTO")
