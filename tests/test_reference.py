"""The PyTorch reference in two stages (T5, then transformer and VAE) gives the one-stage pipeline's pictures."""

import time

import numpy as np
import torch
from diffusers import PixArtAlphaPipeline

from helpers.pipeline import generate
from helpers.reference import reference_dtype, reference_images
from helpers.settings import EXAMPLE_PROMPTS, STANDARD_RECIPE


def test_two_stages_give_the_pipelines_own_pictures(tiny_standard_source):
    prompts, seeds = list(EXAMPLE_PROMPTS[:2]), [42, 7]
    recipe = STANDARD_RECIPE  # guided: the negative prompt's embeddings go through the stages too
    kwargs = dict(height=256, width=256, use_resolution_binning=False)
    start = time.perf_counter()
    images, seconds = reference_images(tiny_standard_source, prompts, seeds, recipe, torch.float32, batch_size=1, **kwargs)
    elapsed = time.perf_counter() - start
    pipe = PixArtAlphaPipeline.from_pretrained(tiny_standard_source)
    for prompt, seed, image in zip(prompts, seeds, images):
        expected, _ = generate(pipe, prompt, seed, recipe, **kwargs)
        assert image.size == expected.size == (256, 256)
        assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert 0 < seconds < elapsed  # the computing, loading left out


def test_reference_precision_follows_the_cpu(monkeypatch):
    from helpers import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert reference_dtype() == torch.float32
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert reference_dtype() == torch.bfloat16
