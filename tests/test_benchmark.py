"""The full-size benchmark's quick mode: the same code on the small model, end to end (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.plan import CALIBRATION_PROMPTS
from helpers.settings import LCM_RECIPE
from helpers.variants import PARTS, VARIANTS

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "benchmark.py"


def test_quick_benchmark_measures_every_step(tmp_path):
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(BENCHMARK), "--quick", "--work", str(tmp_path / "work"), "--out", str(out)], check=True, timeout=1800)
    results = json.loads((out / "quick.json").read_text())
    steps = results["steps"]
    assert not {key: step["error"] for key, step in steps.items() if "error" in step}
    for part in PARTS:
        assert steps[f"convert {part}"]["memory"]["anon_gib"] > 0
        assert steps[f"latency torch-fp32 {part}"] and steps[f"latency ov-INT8 {part}"]
    assert steps["latency torch-fp32 transformer"]["1024² b1"]["flops"] > 0
    assert {"1024² b1", "1024² b2", "512² b1"} <= set(steps["latency ov-FP16 transformer"])
    assert steps["calibrate W8A8"]["samples"] == CALIBRATION_PROMPTS * LCM_RECIPE.num_inference_steps  # a call per step
    side = steps["W8A8 vs FP16 side by side"]
    assert side["W8A8"]["speed-up"] > 0 and side["W8A8"]["cosine vs FP16"] > 0.9
    assert "MatMul" in side["FP16"]["ms by op type"] or "FullyConnected" in side["FP16"]["ms by op type"]
    assert {"1024² b1", "1024² b2", "512² b1"} <= set(steps["latency ov-W8A8 transformer"])
    for variant in VARIANTS:
        assert steps[f"pipeline {variant}"]["image_size"] == [1024, 1024]
        assert steps[f"pipeline {variant} cached"]["compile_seconds"] > 0
        memory = steps[f"pipeline {variant}"]["memory"]
        assert memory["total_gib"] >= max(memory["anon_gib"], memory["file_gib"]) > 0
    assert steps["pipeline FP16, T5 on demand"]["image_size"] == [1024, 1024]
    assert steps["convert pipeline, one process"]["memory"]["anon_gib"] > 0
    assert "upcast T5 checkpoint" not in steps  # retired: the build stores T5 in FP32 itself
    report = (out / "quick.md").read_text()
    assert "| OpenVINO INT8 |" in report and "| pipeline INT4-T5 cached |" in report and "| OpenVINO W8A8 |" in report
    assert "| W8A8 |" in report  # the side-by-side table
    assert "| INT8 variant: compile + generate | ≤ 12 | pipeline INT8: " in report
    assert (out / "quick.png").stat().st_size > 0


def test_quick_sigma_2k_benchmark_times_each_transformer_variant(tmp_path):
    out = tmp_path / "results"
    subprocess.run([sys.executable, str(BENCHMARK), "--sigma-2k", "--quick", "--work", str(tmp_path / "work"), "--out", str(out)],
                   check=True, timeout=900)
    steps = json.loads((out / "sigma-2k-quick.json").read_text())["steps"]
    assert not {key: step["error"] for key, step in steps.items() if "error" in step}
    assert steps["Σ-2K build transformer"]["sample_size"] == 256
    assert steps["Σ-2K calibrate W8A8"]["samples"] == 8
    fp16 = (tmp_path / "work" / "FP16" / "transformer" / "openvino_model.bin").stat().st_size / 1e6
    assert steps["Σ-2K compress INT8 transformer"]["weights_mb"] < 0.7 * fp16  # INT8 weights: about half of FP16's
    side = steps["Σ-2K step 512² b1"]
    assert side["size"] == "512² b1"
    for variant in ("INT8", "W8A8"):
        assert side[variant]["speed-up"] > 0 and side[variant]["cosine vs FP16"] > 0.99
    assert steps["Σ-2K decode 1024²"]["1024²"]["median"] > 0 and steps["Σ-2K decode 1024² in tiles"]["1024²"]["median"] > 0 and steps["Σ-2K build vae_decoder"]["sample_size"] == 256
    report = (out / "sigma-2k-quick.md").read_text()
    assert "one step at 512² b1: FP16, INT8, W8A8 timed in turns" in report and "Fastest: " in report
    assert "SDXL VAE decoder, OpenVINO FP16, one 1024² decode (cold): " in report
    assert "SDXL VAE decoder, OpenVINO FP16, one 1024² decode in tiles (cold): " in report
    assert "| W8A8 |" in report and "| Σ-2K compress W8A8 transformer |" in report
