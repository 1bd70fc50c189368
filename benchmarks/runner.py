"""What every benchmark shares: where results go, the line naming the machine, the results file, timing in turns,
where a step's time goes, and a plan's steps run one after the other (each in a child process, or all in this one).

A results file is JSON, rewritten whole after each measurement through a temporary file and a rename: a run stopped
at any moment leaves the previous complete file, and the next run resumes from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

from helpers.folders import write_text_atomically
from helpers.machine import PeakMemory, machine

RESULTS = Path(__file__).resolve().parent / "results"
# The module whose ``python -m`` runs one task in a child process (it holds the table of every task; see ``in_child``)
CHILD_MODULE = "benchmarks.registry"

Step = tuple[str, str, dict]  # (key in the results file, task name, the task's arguments)
Execute = Callable[[str, dict], dict]  # runs a task by name with its arguments: its result, or an error


def machine_line(machine: dict) -> str:
    """The machine a results file was measured on, in one line: the CPU (its family, model and instruction sets
    where recorded), cores, memory, OpenVINO with its CPU default precision, PyTorch, the date."""
    details = "; ".join(filter(None, [machine.get("cpu_model"), ", ".join(machine.get("instructions", []))]))
    cpu = machine["cpu"] + (f" ({details})" if details else "")
    precision = machine.get("openvino_default_precision")
    openvino = f"OpenVINO {machine['openvino']}" + (f" (CPU default precision {precision})" if precision else "")
    memory = f", {machine['memory_gib']} GiB" if "memory_gib" in machine else ""
    return f"Machine: {cpu}, {machine['cores']} cores{memory}; {openvino}, PyTorch {machine['torch']}; {machine['date']}."


def load_results(path: Path, **fields: Any) -> dict:
    """The results file at ``path``, or a new one: this machine's record and ``fields``."""
    return json.loads(path.read_text()) if path.is_file() else {"machine": machine(), **fields}


def save_results(path: Path, results: dict) -> None:
    """Write ``results`` whole: into a temporary file, then renamed over ``path`` (a stop mid-write keeps the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(results, indent=1) + "\n")


def save_with_page(path: Path, results: dict, page: str) -> str:
    """:func:`save_results`, and its markdown page beside it (``.md``); returns the page."""
    save_results(path, results)
    path.with_suffix(".md").write_text(page)
    return page


def in_turns(calls: dict[str, Callable[[], Any]], runs: int, warmup: int = 1) -> Iterator[tuple[int, str, float, Any]]:
    """Each call once a turn, always in the same order, after ``warmup`` untimed turns: a slower or faster spell of
    the machine hits every call alike. Yields ``(turn, name, seconds, output)`` for each timed call as it ends."""
    for turn in range(-warmup, runs):
        for name, call in calls.items():
            start = time.perf_counter()
            output = call()
            seconds = time.perf_counter() - start
            if turn >= 0:
                yield turn, name, seconds, output


def timed_in_turns(calls: dict[str, Callable[[], Any]], runs: int, warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """:func:`in_turns` collected: each call's seconds per timed turn, and its last output."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    outputs = {}
    for _, name, elapsed, output in in_turns(calls, runs, warmup):
        seconds[name].append(elapsed)
        outputs[name] = output
    return seconds, outputs


def op_profile(request, by_kernel: bool = False, top: int | None = 12) -> dict[str, float]:
    """Where an OpenVINO request's last inference spent its time (compiled with ``PERF_COUNT``): milliseconds per
    operation type, or per type and the kernel OpenVINO chose (its ``exec_type``, e.g. ``brgemm_avx2_I8``); the
    ``top`` largest (None: all), largest first."""
    totals: Counter[str] = Counter()
    for info in request.profiling_info:
        totals[f"{info.node_type} {info.exec_type}" if by_kernel else info.node_type] += info.real_time.total_seconds() * 1e3
    return dict(totals.most_common(top))


def run_steps(path: Path, steps: list[Step], execute: Execute, **fields: Any) -> dict:
    """Run the steps not in the results file yet, in order, the file rewritten after each; a new file starts with
    the machine's record and ``fields``."""
    results = load_results(path, **fields)
    done = results.setdefault("steps", {})
    for key, task, kwargs in steps:
        if key in done:
            print(f"{key}: done earlier, kept")
            continue
        print(f"{key} ...", flush=True)
        start = time.perf_counter()
        done[key] = {**execute(task, kwargs), "wall_seconds": time.perf_counter() - start}
        save_results(path, results)
        print(f"{key}: {json.dumps(done[key])[:300]}", flush=True)
    return results


def measured(task: Callable[..., dict], kwargs: dict) -> dict:
    """One task under the memory sampler: its result as a results file holds it (through JSON) and its peak memory."""
    with PeakMemory() as memory:
        result = task(**kwargs)
    return json.loads(json.dumps({**result, "memory": memory.report()}))


def in_this_process(tasks: dict[str, Callable[..., dict]], work: Path) -> Execute:
    """Runs each task in this process (where starting a child would take longer than the task): the peak memory is
    then this process's so far, not the task's own. A failing task is recorded as its error."""

    def execute(task: str, kwargs: dict) -> dict:
        try:
            return measured(tasks[task], {"work": work, **kwargs})
        except Exception as error:  # recorded like a failed child: the run goes on to the next step
            return {"error": f"{type(error).__name__}: {error}", "log": traceback.format_exc()[-2000:]}

    return execute


def in_child(work: Path, timeout: float) -> Execute:
    """Runs each task in its own process (``python -m benchmarks.registry``), so that its peak memory is its own."""

    def execute(task: str, kwargs: dict) -> dict:
        argv = [sys.executable, "-m", CHILD_MODULE, task, json.dumps({"work": str(work), **kwargs})]
        try:
            child = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:g} s"}
        return child_outcome(child)

    return execute


def child_outcome(child: subprocess.CompletedProcess) -> dict:
    """The result a child printed last (``RESULT {json}``), or its exit code and the end of its log."""
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    if child.returncode == 0 and lines:
        return json.loads(lines[-1].removeprefix("RESULT "))
    killed = " (killed: out of memory?)" if child.returncode in (-9, 137) else ""
    return {"error": f"exit {child.returncode}{killed}", "log": child.stderr[-2000:]}


def child_main(tasks: dict[str, Callable[..., dict]], argv: list[str]) -> None:
    """In the child process: run one task (``TASK JSON``) and print its result for :func:`child_outcome`."""
    task, kwargs = argv[0], json.loads(argv[1])
    kwargs["work"] = Path(kwargs["work"])
    print("RESULT " + json.dumps(measured(tasks[task], kwargs)))
