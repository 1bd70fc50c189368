"""The notebook benchmark's harness: its markdown table, the process-tree memory sampler and the machine record it
uses (no notebook runs)."""

import os
import subprocess
import sys
import time

from benchmarks import notebooks as harness
from helpers import machine


def record(name, passed, seconds, anon, file, summary):
    return {
        "notebook": name, "passed": passed, "exit_code": 0 if passed else 1, "seconds": seconds,
        "peak_anon_gib": anon, "peak_file_gib": file, "peak_total_gib": anon + file, "max_process_hwm_gib": anon,
        "summary": summary, "started": "2025-01-01T00:00:00", "env": {},
    }


MACHINE = {"cpu": "Test CPU", "instructions": ["amx_tile", "amx_bf16", "avx512f"], "cores": 16, "memory_gib": 125.5,
           "openvino": "2025.0", "torch": "2.5.0", "date": "2025-01-01"}


def test_markdown_has_one_row_per_notebook():
    results = {
        "machine": MACHINE,
        "model": "/models/pixart",
        "02-generate.ipynb": record("02-generate.ipynb", False, 90, 1.5, 0.25, "1 failed, 3 passed in 90.00s"),
        "01-convert.ipynb": record("01-convert.ipynb", True, 300, 12.3456, 3.21, "=== 12 passed in 300.00s ==="),
    }
    results["01-convert.ipynb"]["cell_seconds"] = {"Cell 0": 30.2, "Cell 2": 250.4}
    text = harness.markdown(results)
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "/models/pixart" in lines[0]
    machine_line = next(line for line in lines if "Test CPU" in line)
    assert "amx_bf16" in machine_line and "16 cores" in machine_line and "125.5 GiB" in machine_line
    assert "OpenVINO 2025.0" in machine_line and "PyTorch 2.5.0" in machine_line and "2025-01-01" in machine_line
    rows = [line for line in lines if line.startswith("| 0")]
    assert len(rows) == 2
    assert rows[0] == "| 01-convert.ipynb | passed | 5.0 | 12.35 | 3.21 | 15.56 | Cell 2: 250 s, Cell 0: 30 s | 12 passed in 300.00s |"
    assert rows[1].startswith("| 02-generate.ipynb | failed (exit 1) | 1.5 | 1.50 | 0.25 | 1.75 | — |")


def test_cell_seconds_read_from_pytests_durations():
    lines = ["============================== slowest durations ===============================",
             "399.06s call     notebooks/02-generate.ipynb::Cell 5", "0.79s setup    notebooks/02-generate.ipynb::Cell 0",
             "3.90s call     notebooks/02-generate.ipynb::Cell 1"]
    assert harness.cell_seconds(lines) == {"Cell 5": 399.06, "Cell 1": 3.90}


def test_markdown_names_the_instructions_the_machine_record_holds():
    old = harness.markdown({"machine": MACHINE | {"cpu": "Old CPU", "instructions": ["avx2"]}, "model": "m"})
    assert "Old CPU (avx2)" in old and "amx" not in old


def test_sampler_measures_child_process_tree():
    # a shell whose child allocates 300 MB: the memory is a grandchild's, found only by walking the tree
    script = "import time; b = bytearray(300 * 2**20); time.sleep(2)"
    child = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{script}"; true'])
    sampler = machine.PeakMemory(child.pid, tree=True, interval=0.1)
    assert sampler.watch(child) == 0
    assert sampler.anon >= 0.25
    assert sampler.total >= sampler.anon and sampler.file > 0
    assert sampler.hwm >= 0.25


def test_sampler_measures_this_process_in_the_background():
    with machine.PeakMemory(interval=0.01) as sampler:
        block = bytearray(200 * 2**20)
        time.sleep(0.1)
    del block
    report = sampler.report()
    assert report["anon_gib"] >= 0.19 and report["file_gib"] > 0
    assert report["total_gib"] >= machine.status_kib(os.getpid())["VmHWM"] / 2**20  # the kernel's own peak at least


def test_machine_reports_cores_and_memory():
    info = harness.machine()
    assert info["cores"] >= 1 and info["memory_gib"] > 0 and info["cpu"]
    assert set(info["instructions"]) <= set(machine.INSTRUCTIONS)
    assert info["bf16_instructions"] == machine.bf16_instructions() and info["memory_gib"] == round(machine.memory_gib(), 1)
