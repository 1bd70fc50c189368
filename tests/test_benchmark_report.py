"""The benchmarks' reports: the full-size benchmark's, rendered from its committed results and from the quick mode's
results (the quick benchmark runs once a session, shared with ``tests/test_benchmark.py``); and every committed
results file rendered by its benchmark's markdown."""

import json

import pytest
from test_benchmark import quick_run

from benchmarks import (
    editing,
    lora,
    notebooks,
    picture,
    previews,
    serving,
    serving_soak,
    step_cache,
    token_downsampling,
    vae_int8,
)
from benchmarks.plan import input_sizes, report_order
from benchmarks.report import chart, derived, markdown, sigma_2k_markdown
from benchmarks.runner import RESULTS
from helpers import machine

# results file (its name's start) -> the markdown its benchmark writes beside it
RENDERERS = {"full": markdown, "sigma-2k": sigma_2k_markdown, "picture-": picture.markdown,
             "token-downsampling-": token_downsampling.markdown, "step-cache-shapes": step_cache.quality_markdown,
             "step-cache-steps-": step_cache.steps_markdown, "step-cache-": step_cache.speed_markdown,
             "vae-int8-": vae_int8.markdown, "serving-soak-": serving_soak.markdown, "serving-": serving.markdown, "notebooks-": notebooks.markdown,
             "lora-step-": lora.report, "editing-shapes": editing.quality_markdown, "editing-speed-": editing.speed_markdown,
             "previews-": previews.markdown}


@pytest.fixture(params=["full", "quick"])
def results(request, tmp_path_factory) -> dict:
    """The committed full-size results, or those the quick benchmark writes."""
    if request.param == "quick":
        return json.loads(quick_run(tmp_path_factory.getbasetemp() / "quick-benchmark").read_text())
    return json.loads((RESULTS / "full.json").read_text())


def median(results, engine, part, which):
    """The median of ``engine``'s ``part`` at the size ``which`` names (an index into the results' sizes of it)."""
    size = list(input_sizes(results.get("quick", False))[part])[which]
    return results["steps"][f"latency {engine} {part}"][size]["median"]


def table_rows(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header line starts with ``header``, by their first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_image_times_are_the_sum_of_their_parts(results):
    table = derived(results)
    # by hand: OpenVINO INT8 runs every part itself; LCM is 4 steps at batch 1, the standard recipe 20 guided
    # steps at batch 2 and two encodes (prompt and negative prompt)
    encode = median(results, "ov-INT8", "text_encoder", 0)
    step1, step2 = median(results, "ov-INT8", "transformer", 0), median(results, "ov-INT8", "transformer", 1)  # batch 1, 2
    decode = median(results, "ov-INT8", "vae_decoder", 0)
    assert table["OpenVINO INT8"]["LCM image s"] == pytest.approx(encode + 4 * step1 + decode)
    assert table["OpenVINO INT8"]["standard image s"] == pytest.approx(2 * encode + 20 * step2 + decode)
    # W8A8 has its own transformer only, INT4-T5 its own T5 only: their other parts are INT8's
    w8a8_step = median(results, "ov-W8A8", "transformer", 0)
    assert table["OpenVINO W8A8"]["LCM image s"] == pytest.approx(encode + 4 * w8a8_step + decode)
    int4_encode = median(results, "ov-INT4-T5", "text_encoder", 0)
    assert table["OpenVINO INT4-T5"]["LCM image s"] == pytest.approx(int4_encode + 4 * step1 + decode)
    fp32 = median(results, "torch-fp32", "text_encoder", 0) + 4 * median(results, "torch-fp32", "transformer", 0) + median(results, "torch-fp32", "vae_decoder", 0)
    assert table["PyTorch fp32"]["LCM image s"] == pytest.approx(fp32)
    assert table["OpenVINO INT8"]["LCM vs fp32"] == pytest.approx(fp32 / (encode + 4 * step1 + decode))
    flops = results["steps"]["latency torch-fp32 transformer"][list(input_sizes(results.get("quick", False))["transformer"])[0]]["flops"]
    assert table["OpenVINO INT8"]["step TFLOP/s"] == pytest.approx(flops / step1 / 1e12)


def test_markdown_has_the_engine_table(results):
    text = markdown(results)
    assert text.startswith(f"Machine: {results['machine']['cpu']}") and f", {results['machine']['cores']} cores, " in text.splitlines()[0]
    engines = table_rows(text, "| engine |")
    assert list(engines) == ["PyTorch fp32", "PyTorch bf16", "OpenVINO FP16", "OpenVINO INT8", "OpenVINO INT4-T5", "OpenVINO W8A8"]
    lcm = float(engines["OpenVINO INT8"][5])  # the "LCM image s" column
    assert lcm == pytest.approx(derived(results)["OpenVINO INT8"]["LCM image s"], rel=1e-2)


def test_markdown_has_the_memory_goals(results):
    goals = table_rows(markdown(results), "| memory goal |")
    assert list(goals) == ["converting the whole LCM pipeline, anonymous memory", "INT8 variant: compile + generate",
                           "FP16 variant: compile + generate"]
    anon = results["steps"]["pipeline INT8"]["memory"]["anon_gib"]
    assert goals["INT8 variant: compile + generate"][0] == "≤ 12"
    assert goals["INT8 variant: compile + generate"][1].startswith(f"pipeline INT8: {anon:.1f} / ")


def test_markdown_has_w8a8_side_by_side(results):
    side = table_rows(markdown(results), "| variant | median s | speed-up |")
    assert list(side) == ["FP16", "W8A8"]
    measured = results["steps"]["W8A8 vs FP16 side by side"]["W8A8"]
    assert side["W8A8"][1] == f"{measured['speed-up']:.3g}" and side["W8A8"][2] == f"{measured['cosine vs FP16']:.6f}"
    assert side["FP16"][1] == "—"


def test_markdown_lists_every_step_but_the_latencies_in_the_plans_order(results):
    rows = list(table_rows(markdown(results), "| step | seconds |"))
    expected = [key for key in results["steps"] if not key.startswith("latency") and key != "matmul peak"]
    planned = [key for key in report_order() if key in expected]
    assert rows == planned + [key for key in expected if key not in planned]  # then steps the plan no longer makes
    assert rows[0] == "build" and planned[-1] == "convert pipeline, one process"


def test_full_markdown_is_the_committed_one():
    """The committed ``full.md`` is what the report makes of the committed ``full.json``, whatever machine renders it."""
    path = RESULTS / "full.json"
    assert markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text()


def test_the_report_reads_the_machine_from_the_results_only(monkeypatch):
    """Whether PyTorch bf16 could run comes from the bf16 instructions the results recorded, never from the rendering
    machine."""
    monkeypatch.setattr(machine, "cpu_flags", lambda: pytest.fail("the report read this machine's CPU flags"))
    results = {"machine": {"cpu": "Old CPU", "cores": 2, "memory_gib": 16.0, "openvino": "2026.0", "torch": "2.9",
                           "openvino_default_precision": "f32", "date": "2026-01-01", "bf16_instructions": []}, "steps": {}}
    assert "this CPU has no bf16 instructions" in markdown(results)
    results["machine"]["bf16_instructions"] = ["amx_bf16"]
    assert "PyTorch bf16 not run" not in markdown(results)


def test_chart_is_written(results, tmp_path):
    chart(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_sigma_2k_markdown_is_the_committed_one():
    """The committed ``sigma-2k.md`` is what the report makes of ``sigma-2k.json``: the fastest variant named, the decode."""
    path = RESULTS / "sigma-2k.json"
    results = json.loads(path.read_text())
    text = sigma_2k_markdown(results)
    assert text == path.with_suffix(".md").read_text()
    side = results["steps"]["Σ-2K step 2048² b1"]
    fastest = min(("FP16", "INT8", "W8A8"), key=lambda variant: side[variant]["median"])
    assert f"Fastest: {fastest}." in text
    assert list(table_rows(text, "| variant | median s | speed-up |")) == ["FP16", "INT8", "W8A8"]
    assert "- SDXL VAE decoder, OpenVINO FP16, one 2048² decode (cold): " in text


# alignment-*.json: its table is written by pandas at the run; nothing renders it again
@pytest.mark.parametrize("path", sorted(set(RESULTS.glob("*.json")) - set(RESULTS.glob("alignment-*"))), ids=lambda path: path.stem)
def test_every_committed_results_file_renders(path):
    """Each benchmark still reads the results it committed: its markdown, with the machine's line."""
    render = next(render for start, render in RENDERERS.items() if path.stem.startswith(start))
    assert "Machine: " in render(json.loads(path.read_text()))
