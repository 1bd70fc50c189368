"""The shapes measurement that chooses the whole-picture benchmark's caches: its rows, its bar and choice, and its
drawing on the tiny model (random weights: the machinery, not the scores)."""

from benchmarks.alignment_combos import (
    chosen,
    combination_rows,
    markdown,
    measure_row,
    openvino_pictures,
    torch_pictures,
    within_bar,
)
from helpers.machine import machine
from helpers.settings import STANDARD_RECIPE
from helpers.shapes import evaluation_scenes


def test_every_row_comes_after_its_reference():
    rows = combination_rows(thresholds=(0.1,), cache_dit={"F1B0 W2 0.2": {"Fn_compute_blocks": 1}})
    names = list(rows)
    assert names[:2] == ["PyTorch", "PyTorch + cache-dit F1B0 W2 0.2"] and "OpenVINO W8A8-ToDo + step cache 0.1" in names
    assert all(names.index(row["reference"]) <= names.index(name) for name, row in rows.items())
    assert rows["OpenVINO W8A8 + step cache 0.1"] == {"engine": "openvino", "variant": "W8A8", "step_cache": 0.1, "reference": "OpenVINO FP16"}


def row(overall: float, cost: float, reference: str, **settings) -> dict:
    return {"alignment": {"overall": overall}, "full-size step cost": cost, "reference": reference, "steps": 1280,
            "reused": 0, "downsampled": 0, "psnr_db": None if cost == 1 else 30.0, "ssim": 1.0, **settings}


def test_the_cheapest_row_within_the_bar_of_each_kind_is_chosen():
    rows = {
        "PyTorch": row(0.969, 1.0, "PyTorch"),
        "cached a": row(0.953, 0.6, "PyTorch", cache_dit={}),  # one picture of 64 lost: kept
        "cached b": row(0.938, 0.3, "PyTorch", cache_dit={}),  # two lost (-0.031): past the bar, however cheap
        "OpenVINO FP16": row(0.969, 1.0, "OpenVINO FP16"),
        "W8A8 cache": row(1.0, 0.5, "OpenVINO FP16", variant="W8A8", step_cache=0.1),
        "W8A8 cache more": row(0.953, 0.4, "OpenVINO FP16", variant="W8A8", step_cache=0.2),
        "ToDo": row(0.9, 0.7, "OpenVINO FP16", variant="W8A8-ToDo"),
    }
    assert [name for name, keeps in within_bar(rows).items() if not keeps] == ["cached b", "ToDo"]
    assert chosen(rows) == {"PyTorch + cache-dit": "cached a", "OpenVINO W8A8 + step cache": "W8A8 cache more",
                                 "OpenVINO W8A8-ToDo (± step cache)": "none keeps the bar"}
    report = markdown({"machine": machine(), "model": "shapes", "prompts": 64, "recipe": "20 steps, guidance 4.5", "rows": rows})
    assert "| cached b | 0.938 | -0.031 | no | 30.0 / 1.000 |" in report and "- PyTorch + cache-dit: **cached a**" in report


def test_each_engine_draws_and_counts_its_steps_on_the_tiny_model(tiny_standard_source, tiny_standard_variant):
    evaluation = evaluation_scenes(8)[:2]
    scenes = [scene for scene, _ in evaluation]
    size = {"height": 256, "width": 256, "use_resolution_binning": False}  # tiny's native size is 1024²
    settings = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 2, "residual_diff_threshold": 0.5}
    exact, exact_counts = torch_pictures(tiny_standard_source, evaluation, STANDARD_RECIPE, None, **size)
    cached, cached_counts = torch_pictures(tiny_standard_source, evaluation, STANDARD_RECIPE, settings, **size)
    reference = measure_row({"reference": "PyTorch"}, exact, exact_counts, None, scenes)
    measured = measure_row({"reference": "PyTorch"}, cached, cached_counts, exact, scenes)
    assert reference["psnr_db"] is None and reference["reused"] == 0 and reference["full-size step cost"] == 1
    assert measured["steps"] == 40 and 0 <= measured["reused"] <= 2 * (20 - 2)  # never in its 2 warm-up steps
    assert measured["full-size step cost"] < 1 or measured["reused"] == 0
    pictures, counts = openvino_pictures(tiny_standard_variant, evaluation, STANDARD_RECIPE, 0.5, "CPU", **size)
    assert len(pictures) == 2 and [count["steps"] for count in counts] == [20, 20] and all(0 <= c["reused"] <= 19 for c in counts)
