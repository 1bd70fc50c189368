"""The step cache benchmark: a picture drawn its way on the tiny model, and its tables from made-up results."""

from benchmarks.step_cache import drawn, quality_rows, speed_markdown, steps_markdown
from helpers.pipeline import OVPixArtPipeline

MACHINE = {"cpu": "Test CPU", "cores": 2, "bf16_instructions": ["amx_bf16"], "instructions": ["amx_bf16", "avx512f"], "openvino": "2026.4.1",
           "openvino_default_precision": "bf16", "torch": "2.13.0", "date": "2026-12-01"}


def quality_run(threshold, overall, computed, reused, seconds):
    return {"threshold": threshold, "alignment": {"overall": overall}, "psnr_db": 30.0, "ssim": 0.9,
            "computed": computed, "reused": reused, "transformer_s": seconds, "picture_s": seconds + 1}


def test_quality_rows_relate_each_threshold_to_the_uncached_run():
    results = {"runs": {"uncached": quality_run(None, 0.98, 40, 0, 10.0), "0.2": quality_run(0.2, 0.97, 16, 24, 5.0)}}
    uncached, cached = quality_rows(results)
    assert uncached["transformer speed-up"] == 1.0 and uncached["PSNR dB vs uncached"] == "—"
    assert cached["steps reused"] == "60%" and cached["transformer speed-up"] == 2.0
    assert cached["speed-up if skipped steps were free"] == 2.5 and cached["alignment change"] == -0.01


def test_speed_markdown_compares_each_picture_with_its_turns_uncached_one():
    def run(seconds, computed):
        return {"picture_s": seconds + 10, "transformer_s": seconds, "counts": {"computed": computed, "reused": 20 - computed}}

    results = {"machine": MACHINE, "side": 1024, "recipe": "20 steps, guidance 4.5", "model": "m", "variant": "FP16",
               "runs": {"uncached #1": run(100, 20), "cached 0.2 #1": run(50, 10), "uncached #2": run(120, 20), "cached 0.2 #2": run(40, 9)}}
    text = speed_markdown(results)
    assert "| uncached | 1 | 20 + 0 | 100 | 1.00× | 110 | 1.00× |" in text
    assert "| cached 0.2 | 2 | 9 + 11 | 40 | 3.00× | 50 | 2.60× |" in text  # against the uncached picture of turn 2
    assert "- cached 0.2: transformer 2.50×, whole picture 2.22×" in text
    assert "Test CPU" in text and "amx_bf16" in text


def test_steps_markdown_estimates_a_guided_picture_from_batch_one_steps():
    results = {"machine": MACHINE, "side": 2048, "batch": 1, "model": "m", "variant": "FP16",
               "runs": {"uncached step": [10.0, 10.0], "computed step": [10.0, 10.0], "reused step": [0.5, 0.5]}}
    text = steps_markdown(results)
    assert "| 20 + 0 | 400 | 1.00× |" in text  # 20 steps of batch 2, each two batch-1 steps
    assert "| 10 + 10 | 210 | 1.90× |" in text


def test_a_picture_is_drawn_with_the_cache_on_or_off_and_its_record_read(tiny_variant):
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU")
    pipe.set_progress_bar_config(disable=True)
    size = dict(height=256, width=256, use_resolution_binning=False)
    for threshold in (None, 0.5):
        image, run = drawn(pipe, "a cat", 0, threshold, **size)
        assert image.size == (256, 256) and set(run) == {"picture_s", "transformer_s", "counts"}
        assert sum(run["counts"].values()) == pipe.recipe.num_inference_steps  # every step computed or reused
        assert pipe.step_cache_threshold == threshold
    assert drawn(pipe, "a cat", 0, None, **size)[1]["counts"]["reused"] == 0
