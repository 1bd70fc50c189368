"""The step cache's speed and quality: cached against uncached pictures, timed in turns in one process.

    python benchmarks/step_cache.py quality                       # shapes model: alignment, PSNR/SSIM, per threshold
    python benchmarks/step_cache.py speed --model model/pixart-xl-dpm-random/diffusers   # full size, 1024², 20 steps
    python benchmarks/step_cache.py steps --model model/pixart-xl-dpm-random/diffusers --side 2048   # Σ-2K's step

``quality`` draws the shapes model's evaluation prompts (one picture per call, the way people draw) without the cache
and at each threshold: alignment score, PSNR/SSIM against the uncached pictures, steps reused, transformer time.
``speed`` draws whole pictures of a (random-weight, full-size) variant folder, uncached and cached in turns, after a
short warm-up, and records each picture's transformer time and whole time. ``steps`` times one computed and one
reused step at a size too large for whole pictures on 2 cores (2048²) and estimates a picture from them. Each appends to ``results/step-cache-*.json``
after every measurement (a stopped run resumes) and rewrite the markdown (and the quality chart) beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path

from benchmarks.runner import RESULTS, in_turns, load_results, machine_line, save_results

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def drawn(pipe, prompt: str, seed: int, threshold: float | None, **kwargs) -> tuple:
    """One picture (the checkpoint's recipe) with the step cache at ``threshold`` (None: off), and what its record
    says: its seconds, the transformer's, the steps computed and reused."""
    from helpers.comparison import draw, set_step_cache

    set_step_cache(pipe, threshold)  # compiles when the cache is switched: before the picture's clock starts
    image, seconds, record = draw(pipe, prompt, seed, **kwargs)
    return image, {"picture_s": seconds, "transformer_s": record.total_seconds("transformer"),
                   "counts": {"computed": record.computed, "reused": record.reused or 0}}


def quality(args) -> None:
    import numpy as np

    from helpers.comparison import psnr, ssim
    from helpers.conversion import convert_pipeline
    from helpers.pipeline import OVPixArtPipeline
    from helpers.shapes import alignment_score, evaluation_scenes
    from helpers.sources import resolve_model_source
    from helpers.variants import variant_dir

    path = args.out / "step-cache-shapes.json"
    results = load_results(path, runs={})
    folder = variant_dir(args.model, "FP16")
    convert_pipeline(resolve_model_source(args.model), folder)
    pipe = OVPixArtPipeline.from_pretrained(folder, args.device)
    pipe.set_progress_bar_config(disable=True)
    recipe = pipe.recipe
    evaluation = evaluation_scenes(args.prompts)
    scenes = [scene for scene, _ in evaluation]
    pictures = {}
    for threshold in (None, *args.thresholds):  # uncached first: the others are compared with it
        key = "uncached" if threshold is None else f"{threshold:g}"
        pictures[key], draws = zip(*(drawn(pipe, scene.caption, seed, threshold) for scene, seed in evaluation))
        results["runs"][key] = {
            "threshold": threshold,
            "alignment": alignment_score(pictures[key], scenes),
            "psnr_db": float(np.mean([psnr(a, b) for a, b in zip(pictures["uncached"], pictures[key])])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(pictures["uncached"], pictures[key])])),
            "computed": sum(d["counts"]["computed"] for d in draws),
            "reused": sum(d["counts"]["reused"] for d in draws),
            "transformer_s": sum(d["transformer_s"] for d in draws),
            "picture_s": sum(d["picture_s"] for d in draws),
        }
        print(key, json.dumps(results["runs"][key])[:300], flush=True)
    results |= {"model": args.model, "prompts": args.prompts, "recipe": f"{recipe.num_inference_steps} steps, guidance {recipe.guidance_scale}"}
    save_results(path, results)
    path.with_suffix(".md").write_text(quality_markdown(results))
    quality_chart(results).savefig(path.with_suffix(".png"), dpi=90, bbox_inches="tight")


def quality_rows(results: dict) -> list[dict]:
    runs = results["runs"]
    base = runs["uncached"]
    rows = []
    for key, run in runs.items():
        steps = run["computed"] + run["reused"]
        rows.append({
            "threshold": key,
            "steps reused": f"{run['reused'] / steps:.0%}",
            "transformer speed-up": round(base["transformer_s"] / run["transformer_s"], 2),
            "speed-up if skipped steps were free": round(steps / run["computed"], 2),
            "alignment": round(run["alignment"]["overall"], 3),
            "alignment change": round(run["alignment"]["overall"] - base["alignment"]["overall"], 3),
            "PSNR dB vs uncached": "—" if key == "uncached" else round(run["psnr_db"], 1),
            "SSIM vs uncached": round(run["ssim"], 3),
        })
    return rows


def quality_markdown(results: dict) -> str:
    rows = quality_rows(results)
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row.values()) + " |\n" for row in rows)
    return (
        f"# Step cache on the shapes model: quality against speed\n\n"
        f"`{results['model']}`, FP16 variant, {results['prompts']} evaluation prompts, one picture per call, {results['recipe']} "
        f"(DPM-Solver), 256².\n\n{machine_line(results['machine'])}\n\n"
        f"{head}{body}\n"
        "The shapes model is small (its transformer's blocks take little of a step at 256²), so its measured speed-up "
        "understates what the full-size transformer gains; the last speed column is what skipping costs nothing would give. "
        "Quality comes from this trained model only: random weights cannot measure it.\n"
    )


def quality_chart(results: dict):
    import matplotlib.pyplot as plt

    rows = quality_rows(results)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = [row["speed-up if skipped steps were free"] for row in rows]
    y = [row["alignment"] for row in rows]
    ax.plot(x, y, "o-")
    for row, xi, yi in zip(rows, x, y):
        ax.annotate(row["threshold"], (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(rows[0]["alignment"] - 0.02, color="grey", linestyle=":", label="uncached − 0.02")
    ax.set_xlabel("steps drawn / steps computed in full")
    ax.set_ylabel("alignment (64 prompts)")
    ax.set_title("Step cache on the shapes model, by threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speed(args) -> None:
    from helpers.comparison import set_step_cache
    from helpers.pipeline import OVPixArtPipeline
    from helpers.settings import EXAMPLE_PROMPTS, model_name
    from helpers.variants import variant_dir

    path = args.out / f"step-cache-{model_name(args.model)}.json"
    results = load_results(path, runs={})
    folder = variant_dir(args.model, args.variant)
    pipe = OVPixArtPipeline.from_pretrained(folder, args.device)
    recipe = pipe.recipe
    size = dict(height=args.side, width=args.side)
    ways = {"uncached": None, **{f"cached {threshold:g}": threshold for threshold in args.thresholds}}
    for threshold in ways.values():  # warm-up: compile each way and run it once, 2 steps
        set_step_cache(pipe, threshold)
        pipe(EXAMPLE_PROMPTS[0], num_inference_steps=2, output_type="latent", **size)
    results |= {"model": args.model, "variant": args.variant, "side": args.side,
                "recipe": f"{recipe.num_inference_steps} steps, guidance {recipe.guidance_scale}"}
    for turn in range(args.runs):  # a prompt and seed per turn; the ways not drawn yet in it, in turns
        prompt = EXAMPLE_PROMPTS[turn % len(EXAMPLE_PROMPTS)]
        pending = {way: partial(drawn, pipe, prompt, turn, threshold, **size) for way, threshold in ways.items()
                   if f"{way} #{turn + 1}" not in results["runs"]}
        for _, way, _, (_, run) in in_turns(pending, runs=1, warmup=0):
            results["runs"][f"{way} #{turn + 1}"] = run
            save_results(path, results)
            print(f"{way} #{turn + 1}", run, flush=True)
    path.with_suffix(".md").write_text(speed_markdown(results))


def speed_markdown(results: dict) -> str:
    """One row per picture, each compared with the uncached picture of its own turn (the machine's pace varies
    between turns more than within one), then the median of those ratios per way."""
    turns: dict[str, dict[str, dict]] = {}
    for key, run in results["runs"].items():
        way, turn = key.split(" #")
        turns.setdefault(turn, {})[way] = run
    rows, ratios = [], {}
    for turn, runs in turns.items():
        base = runs["uncached"]
        for way, run in runs.items():
            speedup = (base["transformer_s"] / run["transformer_s"], base["picture_s"] / run["picture_s"])
            ratios.setdefault(way, []).append(speedup)
            rows.append(f"| {way} | {turn} | {run['counts']['computed']} + {run['counts']['reused']} | {run['transformer_s']:.0f} "
                        f"| {speedup[0]:.2f}× | {run['picture_s']:.0f} | {speedup[1]:.2f}× |")
    summary = "".join(
        f"- {way}: transformer {statistics.median(r[0] for r in speedups):.2f}×, whole picture {statistics.median(r[1] for r in speedups):.2f}×\n"
        for way, speedups in ratios.items() if way != "uncached"
    )
    return (
        f"# Step cache at full size: {results['side']}², {results['recipe']}\n\n"
        f"`{results['model']}` ({results['variant']}, random weights), {len(turns)} turns of one picture each way, in one "
        f"process after a warm-up.\n\n{machine_line(results['machine'])}\n\n"
        "| | turn | steps computed + reused | transformer s | speed-up | picture s | speed-up |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + f"\n\nMedian speed-up against the uncached picture of the same turn:\n{summary}\n"
        "Random weights decide which steps are reused differently from trained ones: the step counts here are the "
        "random model's; the costs of a computed and of a reused step are those of the real shapes.\n"
    )


def steps(args) -> None:
    """One computed and one reused step of the cached transformer at ``side``², each timed ``runs`` times in turns
    with the uncached step; a guided picture's transformer time is estimated from them (a guided step is batch 2:
    twice a batch-1 step, as every op of the transformer is per picture)."""
    import openvino as ov
    import torch

    from helpers.conversion import transformer_example
    from helpers.parts import OVTransformer
    from helpers.settings import model_name
    from helpers.step_cache import FIRST_BLOCK, LAST_BLOCK, CachedTransformer
    from helpers.variants import variant_dir

    path = args.out / f"step-cache-steps-{model_name(args.model)}-{args.side}.json"
    results = load_results(path, runs={})
    results |= {"model": args.model, "variant": args.variant, "side": args.side, "batch": args.batch}
    folder = variant_dir(args.model, args.variant) / "transformer"
    core = ov.Core()
    whole, cut = OVTransformer(folder, core, args.device), CachedTransformer(folder, core, args.device)
    torch.manual_seed(0)
    inputs = transformer_example(whole.config, batch=args.batch, side=args.side // 8)
    inputs["timestep"] = inputs["timestep"].float()

    def computed():
        first_block, _ = cut.run("first", **inputs)
        cut.run("head", **{LAST_BLOCK: cut.run("blocks", **{FIRST_BLOCK: first_block}, **inputs)[0]}, **inputs)

    def reused():
        first_block, _ = cut.run("first", **inputs)
        cut.run("head", **{LAST_BLOCK: first_block}, **inputs)

    ways = {"uncached step": lambda: whole.infer(**inputs), "computed step": computed, "reused step": reused}
    for _, name, seconds, _ in in_turns(ways, args.runs):
        results["runs"].setdefault(name, []).append(seconds)
        save_results(path, results)
        print(name, seconds, flush=True)
    path.with_suffix(".md").write_text(steps_markdown(results))


def steps_markdown(results: dict) -> str:
    step = {name: statistics.median(seconds) for name, seconds in results["runs"].items()}
    lines = [
        f"# Step cache: one step at {results['side']}² (batch {results['batch']}), computed and reused\n",
        f"`{results['model']}` ({results['variant']}, random weights), median of {len(results['runs']['uncached step'])} "
        f"runs in turns.\n",
        machine_line(results["machine"]) + "\n",
        "| step | s | vs uncached |\n|---|---|---|",
        *(f"| {name} | {s:.2f} | {s / step['uncached step']:.3f} |" for name, s in step.items()),
        f"\nA 20-step guided picture's transformer time (batch 2: {2 // results['batch']}× these steps), estimated from "
        "them, by how many steps the cache reuses:\n",
        "| steps computed + reused | transformer s | speed-up |\n|---|---|---|",
    ]
    per_picture = 2 // results["batch"]
    uncached = 20 * step["uncached step"] * per_picture
    for computed in (20, 14, 11, 10, 8, 6):
        seconds = (computed * step["computed step"] + (20 - computed) * step["reused step"]) * per_picture
        lines.append(f"| {computed} + {20 - computed} | {seconds:.0f} | {uncached / seconds:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser("quality", help="the shapes model's alignment and PSNR/SSIM per threshold")
    q.add_argument("--model", default="shapes")
    q.add_argument("--prompts", type=int, default=64)
    q.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    s = commands.add_parser("speed", help="whole pictures, cached and uncached in turns")
    s.add_argument("--model", required=True, help="a model id or diffusers folder whose variant folder exists")
    s.add_argument("--variant", default="FP16")
    s.add_argument("--side", type=int, default=1024)
    s.add_argument("--thresholds", type=float, nargs="+", default=None, help="default: helpers' default threshold")
    s.add_argument("--runs", type=int, default=2)
    t = commands.add_parser("steps", help="one computed and one reused guided step, and the estimate of a picture")
    t.add_argument("--model", required=True)
    t.add_argument("--variant", default="FP16")
    t.add_argument("--side", type=int, default=2048, help="picture side (default: %(default)s)")
    t.add_argument("--batch", type=int, choices=(1, 2), default=2, help="2: a guided step; 1: half of one, twice as fast to time")
    t.add_argument("--runs", type=int, default=2)
    for command in (q, s, t):
        command.add_argument("--device", default="CPU")
        command.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command == "speed" and args.thresholds is None:
        from helpers.settings import STEP_CACHE_THRESHOLD

        args.thresholds = [STEP_CACHE_THRESHOLD]
    {"quality": quality, "speed": speed, "steps": steps}[args.command](args)


if __name__ == "__main__":
    main()
