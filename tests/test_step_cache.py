"""The step cache (First Block Cache): the OpenVINO pipeline against diffusers' own FirstBlockCache on the PyTorch
transformer, threshold 0 against no cache, guidance, batches, both schedulers, sizes, reset, old folders, the CLI."""

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.comparison import compare_step_cache, psnr
from helpers.pipeline import OVPixArtPipeline
from helpers.settings import EXAMPLE_PROMPTS, MODEL_INDEX, recipe_for
from helpers.step_cache import (
    CUT_POINTS,
    FirstBlockCache,
    StepCacheUnavailableError,
    has_cut_points,
    torch_first_block_cache,
    whole_model,
)
from helpers.variants import IR_NAME, file_records, ir_path, read_index

MIN_PSNR_DB = 40.0  # as for the uncached pipeline (tests/test_pipeline.py): rounding alone gives ~65-80 dB here
# On the tiny random models the first block's residual moves 0.03-0.2 between steps: this threshold makes
# the pictures below mix computed and reused steps (checked by each test).
MIXING_THRESHOLD = 0.1


def draw(pipe, threshold=None, seed=7, **kwargs):
    """Pictures (as arrays) and step counts of an OpenVINO pipeline with the cache at ``threshold`` (None: off), or
    of diffusers' PyTorch pipeline with diffusers' First Block Cache; both by the checkpoint's recipe where ``kwargs``
    say nothing (the OpenVINO pipeline applies it by itself, diffusers' does not)."""
    kwargs = recipe_for(pipe.scheduler).call_arguments(output_type="np", **kwargs)
    generator = torch.Generator().manual_seed(seed)
    if isinstance(pipe, OVPixArtPipeline):
        pipe.disable_step_cache() if threshold is None else pipe.enable_step_cache(threshold)
        output = pipe(**kwargs, generator=generator)
        return output.images, output.step_cache
    with torch_first_block_cache(pipe.transformer, threshold) as counts:
        images = pipe(**kwargs, generator=generator).images
    return images, dict(counts)


GUIDED_BATCH = dict(prompt=list(EXAMPLE_PROMPTS[:3]), negative_prompt="blurry", num_inference_steps=12, guidance_scale=4.5,
                    height=256, width=384, use_resolution_binning=False)


def test_threshold_zero_gives_exactly_the_uncached_picture(pipelines):
    _, ov_pipe = pipelines["standard"]
    uncached, counts = draw(ov_pipe, None, **GUIDED_BATCH)
    assert counts is None
    cached, counts = draw(ov_pipe, 0.0, **GUIDED_BATCH)
    assert counts == {"computed": 12, "reused": 0}
    np.testing.assert_array_equal(cached, uncached)


@pytest.mark.parametrize("recipe", ["standard", "LCM"])
def test_openvino_cache_draws_diffusers_first_block_cache_picture(pipelines, recipe):
    """Guided batches of several prompts (DPM-Solver) and unguided ones with two pictures per prompt (LCM)."""
    reference, ov_pipe = pipelines[recipe]
    kwargs = GUIDED_BATCH if recipe == "standard" else dict(
        prompt=list(EXAMPLE_PROMPTS[:2]), num_images_per_prompt=2, num_inference_steps=8, guidance_scale=0.0, height=384, width=256,
        use_resolution_binning=False,
    )
    expected, torch_counts = draw(reference, MIXING_THRESHOLD, **kwargs)
    actual, counts = draw(ov_pipe, MIXING_THRESHOLD, **kwargs)
    assert counts == torch_counts and counts["computed"] >= 2 and counts["reused"] >= 2, counts
    assert actual.shape == expected.shape and 0.0 <= actual.min() and actual.max() <= 1.0
    assert all(psnr(e, a) > MIN_PSNR_DB for e, a in zip(expected, actual))
    uncached, _ = draw(ov_pipe, None, **kwargs)
    assert not np.array_equal(actual, uncached)  # the reused steps did change the picture


@pytest.mark.parametrize("height,width", [(1024, 1024), (768, 1344), (1536, 640)])
def test_cache_at_size_bins_matches_diffusers(pipelines, height, width):
    reference, ov_pipe = pipelines["standard"]
    kwargs = dict(prompt=EXAMPLE_PROMPTS[0], num_inference_steps=10, guidance_scale=4.5, height=height, width=width)
    expected, torch_counts = draw(reference, MIXING_THRESHOLD, **kwargs)
    actual, counts = draw(ov_pipe, MIXING_THRESHOLD, **kwargs)
    assert counts == torch_counts and counts["reused"] >= 1
    assert actual.shape == expected.shape == (1, height, width, 3)
    assert psnr(expected[0], actual[0]) > MIN_PSNR_DB


def test_cache_is_reset_between_pictures(pipelines):
    _, ov_pipe = pipelines["standard"]
    kwargs = dict(prompt=EXAMPLE_PROMPTS[1], num_inference_steps=10, guidance_scale=4.5, height=256, width=256, use_resolution_binning=False)
    first, first_counts = draw(ov_pipe, MIXING_THRESHOLD, seed=3, **kwargs)
    draw(ov_pipe, MIXING_THRESHOLD, seed=4, **(kwargs | {"height": 384}))  # another picture, another size, between
    again = ov_pipe(**kwargs, output_type="np", generator=torch.Generator().manual_seed(3))
    assert again.step_cache == first_counts and first_counts["computed"] < 10
    np.testing.assert_array_equal(again.images, first)


def test_compressed_variants_keep_the_cut_points_and_draw_cached(tiny_compressed):
    for name, folder in tiny_compressed.items():
        assert has_cut_points(ov.Core().read_model(ir_path(folder, "transformer"))), name
        pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", step_cache=MIXING_THRESHOLD)
        output = pipe(EXAMPLE_PROMPTS[0], num_inference_steps=6, height=256, width=256, use_resolution_binning=False, output_type="np")
        assert output.images.shape == (1, 256, 256, 3) and sum(output.step_cache.values()) == 6, name


@pytest.fixture(scope="module")
def old_folder(tiny_variant, tmp_path_factory):
    """A copy of the tiny FP16 folder as conversions before step caching made it: no cut points in the IR."""
    folder = tmp_path_factory.mktemp("old") / "tiny" / "FP16"
    shutil.copytree(tiny_variant, folder)
    xml = ir_path(folder, "transformer")
    model = whole_model(ov.Core().read_model(xml))
    ov.save_model(model, xml.with_name("old.xml"), compress_to_fp16=False)
    del model
    xml.with_name("old.xml").replace(xml)
    xml.with_name("old.bin").replace(xml.with_suffix(".bin"))
    index = read_index(folder) | {"files": file_records(folder)}  # the new IR's sizes, as its conversion recorded them
    (folder / MODEL_INDEX).write_text(json.dumps(index))
    return folder


def test_folder_converted_before_step_caching_loads_without_it_and_says_why(old_folder):
    assert [output.get_names() for output in ov.Core().read_model(old_folder / "transformer" / IR_NAME).outputs] == [{"sample"}]
    with pytest.warns(UserWarning, match=r"converted before step caching: .* draws without the step cache.* run notebook 1"):
        pipe = OVPixArtPipeline.from_pretrained(old_folder, "CPU", step_cache=0.1)
    assert pipe.transformer.step_cache is None
    output = pipe(EXAMPLE_PROMPTS[0], num_inference_steps=2, height=256, width=256, use_resolution_binning=False)
    assert output.images[0].size == (256, 256) and output.step_cache is None
    with pytest.raises(StepCacheUnavailableError, match=f"delete {old_folder}, then run notebook 1"):
        pipe.enable_step_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OVPixArtPipeline.from_pretrained(old_folder, "CPU")  # no cache asked for: no warning


def test_new_conversions_have_the_cut_points(tiny_variant):
    outputs = ov.Core().read_model(ir_path(tiny_variant, "transformer")).outputs
    assert [output.get_names() for output in outputs] == [{"sample"}, *({name} for name in CUT_POINTS)]


@pytest.mark.parametrize("threshold", [-0.1, float("nan"), "0.1", True])
def test_bad_thresholds_are_refused_with_the_fix(threshold):
    with pytest.raises(ValueError, match=r"use 0 or more \(0: every step computed; default 0.1\)"):
        FirstBlockCache(threshold)


def test_generate_step_cache_flag_reports_the_steps(tiny_variant, tmp_path):
    out = tmp_path / "cached.png"
    command = [sys.executable, "-m", "helpers", "generate", "--model", "tiny", "--model-root", str(tiny_variant.parents[1]),
               "--prompt", "a red circle", "--steps", "6", "--size", "256x256", "--step-cache", "0.1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Step cache: " in result.stdout and " steps computed, " in result.stdout
    computed, reused = (int(word) for word in result.stdout.split("Step cache: ")[1].replace(",", "").split()[::3][:2])
    assert computed + reused == 6
    assert out.is_file()


def test_compare_step_cache_table(pipelines):
    _, ov_pipe = pipelines["standard"]
    prompts, seeds = list(EXAMPLE_PROMPTS[:2]), [1, 2]
    table, pictures = compare_step_cache(ov_pipe, prompts, seeds, [0.0, MIXING_THRESHOLD], height=256, width=256, use_resolution_binning=False)
    assert list(table.index) == ["uncached", "cached, threshold 0", f"cached, threshold {MIXING_THRESHOLD:g}"]
    assert (table["steps computed"] + table["steps reused"] == 2 * 20).all()  # tiny-standard's recipe: 20 steps
    assert table.loc["cached, threshold 0", "PSNR dB"] == float("inf") and table.loc["cached, threshold 0", "steps reused"] == 0
    assert table.loc[f"cached, threshold {MIXING_THRESHOLD:g}", "steps reused"] > 0
    assert all(len(images) == 2 and images[0].size == (256, 256) for images in pictures.values())
    assert ov_pipe.transformer.step_cache is None  # left as it found it: off
