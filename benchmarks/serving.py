"""Serving on Ray Serve: pictures per minute and latency of two ways to spend this machine's cores, and Ray's overhead.

    python -m helpers convert --model shapes       # model/shapes/FP16
    python benchmarks/serving.py                   # results/serving-shapes.json and .md

On the shapes model at its 256² (its standard recipe: 20 guided steps), under a bounded load (``--requests`` requests
from ``--clients`` concurrent clients, each waiting for its answer before it sends the next): 1 replica × 2 threads
against 2 replicas × 1 thread, on a local Ray. Ray's overhead: one client's requests to the 1 × 2 deployment against
the same pictures drawn by the pipeline called directly in this process with 2 threads, in turns (the replica idles
while the direct call runs, and the other way round).
"""

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.runner import RESULTS, machine_line, save_with_page
from helpers.machine import machine
from helpers.settings import MODEL_ROOT

LAYOUTS = ((1, 2), (2, 1))  # (replicas, threads per replica): the same 2 cores
PROMPT = "a red circle at the top left on a blue background"


def direct_pipeline(folder: Path, threads: int):
    """The pipeline in this process, compiled as a replica compiles it (``threads`` threads), warmed up."""
    import torch

    from helpers.pipeline import OVPixArtPipeline

    torch.set_num_threads(threads)
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", ov_config={"INFERENCE_NUM_THREADS": threads})
    pipe.set_progress_bar_config(disable=True)
    direct_seconds(pipe, 0)
    return pipe


def direct_seconds(pipe, seed: int) -> float:
    import torch

    start = time.perf_counter()
    pipe(PROMPT, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start


def request_seconds(url: str, seed: int) -> float:
    start = time.perf_counter()
    response = httpx.post(f"{url}/images/generations", json={"prompt": PROMPT, "seed": seed}, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - start


def load(url: str, requests: int, clients: int) -> dict:
    """``requests`` requests from ``clients`` clients at once; pictures per minute and latency percentiles."""
    request_seconds(url, 0)  # warm-up: every replica's first picture is slower
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = list(pool.map(lambda seed: request_seconds(url, seed), range(requests)))
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(seconds, n=20)  # 5 % steps: cuts[9] is p50, cuts[18] p95
    return {"requests": requests, "clients": clients, "wall_s": wall, "pictures_per_minute": 60 * requests / wall,
            "p50_s": cuts[9], "p95_s": cuts[18], "seconds": seconds}


def measure(folder: Path, requests: int, clients: int, runs: int) -> dict:
    from helpers.serving import build_app, deploy, shutdown, start_ray, undeploy

    results = {"machine": machine(), "model": folder.parent.name, "variant": folder.name, "prompt": PROMPT, "layouts": {}}
    pipe = direct_pipeline(folder, 2)
    start_ray(num_cpus=2)
    try:
        for replicas, threads in LAYOUTS:
            url = deploy(build_app(folder, replicas=replicas, threads=threads), port=8000)
            layout = f"{replicas} × {threads}"
            if (replicas, threads) == (1, 2):  # Ray's overhead: one client against direct calls, in turns
                request_seconds(url, 0)
                turns = [(direct_seconds(pipe, seed), request_seconds(url, seed)) for seed in range(1, runs + 1)]
                results["direct_seconds"], results["ray_seconds"] = (list(times) for times in zip(*turns))
            results["layouts"][layout] = load(url, requests, clients)
            print(layout, {k: v for k, v in results["layouts"][layout].items() if k != "seconds"}, flush=True)
            undeploy()  # the next layout's replicas need these CPUs
    finally:
        shutdown()
    return results


def markdown(results: dict) -> str:
    direct, ray = statistics.median(results["direct_seconds"]), statistics.median(results["ray_seconds"])
    first = next(iter(results["layouts"].values()))
    lines = [
        f"# Serving the {results['model']} model ({results['variant']}) on Ray Serve\n",
        f"{machine_line(results['machine'])} Local Ray with 2 CPUs.\n",
        f"256² pictures, the shapes model's recipe (20 guided steps); {first['requests']} requests from "
        f"{first['clients']} concurrent clients after one warm-up request.\n",
        "| replicas × threads | pictures / min | p50 s | p95 s | wall s |",
        "|---|---|---|---|---|",
    ]
    for layout, value in results["layouts"].items():
        lines.append(f"| {layout} | {value['pictures_per_minute']:.1f} | {value['p50_s']:.2f} | {value['p95_s']:.2f} | {value['wall_s']:.1f} |")
    lines += [
        "",
        f"Ray's overhead, one client, 1 × 2: median {ray:.3f} s a request against {direct:.3f} s for the pipeline called "
        f"directly with 2 threads, in turns: **{1000 * (ray - direct):+.0f} ms** ({100 * (ray / direct - 1):+.1f} %; HTTP, the "
        "front, the painter's queue, PNG encoding and base64).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=MODEL_ROOT / "shapes" / "FP16", help="the variant folder to serve")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=8, help="single-client pictures for the overhead")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = measure(args.folder, args.requests, args.clients, args.runs)
    print(save_with_page(args.out / f"serving-{results['model']}.json", results, markdown(results)))


if __name__ == "__main__":
    main()
