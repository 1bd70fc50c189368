"""Comparison helpers on known inputs, the notebooks' settings, the table of ways to draw (on a stand-in pipeline),
and one comparison run over two variants."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers.comparison import (
    compare_ways,
    comparison_table,
    cosine_similarity,
    latency_summary,
    notebook_settings,
    psnr,
    run_variant,
    show_grid,
    ssim,
)
from helpers.record import CallRecord
from helpers.schemes import CALIBRATION_PROMPTS
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
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == pytest.approx(psnr(a, b))


def test_psnr_is_scikit_images_with_identical_images_infinite():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(1)
    a, b = rng.random((16, 16, 3)), rng.random((16, 16, 3))
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0))
    assert psnr(a, a) == float("inf")
    with pytest.raises(ValueError):
        psnr(a, a[:8])


def test_cosine_similarity_known_vectors():
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert cosine_similarity(np.ones((2, 3)), -np.ones(6)) == pytest.approx(-1.0)


def test_latency_summary():
    summary = latency_summary([3.0, 1.0, 2.0, 10.0])
    assert summary == {"median": 2.5, "min": 1.0, "max": 10.0, "runs": 4}
    with pytest.raises(ValueError, match="No timings"):
        latency_summary([])


def test_notebook_settings_read_the_environment_once(tiny_variant, monkeypatch):
    root = tiny_variant.parents[1]
    for name in ("CALIBRATION_PROMPTS", "CALIBRATION_SIDE", "COMPARE_PROMPTS", "COMPARE_RUNS", "COMPARE_SIDE", "EVALUATION_SIZE", "EVALUATION_SIDE"):
        monkeypatch.delenv(name, raising=False)
    defaults = notebook_settings("tiny", root)
    assert (defaults.calibration_prompts, defaults.compare_prompts, defaults.compare_runs, defaults.evaluation_size) == (CALIBRATION_PROMPTS, 4, 3, 64)
    assert defaults.compare_side == defaults.evaluation_side == defaults.calibration_side == 1024  # tiny's own size
    monkeypatch.setenv("COMPARE_PROMPTS", "2")
    monkeypatch.setenv("EVALUATION_SIDE", "256")
    settings = notebook_settings("tiny", root)
    assert settings.prompts == list(EXAMPLE_PROMPTS[:2]) and settings.seeds == [42, 42] and settings.evaluation_side == 256
    assert settings.size(256) == {"height": 256, "width": 256, "use_resolution_binning": False}


class StandInPipeline:
    """Draws a flat grey picture per call, brighter by ``shift``, and records ``reused`` and ``downsampled`` steps."""

    recipe = LCM_RECIPE

    def __init__(self):
        self.shift, self.reused, self.downsampled = 0, None, 0

    def __call__(self, prompt, num_inference_steps=4, **kwargs):
        record = CallRecord(num_inference_steps, self.reused, self.downsampled, {"transformer": [0.5] * num_inference_steps})
        image = Image.new("RGB", (8, 8), (100 + self.shift,) * 3)
        return SimpleNamespace(images=[image], record=record)


def test_compare_ways_counts_steps_and_compares_with_the_first_way():
    pipe = StandInPipeline()

    def change():
        pipe.shift, pipe.reused, pipe.downsampled = 10, 1, 2

    table, pictures = compare_ways(pipe, ["a", "b"], [1, 2], {"exact": lambda: None, "changed": change})
    assert list(table.index) == ["exact", "changed"] and [len(images) for images in pictures.values()] == [2, 2]
    assert table.loc["exact", "steps"] == 8 and table.loc["exact", "steps computed"] == 8 and table.loc["exact", "PSNR dB"] == np.inf
    changed = table.loc["changed"]
    assert (changed["steps computed"], changed["steps reused"], changed["steps downsampled"]) == (6, 2, 4)
    assert changed["PSNR dB"] == pytest.approx(20 * np.log10(255 / 10), abs=1e-3) and changed["transformer speed-up"] == 1.0


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
    assert len(runs[0].part_seconds["transformer"]) == 2 * LCM_RECIPE.num_inference_steps
    assert len(runs[0].part_seconds["text_encoder"]) == len(runs[0].part_seconds["vae_decoder"]) == 2
    table = comparison_table(runs)
    assert table.loc["INT8", "transformer step ms"] > 0
    assert list(table.index) == ["FP16", "INT8"]
    assert table.loc["FP16", "PSNR dB"] == np.inf and table.loc["FP16", "SSIM"] == 1.0
    assert table.loc["INT8", "size ratio"] > 1.7
    assert 0.99 < table.loc["INT8", "latent cosine"] <= 1.0 and table.loc["INT8", "text cosine"] > 0.99
    grid = show_grid(runs, prompts)
    assert len(grid.axes) == 4
