"""The full-size benchmark's quick mode: the same code on the small model, end to end, and the runner under it (no
timing assertions: what is checked is that every step ran and what it recorded)."""

import functools
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import benchmark, runner
from benchmarks.plan import PICTURE_SIDE, input_sizes
from benchmarks.registry import TASKS
from helpers.schemes import CALIBRATION_PROMPTS
from helpers.settings import LCM_RECIPE
from helpers.variants import PARTS, VARIANTS


@functools.cache
def quick_run(folder: Path, *options: str) -> Path:
    """``benchmark.py --quick`` (with ``options``) run once per session into ``folder``, in this process: its results
    file. ``tests/test_benchmark_report.py`` renders the same file."""
    return benchmark.main(["--quick", *options, "--work", str(folder / "work"), "--out", str(folder / "results")])


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    return json.loads(quick_run(tmp_path_factory.getbasetemp() / "quick-benchmark").read_text())


def test_quick_benchmark_measures_every_step(quick, tmp_path_factory):
    steps, sizes, side = quick["steps"], input_sizes(quick=True), PICTURE_SIDE[True]
    assert quick["quick"] and not {key: step["error"] for key, step in steps.items() if "error" in step}
    for part in PARTS:
        assert steps[f"convert {part}"]["memory"]["anon_gib"] > 0
        assert set(steps[f"latency torch-fp32 {part}"]) - {"memory", "wall_seconds"} == set(sizes[part])
        assert set(steps[f"latency ov-INT8 {part}"]) - {"memory", "wall_seconds"} == set(sizes[part])
    step = f"{side}² b1"
    assert steps["latency torch-fp32 transformer"][step]["flops"] > 0 and steps["latency ov-FP16 transformer"][step]["runs"] == 1
    assert set(sizes["transformer"]) <= set(steps["latency ov-W8A8 transformer"])
    assert steps["calibrate W8A8"]["samples"] == CALIBRATION_PROMPTS * LCM_RECIPE.num_inference_steps  # a call per step
    side_by_side = steps["W8A8 vs FP16 side by side"]
    assert side_by_side["size"] == step and side_by_side["W8A8"]["cosine vs FP16"] > 0.9
    # the speed-up is the ratio of the two medians timed in turns, each of the runs asked for
    assert side_by_side["W8A8"]["speed-up"] == pytest.approx(side_by_side["FP16"]["median"] / side_by_side["W8A8"]["median"])
    assert side_by_side["FP16"]["runs"] == side_by_side["W8A8"]["runs"] == steps["latency ov-FP16 transformer"][step]["runs"]
    assert "MatMul" in side_by_side["FP16"]["ms by op type"] or "FullyConnected" in side_by_side["FP16"]["ms by op type"]
    for variant in VARIANTS:
        assert steps[f"pipeline {variant}"]["image_size"] == [side, side]
        assert {"compile_seconds", "cache_gib"} <= set(steps[f"pipeline {variant} cached"])  # compiled from the cache it filled
        memory = steps[f"pipeline {variant}"]["memory"]
        assert memory["total_gib"] >= max(memory["anon_gib"], memory["file_gib"]) > 0
    assert steps["pipeline FP16, T5 on demand"]["image_size"] == [side, side]
    assert set(steps["convert pipeline, one process"]["parts"]) == {"text_encoder"} and steps["convert pipeline, one process"]["memory"]["anon_gib"] > 0
    assert "upcast T5 checkpoint" not in steps  # retired: the build stores T5 in FP32 itself
    out = tmp_path_factory.getbasetemp() / "quick-benchmark" / "results"
    report = (out / "quick.md").read_text()
    assert "| OpenVINO INT8 |" in report and "| pipeline INT4-T5 cached |" in report and "| OpenVINO W8A8 |" in report
    assert f"| step {side}² b1 s |" in report and "| W8A8 |" in report  # the engine table at the quick sizes; the side by side
    assert "| INT8 variant: compile + generate | ≤ 12 | pipeline INT8: " in report
    assert (out / "quick.png").stat().st_size > 0


def test_quick_sigma_2k_benchmark_times_each_transformer_variant(tmp_path):
    out = quick_run(tmp_path, "--sigma-2k").parent
    steps = json.loads((out / "sigma-2k-quick.json").read_text())["steps"]
    assert not {key: step["error"] for key, step in steps.items() if "error" in step}
    assert steps["Σ-2K build transformer"]["sample_size"] == 256 and steps["Σ-2K build vae_decoder"]["sample_size"] == 256
    assert steps["Σ-2K calibrate W8A8"]["samples"] == 8
    fp16 = (tmp_path / "work" / "FP16" / "transformer" / "openvino_model.bin").stat().st_size / 1e6
    assert steps["Σ-2K compress INT8 transformer"]["weights_mb"] < 0.7 * fp16  # INT8 weights: about half of FP16's
    side = steps["Σ-2K step 512² b1"]
    assert side["size"] == "512² b1"
    for variant in ("INT8", "W8A8"):  # each against FP16: the ratio of their medians timed in turns
        assert side[variant]["speed-up"] == pytest.approx(side["FP16"]["median"] / side[variant]["median"])
        assert side[variant]["cosine vs FP16"] > 0.99 and side[variant]["runs"] == side["FP16"]["runs"]
    for key in ("Σ-2K decode 1024²", "Σ-2K decode 1024² in tiles"):
        assert steps[key]["1024²"]["runs"] == 1
    report = (out / "sigma-2k-quick.md").read_text()
    assert "one step at 512² b1: FP16, INT8, W8A8 timed in turns" in report and "Fastest: " in report
    assert "SDXL VAE decoder, OpenVINO FP16, one 1024² decode (cold): " in report
    assert "SDXL VAE decoder, OpenVINO FP16, one 1024² decode in tiles (cold): " in report
    assert "| W8A8 |" in report and "| Σ-2K compress W8A8 transformer |" in report


def test_a_task_runs_in_a_child_process_of_its_own(tmp_path):
    """The full-size runs' way: ``python -m benchmarks.registry`` runs the task and prints its result."""
    result = runner.in_child(tmp_path, timeout=300)("matmul", {"side": 64})
    assert result["side"] == 64 and set(result["tflops"]) == {"bf16", "fp32"} and result["memory"]["anon_gib"] > 0


def test_a_failing_task_is_recorded_and_the_run_goes_on(tmp_path):
    failed = subprocess.CompletedProcess([], returncode=-9, stdout="", stderr="Traceback ...\nMemoryError")
    assert runner.child_outcome(failed) == {"error": "exit -9 (killed: out of memory?)", "log": "Traceback ...\nMemoryError"}
    in_process = runner.in_this_process({**TASKS, "fails": lambda work: 1 / 0}, tmp_path)
    path = tmp_path / "results.json"
    steps = [("broken", "fails", {}), ("peak", "matmul", {"side": 32})]
    results = runner.run_steps(path, steps, in_process, quick=True)
    assert results["steps"]["broken"]["error"] == "ZeroDivisionError: division by zero"
    assert results["steps"]["peak"]["side"] == 32 and results["quick"] and "machine" in results
    assert json.loads(path.read_text()) == results and [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_a_stopped_run_resumes_after_the_steps_done(tmp_path):
    path, ran = tmp_path / "results.json", []

    def execute(task, kwargs):
        ran.append(task)
        return {"done": task}

    runner.save_results(path, {"machine": {"cpu": "earlier"}, "steps": {"first": {"done": "first"}}})
    results = runner.run_steps(path, [("first", "a", {}), ("second", "b", {})], execute)
    assert ran == ["b"] and results["machine"] == {"cpu": "earlier"} and list(results["steps"]) == ["first", "second"]


def test_calls_are_timed_in_turns_after_the_warm_up():
    order = []
    calls = {name: functools.partial(order.append, name) for name in ("A", "B")}
    seconds, outputs = runner.timed_in_turns(calls, runs=2, warmup=1)
    assert order == ["A", "B"] * 3 and {name: len(times) for name, times in seconds.items()} == {"A": 2, "B": 2}
    assert [(turn, name) for turn, name, _, _ in runner.in_turns(calls, runs=2, warmup=0)] == [(0, "A"), (0, "B"), (1, "A"), (1, "B")]
