"""The whole-picture benchmark's task and table on the tiny model (no timing assertions)."""

import json

import pytest

from benchmarks.alignment_combos import chosen
from benchmarks.picture import (
    CACHE_DIT,
    DEFAULT_ENGINES,
    ENGINES,
    STEP_CACHE,
    markdown,
    picture_plan,
    task_picture,
    task_picture_draft,
    task_static_vs_dynamic,
)
from benchmarks.runner import RESULTS
from helpers.compression import make_downsampled_variant
from helpers.machine import machine
from helpers.token_downsampling import TokenDownsampling


def test_each_engine_times_a_whole_picture_split_into_its_parts(tmp_path, tiny_source, tiny_variant):
    work = tmp_path / "tiny"
    work.mkdir()
    (work / "diffusers").symlink_to(tiny_source)
    (work / "FP16").symlink_to(tiny_variant)
    steps = {f"LCM 256² {engine}": task_picture(work, engine, "LCM", 256, runs=1, warmup=1) for engine in ("torch", "ov-FP16-static")}
    steps["static vs dynamic 256² FP16"] = turns = task_static_vs_dynamic(work, "FP16", 256, runs=1)
    for part in ("transformer", "vae_decoder"):  # the speed-up: the ratio of the two medians, each of the one run asked for
        timed = turns[part]
        assert timed["static speed-up"] == pytest.approx(timed["dynamic"]["median"] / timed["static"]["median"])
        assert timed["dynamic"]["runs"] == timed["static"]["runs"] == 1 and timed["max abs difference"] < 0.1  # bf16 rounding at most
    for step in list(steps.values())[:2]:
        picture = step["pictures"][0]  # split by the picture's record: T5, the decode, and the denoising loop between
        assert picture["T5 s"] + picture["steps s"] + picture["VAE s"] == pytest.approx(picture["seconds"])
        assert step["image_size"] == [256, 256] and step["steps"] == 4 and step["guidance_scale"] == 0
        assert len(step["warmup_seconds"]) == 1 and step["median"] == picture  # one timed picture: its own median
    assert steps["LCM 256² ov-FP16-static"]["static_shapes"] and steps["LCM 256² torch"]["vae"] == "channels_last"
    report = markdown({"machine": machine(), "steps": steps})
    assert "## LCM recipe" in report and "| 1.00× |" in report and "OpenVINO FP16 (" in report and "static shapes" in report
    assert "| transformer step (batch 1) |" in report and "| VAE decode |" in report
    torch_s, ov_s = (steps[f"LCM 256² {engine}"]["median"]["seconds"] for engine in ("torch", "ov-FP16-static"))
    row = next(line for line in report.splitlines() if line.startswith("| OpenVINO FP16 ("))
    assert row.split(" | ")[2] == f"{torch_s / ov_s:.2f}×"  # vs PyTorch best: PyTorch's picture over this one


def test_the_plan_runs_each_recipes_engines_lcm_first():
    plan = picture_plan({"LCM": ("torch", "ov-FP16"), "standard": ("torch",)}, 1024, {"LCM": 2, "standard": 1})
    assert [key for key, _, _ in plan] == ["LCM 1024² torch", "LCM 1024² ov-FP16", "standard 1024² torch", "static vs dynamic 1024² FP16"]
    assert plan[2][2] == {"engine": "torch", "recipe": "standard", "side": 1024, "runs": 1, "warmup": 1}


def test_a_draft_engine_is_followed_by_its_picture_against_the_full_decode():
    plan = picture_plan({"LCM": ("ov-W8A8-ToDo-static-tiny", "torch")}, 512, {"LCM": 2}, warmup=1, turns=False)
    assert [key for key, _, _ in plan] == ["LCM 512² ov-W8A8-ToDo-static-tiny", "LCM 512² ov-W8A8-ToDo-static-tiny vs full decode", "LCM 512² torch"]
    assert plan[1][1:] == ("picture_draft", {"engine": "ov-W8A8-ToDo-static-tiny", "recipe": "LCM", "side": 512, "seed": 2})  # the last timed seed


def test_the_caches_settings_are_the_ones_the_shapes_measurement_chose():
    results = json.loads((RESULTS / "alignment-combos-shapes.json").read_text())
    rows, picks = results["rows"], chosen(results["rows"])
    assert picks == results["chosen"]
    assert rows[picks["PyTorch + cache-dit"]]["cache_dit"] == CACHE_DIT
    combinations = [rows[picks[kind]] for kind in ("OpenVINO W8A8 + step cache", "OpenVINO W8A8-ToDo (± step cache)")]
    assert [row["step_cache"] for row in combinations] == [STEP_CACHE, STEP_CACHE]
    fastest = min(combinations, key=lambda row: row["full-size step cost"])  # the standard recipe's draft is its
    draft = ENGINES[DEFAULT_ENGINES["standard"][-1]]
    assert draft["decoder"] == "tiny" and (draft["variant"], draft["step_cache"]) == (fastest["variant"], STEP_CACHE)
    assert ENGINES["torch-compile-cache-dit"]["cache_dit"] is CACHE_DIT and ENGINES["ov-W8A8-ToDo-static-cache"]["step_cache"] == STEP_CACHE


@pytest.fixture
def standard_work(tmp_path, tiny_standard_source, tiny_standard_variant, monkeypatch):
    """tiny-standard's folders as the benchmark reads them; the W8A8 engines draw with FP16 and FP16-ToDo here (the
    engine names only a folder: what is smoke-tested is the caches, the draft and the table)."""
    work = tmp_path / "tiny-standard"
    work.mkdir()
    (work / "diffusers").symlink_to(tiny_standard_source)
    (work / "FP16").symlink_to(tiny_standard_variant)
    make_downsampled_variant(tiny_standard_source, work / "FP16", work / "FP16-ToDo", TokenDownsampling(2), report=lambda message: None)
    for engine, variant in (("ov-W8A8-static-cache-tiny", "FP16"), ("ov-W8A8-ToDo-static-cache", "FP16-ToDo")):
        monkeypatch.setitem(ENGINES, engine, ENGINES[engine] | {"variant": variant})
    return work


def test_the_caching_engines_and_the_draft_report_their_steps_and_quality(standard_work):
    engines = ("torch-cache-dit", "ov-W8A8-ToDo-static-cache", "ov-W8A8-static-cache-tiny")
    steps = {f"standard 256² {engine}": task_picture(standard_work, engine, "standard", 256, runs=1, warmup=1) for engine in engines}
    torch_cached, downsampled, draft = steps.values()
    for step in steps.values():  # each cache counts the steps it reused: at most the 19 after its first computed one
        assert 0 <= step["median"]["steps reused"] <= 19 and step["steps"] == 20 and step["image_size"] == [256, 256]
    assert torch_cached["median"]["steps reused"] <= 20 - CACHE_DIT["max_warmup_steps"]
    assert torch_cached["cache_dit"].startswith("DBCache_F1B0_W") and not torch_cached["torch_compile"]
    assert downsampled["median"]["steps reused"] <= 9 and downsampled["downsampled_steps"] == 0.5  # cached: exact steps only
    assert downsampled["step_cache"] == draft["step_cache"] == STEP_CACHE and draft["static_shapes"] and "decoder" not in downsampled
    assert draft["decoder"] == "tiny"
    picture = draft["pictures"][0]
    assert picture["T5 s"] + picture["steps s"] + picture["VAE s"] == pytest.approx(picture["seconds"])
    key = "standard 256² ov-W8A8-static-cache-tiny vs full decode"
    steps[key] = versus = task_picture_draft(standard_work, "ov-W8A8-static-cache-tiny", "standard", 256, seed=1)
    assert versus["psnr_db"] < 60 and -1 <= versus["ssim"] < 1  # two decoders: never the same picture
    report = markdown({"machine": machine(), "steps": steps})
    assert "| vs PyTorch best | vs PyTorch uncached |" in report and "cache-dit DBCache_F1B0_W" in report
    assert f"step cache {STEP_CACHE:g}, tiny decoder (draft)" in report and "| 1.00× | — |" in report  # no uncached PyTorch row
    assert "- Draft OpenVINO FP16 (" in report and "(seed 1) decoded by the full VAE" in report
