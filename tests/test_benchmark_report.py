"""The full-size benchmark's report, rendered from the committed results files (nothing is run)."""

import json
from pathlib import Path

import pytest

from benchmarks.report import chart, derived, markdown, sigma_2k_markdown
from helpers import machine

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(params=["full", "quick"])
def results(request) -> dict:
    path = RESULTS / f"{request.param}.json"
    if not path.is_file():
        pytest.skip(f"no committed {path.name}")
    return json.loads(path.read_text())


def median(results, engine, part, size):
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
    encode = median(results, "ov-INT8", "text_encoder", "120 tokens")
    step1, step2 = median(results, "ov-INT8", "transformer", "1024² b1"), median(results, "ov-INT8", "transformer", "1024² b2")
    decode = median(results, "ov-INT8", "vae_decoder", "1024²")
    assert table["OpenVINO INT8"]["LCM image s"] == pytest.approx(encode + 4 * step1 + decode)
    assert table["OpenVINO INT8"]["standard image s"] == pytest.approx(2 * encode + 20 * step2 + decode)
    # W8A8 has its own transformer only, INT4-T5 its own T5 only: their other parts are INT8's
    w8a8_step = median(results, "ov-W8A8", "transformer", "1024² b1")
    assert table["OpenVINO W8A8"]["LCM image s"] == pytest.approx(encode + 4 * w8a8_step + decode)
    int4_encode = median(results, "ov-INT4-T5", "text_encoder", "120 tokens")
    assert table["OpenVINO INT4-T5"]["LCM image s"] == pytest.approx(int4_encode + 4 * step1 + decode)
    fp32 = median(results, "torch-fp32", "text_encoder", "120 tokens") + 4 * median(results, "torch-fp32", "transformer", "1024² b1") + median(results, "torch-fp32", "vae_decoder", "1024²")
    assert table["PyTorch fp32"]["LCM image s"] == pytest.approx(fp32)
    assert table["OpenVINO INT8"]["LCM vs fp32"] == pytest.approx(fp32 / (encode + 4 * step1 + decode))
    flops = results["steps"]["latency torch-fp32 transformer"]["1024² b1"]["flops"]
    assert table["OpenVINO INT8"]["step TFLOP/s"] == pytest.approx(flops / step1 / 1e12)


def test_markdown_has_the_engine_table(results):
    text = markdown(results)
    assert text.startswith(f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores")
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
    expected = {key for key in results["steps"] if not key.startswith("latency") and key != "matmul peak"}
    assert set(rows) == expected
    assert rows[0] == "build" and rows[-1] == "convert pipeline, one process"
    if "upcast T5 checkpoint" in expected:  # a step older results hold, listed where it ran
        assert rows[1] == "upcast T5 checkpoint"


def test_full_markdown_is_the_committed_one():
    """The committed ``full.md`` is what the report makes of the committed ``full.json``, whatever machine renders it."""
    path = RESULTS / "full.json"
    if not path.is_file():
        pytest.skip("no committed full.json")
    assert markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text()


def test_the_report_reads_the_machine_from_the_results_only(monkeypatch):
    """bf16 instructions the results did not record are said to be unrecorded, never read from the rendering machine."""
    monkeypatch.setattr(machine, "cpu_flags", lambda: pytest.fail("the report read this machine's CPU flags"))
    results = {"machine": {"cpu": "Old CPU", "cores": 2, "memory_gib": 16.0, "openvino": "2026.0", "torch": "2.9",
                           "openvino_default_precision": "f32", "date": "2026-01-01"}, "steps": {}}
    assert "whether this CPU has bf16 instructions was not recorded" in markdown(results)
    results["machine"]["bf16_instructions"] = []
    assert "this CPU has no bf16 instructions" in markdown(results)
    results["machine"]["bf16_instructions"] = ["amx_bf16"]
    assert "PyTorch bf16 not run" not in markdown(results)


def test_chart_is_written(results, tmp_path):
    chart(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_sigma_2k_markdown_is_the_committed_one():
    """The committed ``sigma-2k.md`` is what the report makes of ``sigma-2k.json``: the fastest variant named, the decode."""
    path = RESULTS / "sigma-2k.json"
    if not path.is_file():
        pytest.skip("no committed sigma-2k.json")
    results = json.loads(path.read_text())
    text = sigma_2k_markdown(results)
    assert text == path.with_suffix(".md").read_text()
    side = results["steps"]["Σ-2K step 2048² b1"]
    fastest = min(("FP16", "INT8", "W8A8"), key=lambda variant: side[variant]["median"])
    assert f"Fastest: {fastest}." in text
    assert list(table_rows(text, "| variant | median s | speed-up |")) == ["FP16", "INT8", "W8A8"]
    assert "- SDXL VAE decoder, OpenVINO FP16, one 2048² decode (cold): " in text
