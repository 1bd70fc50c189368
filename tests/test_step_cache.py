"""The step cache (First Block Cache): the OpenVINO pipeline against diffusers' own FirstBlockCache on the PyTorch
transformer, threshold 0 against no cache, guidance, batches, both schedulers, sizes, reset, a pipeline without the
piece, the CLI."""

import re
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.comparison import compare_step_cache, psnr
from helpers.pipeline import OVPixArtPipeline
from helpers.settings import EXAMPLE_PROMPTS, recipe_for
from helpers.step_cache import CUT_POINTS, FirstBlockCache, torch_first_block_cache
from helpers.variants import ir_path

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
        return output.images, step_counts(output.record)
    with torch_first_block_cache(pipe.transformer, threshold) as counts:
        images = pipe(**kwargs, generator=generator).images
    return images, dict(counts)


def step_counts(record):
    """The record's steps computed and reused, as ``torch_first_block_cache`` counts them (None: no cache)."""
    return None if record.reused is None else {"computed": record.computed, "reused": record.reused}


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
    assert step_counts(again.record) == first_counts and first_counts["computed"] < 10
    np.testing.assert_array_equal(again.images, first)


def test_compressed_variants_keep_the_cut_points_and_draw_cached(tiny_compressed):
    for name, folder in tiny_compressed.items():
        outputs = {name for output in ov.Core().read_model(ir_path(folder, "transformer")).outputs for name in output.get_names()}
        assert set(CUT_POINTS) <= outputs, name
        pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", step_cache=MIXING_THRESHOLD)
        output = pipe(EXAMPLE_PROMPTS[0], num_inference_steps=6, height=256, width=256, use_resolution_binning=False, output_type="np")
        assert output.images.shape == (1, 256, 256, 3) and output.record.computed + output.record.reused == 6, name


def test_without_the_step_cache_and_token_downsampling_modules_the_pipeline_still_draws(tiny_variant):
    """The pieces are composed around the core: with their modules gone, a plain variant loads and draws."""
    script = (
        "import sys; sys.modules['helpers.step_cache'] = sys.modules['helpers.token_downsampling'] = None\n"
        "from helpers.pipeline import OVPixArtPipeline\n"
        f"pipe = OVPixArtPipeline.from_pretrained({str(tiny_variant)!r}, 'CPU')\n"
        "output = pipe('a red circle', num_inference_steps=2, height=256, width=256, use_resolution_binning=False)\n"
        "print(output.images[0].size, output.record.steps_summary())\n"
        "pipe.enable_step_cache()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "(256, 256) 2 steps\n" in run.stdout, run.stderr[-2000:]
    assert "helpers.step_cache" in run.stderr.splitlines()[-1]  # only asking for the cache needs its module


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
    counts = re.search(r"^6 steps \((\d+) computed, (\d+) reused\): ", result.stdout, re.M)  # the call's record
    assert counts and sum(map(int, counts.groups())) == 6, result.stdout
    assert out.is_file()


def test_compare_step_cache_table(pipelines):
    _, ov_pipe = pipelines["standard"]
    prompts, seeds = list(EXAMPLE_PROMPTS[:2]), [1, 2]
    found = ov_pipe.step_cache_threshold  # what the module's earlier tests left
    table, pictures = compare_step_cache(ov_pipe, prompts, seeds, [0.0, MIXING_THRESHOLD], height=256, width=256, use_resolution_binning=False)
    assert list(table.index) == ["uncached", "cached, threshold 0", f"cached, threshold {MIXING_THRESHOLD:g}"]
    assert (table["steps computed"] + table["steps reused"] == 2 * 20).all()  # tiny-standard's recipe: 20 steps
    assert table.loc["cached, threshold 0", "PSNR dB"] == float("inf") and table.loc["cached, threshold 0", "steps reused"] == 0
    assert table.loc[f"cached, threshold {MIXING_THRESHOLD:g}", "steps reused"] > 0
    assert all(len(images) == 2 and images[0].size == (256, 256) for images in pictures.values())
    assert ov_pipe.step_cache_threshold == found  # left as it found it
