"""Full-size benchmark: speed and memory of the real PixArt-XL shapes, side by side with PyTorch.

Random weights in the real configs (``assets/pixart-xl-configs/``): speed and memory do not depend on the weights' values. Every
measurement runs in its own process (so its peak memory is its own) through the same ``helpers`` functions the
notebooks use, and is appended to ``results/full.json`` (``quick.json``) as it finishes: a stopped run resumes where it
stopped. At the end: a markdown table and a chart beside the JSON.

    python benchmarks/benchmark.py                  # full size (hours on 2 cores; about 60 GB of disk)
    python benchmarks/benchmark.py --only transformer vae_decoder
    python benchmarks/benchmark.py --quick          # the same code on the small model (CI's smoke test)
    python benchmarks/benchmark.py --sigma-2k       # PixArt-Σ-2K's transformer: one 2048² step of each variant

The steps are in ``benchmarks/plan.py``, what each runs in ``benchmarks/tasks.py``, the tables in ``benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.plan import ENGINES, plan, sigma_2k_plan
from benchmarks.report import chart, markdown, sigma_2k_markdown
from helpers.machine import machine
from helpers.variants import PARTS

RESULTS = Path(__file__).resolve().parent / "results"


def run(results_path: Path, work: Path, steps, timeout: float) -> dict:
    """Run the steps not in the results file yet, each in a child process; the file is rewritten after each."""
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.setdefault("machine", machine())
    for key, task, kwargs in steps:
        if key in results.get("steps", {}):
            print(f"{key}: done earlier, kept")
            continue
        print(f"{key} ...", flush=True)
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--child", task, json.dumps({"work": str(work), **kwargs})],
            capture_output=True, text=True, timeout=timeout,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode != 0 or not lines:
            outcome = {"error": f"exit {child.returncode}" + (" (killed: out of memory?)" if child.returncode in (-9, 137) else ""), "log": child.stderr[-2000:]}
        else:
            outcome = json.loads(lines[-1].removeprefix("RESULT "))
        outcome["wall_seconds"] = time.perf_counter() - start
        results.setdefault("steps", {})[key] = outcome
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{key}: {json.dumps(outcome)[:300]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small model, one timed run: a smoke test")
    parser.add_argument("--sigma-2k", action="store_true", help="only PixArt-Σ-2K's transformer, one 2048² step (results: sigma-2k.*)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="components to measure")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to time")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 3; quick: 1)")
    parser.add_argument("--work", type=Path, default=None, help="where models are built (default: model/benchmark[-quick])")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per step")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from benchmarks.tasks import run_child

        task, kwargs = args.child[0], json.loads(args.child[1])
        kwargs["work"] = Path(kwargs["work"])
        return run_child(task, kwargs)

    from helpers.settings import MODEL_ROOT

    name = ("sigma-2k" if args.sigma_2k else "full") + ("-quick" if args.quick else "")
    name = name.removeprefix("full-")
    work = args.work or MODEL_ROOT / f"benchmark-{name}"
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / f"{name}.json"
    if args.sigma_2k:  # each 2048² step takes minutes on 2 cores: one warm-up, one timed run by default
        steps = sigma_2k_plan(args.quick, args.runs or 1, warmup=1)
        results = run(results_path, work, steps, args.timeout)
        (args.out / f"{name}.md").write_text(sigma_2k_markdown(results))
    else:
        steps = plan(set(args.only), set(args.engines), args.quick, args.runs or (1 if args.quick else 3), warmup=1)
        results = run(results_path, work, steps, args.timeout)
        (args.out / f"{name}.md").write_text(markdown(results))
        chart(results, args.out / f"{name}.png")
    print(f"Results: {results_path}, {results_path.with_suffix('.md')}")
    if args.quick:
        shutil.rmtree(work / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
