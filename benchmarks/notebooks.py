"""Runs notebooks 01–05 one by one with nbval on a given model; records wall time and peak memory of each.

    .venv/bin/python benchmarks/notebooks.py --model /path/to/diffusers/folder --name full
    .venv/bin/python benchmarks/notebooks.py --model /path/to/model --notebooks 03 04 --force --env KEY=VALUE

Each notebook runs in its own pytest process, its output streamed to ``results/notebooks-<name>-<NN>.log`` (for
``tail -f``); peak memory is sampled over its whole process tree (pytest and the kernel), anonymous and file-backed
apart (memory-mapped weights are file-backed). Results go to ``results/notebooks-<name>.json`` and ``.md`` after
each notebook, so a stopped run resumes where it stopped. Exit code 0 if every requested notebook passed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.runner import RESULTS, load_results, machine_line, save_results
from helpers.machine import PeakMemory, machine

ROOT = Path(__file__).resolve().parents[1]


def markdown(results: dict) -> str:
    lines = [
        f"# Notebooks on {results.get('model', '?')}",
        "",
        machine_line(results["machine"]),
        "",
        "| notebook | result | minutes | peak anon GiB | peak file-backed GiB | peak total GiB | slowest cells | pytest summary |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for key in sorted(k for k in results if k.endswith(".ipynb")):
        r = results[key]
        result = "passed" if r["passed"] else f"failed (exit {r['exit_code']})"
        summary = r["summary"].strip("= ").replace("|", "\\|")
        slowest = sorted(r.get("cell_seconds", {}).items(), key=lambda item: -item[1])[:3]
        cells = ", ".join(f"{cell}: {seconds:.0f} s" for cell, seconds in slowest) or "—"
        lines.append(f"| {key} | {result} | {r['seconds'] / 60:.1f} | {r['peak_anon_gib']:.2f} | "
                     f"{r['peak_file_gib']:.2f} | {r['peak_total_gib']:.2f} | {cells} | {summary} |")
    return "\n".join(lines) + "\n"


def run_notebook(notebook: Path, env: dict, log: Path) -> dict:
    started = datetime.datetime.now().isoformat(timespec="seconds")
    # a full-size cell (four variants' pictures) can take longer than nbval's default 2000 s
    argv = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=7200", "--durations=0",
            "-p", "no:cacheprovider", f"notebooks/{notebook.name}", "-v"]
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        code = (sampler := PeakMemory(process.pid, tree=True, interval=0.5)).watch(process)
    seconds = time.perf_counter() - start
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return {
        "notebook": notebook.name, "passed": code == 0, "exit_code": code, "seconds": round(seconds, 1),
        "peak_anon_gib": round(sampler.anon, 3), "peak_file_gib": round(sampler.file, 3),
        "peak_total_gib": round(sampler.total, 3), "max_process_hwm_gib": round(sampler.hwm, 3),
        "summary": lines[-1] if lines else "", "started": started, "cell_seconds": cell_seconds(lines),
    }


def cell_seconds(lines: list[str]) -> dict[str, float]:
    """Seconds per cell from pytest's ``--durations`` report ("399.06s call  notebooks/x.ipynb::Cell 5")."""
    found = (re.match(r"([\d.]+)s call\s+\S+::(Cell \d+)$", line) for line in lines)
    return {match[2]: float(match[1]) for match in found if match}


def save(results: dict, json_path: Path) -> None:
    save_results(json_path, results)
    json_path.with_suffix(".md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="diffusers folder (or model id), passed as PIXART_MODEL_ID")
    parser.add_argument("--name", default="full", help="results/notebooks-<name>.json")
    parser.add_argument("--notebooks", nargs="+", default=["01", "02", "03", "04", "05"], help="numbers: 01 02 ...")
    parser.add_argument("--force", action="store_true", help="rerun notebooks already passed")
    parser.add_argument("--keep-going", action="store_true", help="go on after a failing notebook")
    parser.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE", help="extra environment")
    parser.add_argument("--report", action="store_true", help="only rewrite the results from the JSON and the logs")
    args = parser.parse_args(argv)
    json_path = RESULTS / f"notebooks-{args.name}.json"
    if args.report:
        return report(json_path, args.name)
    if not args.model:
        parser.error("--model is required")
    extra = dict(pair.split("=", 1) for pair in args.env if "=" in pair)
    if len(extra) != len(args.env):
        parser.error("--env takes KEY=VALUE pairs")
    # the kernels run in notebooks/: a relative folder must be made absolute
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    env = {**os.environ, "PIXART_MODEL_ID": model, **extra}
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = load_results(json_path)
    results.update(machine=machine(), model=args.model)
    all_passed = True
    for number in args.notebooks:
        notebook = next(iter(sorted((ROOT / "notebooks").glob(f"{number[:2]}-*.ipynb"))), None)
        if notebook is None:
            parser.error(f"no notebook {number}")
        if results.get(notebook.name, {}).get("passed") and not args.force:
            print(f"{notebook.name}: passed before, skipped (--force reruns it)", flush=True)
            continue
        log = RESULTS / f"notebooks-{args.name}-{number[:2]}.log"
        print(f"{notebook.name}: running, log in {log}", flush=True)
        results[notebook.name] = record = {**run_notebook(notebook, env, log), "env": extra}
        save(results, json_path)
        print(f"{notebook.name}: {record['summary']} ({record['seconds'] / 60:.1f} min, "
              f"peak {record['peak_total_gib']:.2f} GiB)", flush=True)
        all_passed &= record["passed"]
        if not record["passed"] and not args.keep_going:
            break  # later notebooks use what earlier ones made
    save(results, json_path)
    return 0 if all_passed else 1


def report(json_path: Path, name: str) -> int:
    """Rewrite the JSON and markdown, with each notebook's cell times read again from its log."""
    results = json.loads(json_path.read_text())
    for key in (k for k in results if k.endswith(".ipynb")):
        log = RESULTS / f"notebooks-{name}-{key[:2]}.log"
        if log.is_file():
            results[key]["cell_seconds"] = cell_seconds([line.strip() for line in log.read_text().splitlines()])
    save(results, json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
