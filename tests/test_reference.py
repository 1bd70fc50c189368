"""The PyTorch reference in two stages (T5, then transformer and VAE) gives the one-stage pipeline's pictures."""

from types import SimpleNamespace

import numpy as np
import torch
from diffusers import PixArtAlphaPipeline

from helpers import reference
from helpers.pipeline import generate
from helpers.reference import reference_dtype, reference_images
from helpers.settings import EXAMPLE_PROMPTS, STANDARD_RECIPE
from helpers.sources import diffusers_pipeline_class


class Clock:
    """A stand-in for ``time``: each reading one second after the last; a stage's load adds 1000."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1
        return self.now

    def loading(self, source):
        """``diffusers_pipeline_class`` whose ``from_pretrained`` costs 1000 seconds of this clock."""

        def from_pretrained(*args, **kwargs):
            self.now += 1000
            return diffusers_pipeline_class(source).from_pretrained(*args, **kwargs)

        return SimpleNamespace(from_pretrained=from_pretrained)


def test_two_stages_give_the_pipelines_own_pictures(tiny_standard_source, monkeypatch):
    prompts, seeds = list(EXAMPLE_PROMPTS[:2]), [42, 7]
    recipe = STANDARD_RECIPE  # guided: the negative prompt's embeddings go through the stages too
    kwargs = dict(height=256, width=256, use_resolution_binning=False)
    clock = Clock()
    monkeypatch.setattr(reference, "diffusers_pipeline_class", clock.loading)
    monkeypatch.setattr(reference, "time", clock)
    images, seconds = reference_images(tiny_standard_source, prompts, seeds, recipe, torch.float32, batch_size=1, **kwargs)
    assert seconds == 2  # two timed spans, the encoding and the drawing, one reading apart each: the two loads left out
    pipe = PixArtAlphaPipeline.from_pretrained(tiny_standard_source)
    for prompt, seed, image in zip(prompts, seeds, images):
        expected, _ = generate(pipe, prompt, seed, recipe, **kwargs)
        assert image.size == expected.size == (256, 256)
        assert np.array_equal(np.asarray(image), np.asarray(expected))


def test_reference_precision_follows_the_cpu(monkeypatch):
    from helpers import machine

    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert reference_dtype() == torch.float32
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    assert reference_dtype() == torch.bfloat16
