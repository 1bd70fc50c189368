"""Full-size benchmark: speed and memory of the real PixArt-XL shapes, side by side with PyTorch.

Random weights in the real configs (``assets/pixart-xl-configs/``): speed and memory do not depend on the weights' values. Every
measurement runs in its own process (so its peak memory is its own) through the same ``helpers`` functions the
notebooks use, and is appended to ``results/full.json`` as it finishes: a stopped run resumes where it stopped. At
the end: a markdown table and a chart beside the JSON. ``--quick`` runs the same steps on the small model at 256²,
all in this process, into ``quick.json``.

    python benchmarks/benchmark.py                  # full size (hours on 2 cores; about 60 GB of disk)
    python benchmarks/benchmark.py --only transformer vae_decoder
    python benchmarks/benchmark.py --quick          # the same code on the small model (CI's smoke test)
    python benchmarks/benchmark.py --sigma-2k       # PixArt-Σ-2K's transformer: one 2048² step of each variant

The steps are in ``benchmarks/plan.py``, what each runs in ``benchmarks/tasks.py`` (by name: ``benchmarks/registry.py``),
how they are run in ``benchmarks/runner.py``, the tables in ``benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from benchmarks.plan import ENGINES, plan, sigma_2k_plan
from benchmarks.registry import TASKS
from benchmarks.report import chart, markdown, sigma_2k_markdown
from benchmarks.runner import RESULTS, in_child, in_this_process, run_steps
from helpers.settings import MODEL_ROOT
from helpers.variants import PARTS


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small model, smaller sizes, one timed run, all in this process: a smoke test")
    parser.add_argument("--sigma-2k", action="store_true", help="only PixArt-Σ-2K's transformer, one 2048² step (results: sigma-2k.*)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="components to measure")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to time")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 3; quick and Σ-2K: 1)")
    parser.add_argument("--work", type=Path, default=None, help="where models are built (default: model/benchmark-<results name>)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per step")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the plan (the steps not in the results file yet) and write its tables; the results file's path."""
    args = arguments(argv)
    name = "sigma-2k" if args.sigma_2k else "full"
    name = f"{name}-quick".removeprefix("full-") if args.quick else name  # full, quick, sigma-2k, sigma-2k-quick
    work = args.work or MODEL_ROOT / f"benchmark-{name}"
    # a quick step takes seconds and a child's start about ten: the quick mode runs every step in this process
    execute = in_this_process(TASKS, work) if args.quick else in_child(work, args.timeout)
    results_path = args.out / f"{name}.json"
    if args.sigma_2k:  # each 2048² step takes minutes on 2 cores: one warm-up, one timed run by default
        results = run_steps(results_path, sigma_2k_plan(args.quick, args.runs or 1, warmup=1), execute, quick=args.quick)
        results_path.with_suffix(".md").write_text(sigma_2k_markdown(results))
    else:
        steps = plan(set(args.only), set(args.engines), args.quick, args.runs or (1 if args.quick else 3), warmup=1)
        results = run_steps(results_path, steps, execute, quick=args.quick)
        results_path.with_suffix(".md").write_text(markdown(results))
        chart(results, results_path.with_suffix(".png"))
    print(f"Results: {results_path}, {results_path.with_suffix('.md')}")
    if args.quick:
        shutil.rmtree(work / "cache", ignore_errors=True)
    return results_path


if __name__ == "__main__":
    main()
