"""Comparison helpers on known inputs, and one comparison run over two variants."""

import numpy as np
import pytest

from helpers.comparison import comparison_table, cosine_similarity, latency_summary, psnr, run_variant, show_grid, ssim
from helpers.settings import EXAMPLE_PROMPTS, LCM_RECIPE


def test_ssim_of_identical_and_different_images():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64, 3))
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(image, 1 - image) < 0
    assert 0.5 < ssim(image, np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)) < 1.0


def test_psnr_of_uint8_images_uses_the_0_255_range():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = np.full((8, 8, 3), 255 // 10, dtype=np.uint8)
    assert psnr(a, b) == pytest.approx(20 * np.log10(255 / 25), abs=1e-6)


def test_cosine_similarity_known_vectors():
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine_similarity(np.ones((2, 3)), -np.ones(6)) == pytest.approx(-1.0)


def test_latency_summary():
    summary = latency_summary([3.0, 1.0, 2.0, 10.0])
    assert summary == {"median": 2.5, "min": 1.0, "max": 10.0, "runs": 4}
    with pytest.raises(ValueError, match="No timings"):
        latency_summary([])


def test_comparison_of_variants(tiny_variant, tiny_compressed):
    prompts = EXAMPLE_PROMPTS[:2]
    kwargs = dict(height=256, width=256, use_resolution_binning=False)
    runs = [
        run_variant(folder, prompts, [42, 0], device="CPU", runs=2, **kwargs)
        for folder in (tiny_variant, tiny_compressed["INT8"])
    ]
    assert [len(run.images) for run in runs] == [2, 2]
    assert runs[0].latents[0].shape == (1, 4, 32, 32)
    assert len(runs[0].pipeline_seconds) == 2
    assert len(runs[0].part_seconds["transformer step"]) == 2 * LCM_RECIPE.num_inference_steps
    table = comparison_table(runs)
    assert list(table.index) == ["FP16", "INT8"]
    assert table.loc["FP16", "PSNR dB"] == np.inf and table.loc["FP16", "SSIM"] == 1.0
    assert table.loc["INT8", "size ratio"] > 1.7
    assert 0.99 < table.loc["INT8", "latent cosine"] <= 1.0 and table.loc["INT8", "text cosine"] > 0.99
    grid = show_grid(runs, prompts)
    assert len(grid.axes) == 4
