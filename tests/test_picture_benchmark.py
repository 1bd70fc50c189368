"""The whole-picture benchmark's task and table on the tiny model (no timing assertions)."""

import pytest

from benchmarks.picture import markdown, picture_plan, task_picture, task_static_vs_dynamic
from helpers.machine import machine


def test_each_engine_times_a_whole_picture_split_into_its_parts(tmp_path, tiny_source, tiny_variant):
    work = tmp_path / "tiny"
    work.mkdir()
    (work / "diffusers").symlink_to(tiny_source)
    (work / "FP16").symlink_to(tiny_variant)
    steps = {f"LCM 256² {engine}": task_picture(work, engine, "LCM", 256, runs=1, warmup=1) for engine in ("torch", "ov-FP16-static")}
    steps["static vs dynamic 256² FP16"] = turns = task_static_vs_dynamic(work, "FP16", 256, runs=1)
    for part in ("transformer", "vae_decoder"):
        assert {"dynamic", "static", "static speed-up"} <= set(turns[part]) and turns[part]["dynamic"]["runs"] == 1
        assert turns[part]["max abs difference"] < 0.1  # bf16 rounding at most
    for step in list(steps.values())[:2]:
        picture = step["pictures"][0]  # split by the picture's record: T5, the decode, and the denoising loop between
        assert picture["T5 s"] + picture["steps s"] + picture["VAE s"] == pytest.approx(picture["seconds"])
        assert step["image_size"] == [256, 256] and step["steps"] == 4 and step["guidance_scale"] == 0
        assert len(step["warmup_seconds"]) == 1 and step["median"] == picture  # one timed picture: its own median
    assert steps["LCM 256² ov-FP16-static"]["static_shapes"] and steps["LCM 256² torch"]["vae"] == "channels_last"
    report = markdown({"machine": machine(), "steps": steps})
    assert "## LCM recipe" in report and "| 1.00× |" in report and "OpenVINO FP16 (" in report and "static shapes" in report
    assert "| transformer step (batch 1) |" in report and "| VAE decode |" in report


def test_the_plan_runs_each_recipes_engines_lcm_first():
    plan = picture_plan({"LCM": ("torch", "ov-FP16"), "standard": ("torch",)}, 1024, {"LCM": 2, "standard": 1})
    assert [key for key, _, _ in plan] == ["LCM 1024² torch", "LCM 1024² ov-FP16", "standard 1024² torch", "static vs dynamic 1024² FP16"]
    assert plan[2][2] == {"engine": "torch", "recipe": "standard", "side": 1024, "runs": 1, "warmup": 1}
