"""What the fastest combinations cost in alignment, on the shapes model: the settings the whole-picture benchmark times.

    python benchmarks/alignment_combos.py                 # shapes, 64 evaluation prompts: about 40 minutes on 2 busy cores
    python benchmarks/alignment_combos.py --again         # every row again (default: the rows not measured yet)

``benchmarks/picture.py`` times each recipe's fastest configurations at full size, where random weights cannot say
what a setting costs in quality. This measures it on the shipped ``shapes`` model at its own recipe (20 DPM-Solver
steps, guidance 4.5, no negative prompt, 256²), on the alignment benchmark's evaluation prompts and seeds, one picture
per call (both caches decide per call, over the whole batch):

- PyTorch (diffusers' pipeline, bf16 where the CPU has bf16 instructions) uncached, then with cache-dit's DBCache at
  each of ``CACHE_DIT_SETTINGS``; each against the uncached pictures;
- OpenVINO FP16 (the exact pipeline), W8A8, W8A8 with the step cache at each of ``STEP_CACHE_THRESHOLDS``, W8A8-ToDo
  (the first half of the steps downsampled: the LCM recipe's combination) without and with the step cache; each
  against FP16. Static shapes do not change the pictures (``tests/test_static_shapes.py``): nothing is reshaped.

A row keeps the bar when its alignment is within 0.02 of its reference's. Its estimated full-size cost weighs each
step by what it costs there (``STEP_COSTS``). Writes ``results/alignment-combos-<model>.json`` and ``.md``; the chosen
settings are ``benchmarks.picture.CACHE_DIT`` and ``STEP_CACHE``.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from benchmarks.picture import cache_dit_steps, with_cache_dit
from benchmarks.runner import RESULTS, load_results, machine_line, save_results

BAR = 0.02  # the largest alignment loss a faster setting may cost (notebook 8's, the step cache's default)
# cache-dit's DBCache: Fn_compute_blocks lowered from its default 8 (the shapes model has 6 blocks); 1 computed block
# and no Bn blocks is First Block Cache, what the OpenVINO step cache does. Its default max_warmup_steps (8) computes
# the first 8 of 20 steps whatever their residual; fewer warm-up steps let it cache more.
CACHE_DIT_SETTINGS = {
    f"F1B0 W{warmup} {threshold:g}": {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": warmup,
                                       "residual_diff_threshold": threshold}
    for warmup, threshold in ((8, 0.08), (8, 0.12), (8, 0.2), (4, 0.12), (4, 0.2), (2, 0.12), (2, 0.15), (2, 0.2),
                              (1, 0.12), (1, 0.15))
}
STEP_CACHE_THRESHOLDS = (0.1, 0.15, 0.2)
# A step's full-size cost, as a share of a computed step (1024², batch 2, W8A8): a reused one runs the embeddings, block
# 0 and the head (docs/step-cache.md: about 1.2 s of 17 s); a downsampled one is 2.01x faster (docs/token-downsampling.md)
STEP_COSTS = {"computed": 1.0, "reused": 0.07, "downsampled": 0.5}


def combination_rows(thresholds=STEP_CACHE_THRESHOLDS, cache_dit=CACHE_DIT_SETTINGS) -> dict[str, dict]:
    """Every row measured, by name, references first: the engine, its variant or settings, and its reference row."""
    rows = {"PyTorch": {"engine": "torch", "reference": "PyTorch"}}
    rows |= {f"PyTorch + cache-dit {name}": {"engine": "torch", "cache_dit": settings, "reference": "PyTorch"}
             for name, settings in cache_dit.items()}
    for variant in ("FP16", "W8A8", "W8A8-ToDo"):
        rows[f"OpenVINO {variant}"] = {"engine": "openvino", "variant": variant, "reference": "OpenVINO FP16"}
        if variant != "FP16":
            rows |= {f"OpenVINO {variant} + step cache {threshold:g}": {"engine": "openvino", "variant": variant,
                                                                         "step_cache": threshold, "reference": "OpenVINO FP16"}
                     for threshold in thresholds}
    return rows


def torch_pictures(source: Path, evaluation: list, recipe, settings: dict | None, **call) -> tuple[list, list[dict]]:
    """diffusers' pipeline (bf16 where the CPU has bf16 instructions), with cache-dit at ``settings`` (None: uncached):
    a picture per (scene, seed) (``call``: more call arguments, a size), and each call's steps and the steps cache-dit
    cached."""
    import torch

    from helpers.pipeline import timed_call
    from helpers.reference import reference_dtype
    from helpers.sources import diffusers_pipeline_class

    pipe = diffusers_pipeline_class(source).from_pretrained(source, dtype=reference_dtype())
    pipe.set_progress_bar_config(disable=True)
    if settings:
        with_cache_dit(pipe, settings)
    pictures, counts = [], []
    with torch.no_grad():
        for scene, seed in evaluation:
            output, seconds = timed_call(pipe, scene.caption, seed, recipe, **call)
            pictures.append(output.images[0])
            counts.append({"steps": recipe.num_inference_steps, "reused": cache_dit_steps(pipe) if settings else 0,
                           "downsampled": 0, "seconds": seconds})
    return pictures, counts


def openvino_pictures(folder: Path, evaluation: list, recipe, threshold: float | None, device: str, **call) -> tuple[list, list[dict]]:
    """A variant folder's pipeline (a ``-ToDo`` variant with its own share of downsampled steps), with the step cache
    at ``threshold`` (None: off): a picture per (scene, seed) (``call``: more call arguments), and each call's steps
    from its record."""
    from helpers.pipeline import OVPixArtPipeline, timed_call

    pipe = OVPixArtPipeline.from_pretrained(folder, device, step_cache=False if threshold is None else threshold)
    pipe.set_progress_bar_config(disable=True)
    pictures, counts = [], []
    for scene, seed in evaluation:
        output, seconds = timed_call(pipe, scene.caption, seed, recipe, **call)
        record = output.record
        pictures.append(output.images[0])
        counts.append({"steps": record.steps, "reused": record.reused or 0, "downsampled": record.downsampled, "seconds": seconds})
    return pictures, counts


def measure_row(row: dict, pictures: list, counts: list[dict], reference: list | None, scenes: list) -> dict:
    """A row's figures: alignment, its change against the reference row's, PSNR/SSIM against its pictures, the steps
    summed over the pictures (reused: cached by cache-dit or the step cache) and the estimated full-size cost."""
    import numpy as np

    from helpers.comparison import psnr, ssim
    from helpers.shapes import alignment_score

    reference = reference or pictures
    steps = {kind: sum(count[kind] for count in counts) for kind in ("steps", "reused", "downsampled")}
    computed = steps["steps"] - steps["reused"] - steps["downsampled"]
    cost = (computed * STEP_COSTS["computed"] + steps["reused"] * STEP_COSTS["reused"]
            + steps["downsampled"] * STEP_COSTS["downsampled"]) / steps["steps"]
    same = reference is pictures
    return {**row, "alignment": alignment_score(pictures, scenes), **steps, "full-size step cost": cost,
            "psnr_db": None if same else float(np.mean([psnr(a, b) for a, b in zip(reference, pictures)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(reference, pictures)])),
            "picture_s": sum(count["seconds"] for count in counts)}


def run_combinations(model_id: str, evaluation: list, rows: dict[str, dict], device: str = "CPU",
                     after_each=lambda results: None, done: dict | None = None) -> dict[str, dict]:
    """Each row's pictures drawn and measured, references first (their pictures kept for the rows after them);
    ``after_each`` gets the rows measured so far. Rows in ``done`` (an earlier run's) are kept, but a reference a
    row still to measure needs is drawn again."""
    from helpers.sources import resolve_model_source
    from helpers.variants import Variant, variant_dir

    recipe, source = Variant.of(model_id, "FP16").recipe, resolve_model_source(model_id)
    scenes = [scene for scene, _ in evaluation]
    done = done or {}
    needed = {row["reference"] for name, row in rows.items() if name not in done}
    results, references = {}, {}
    for name, row in rows.items():
        if name in done and name not in needed:
            results[name] = done[name]
            continue
        start = time.perf_counter()
        if row["engine"] == "torch":
            pictures, counts = torch_pictures(source, evaluation, recipe, row.get("cache_dit"))
        else:
            folder = variant_dir(model_id, row["variant"])
            pictures, counts = openvino_pictures(folder, evaluation, recipe, row.get("step_cache"), device)
        if name == row["reference"]:
            references[name] = pictures
        results[name] = measure_row(row, pictures, counts, references[row["reference"]], scenes)
        results[name]["wall_seconds"] = time.perf_counter() - start
        print(f"{name}: {results[name]['alignment']['overall']:.3f}, {results[name]['reused']} reused", flush=True)
        after_each(results)
        gc.collect()
    return results


def within_bar(rows: dict[str, dict]) -> dict[str, bool]:
    """Whether each row's alignment is within ``BAR`` of its reference row's."""
    overall = {name: row["alignment"]["overall"] for name, row in rows.items()}
    return {name: overall[name] >= overall[row["reference"]] - BAR - 1e-9 for name, row in rows.items()}


def chosen(rows: dict[str, dict]) -> dict[str, str]:
    """Per kind of combination (PyTorch with cache-dit; OpenVINO W8A8 with the step cache; W8A8-ToDo, with or without
    it), the row of lowest estimated full-size cost that keeps the bar."""
    keeps = within_bar(rows)
    kinds = {"PyTorch + cache-dit": lambda row: "cache_dit" in row,
             "OpenVINO W8A8 + step cache": lambda row: row.get("variant") == "W8A8" and "step_cache" in row,
             "OpenVINO W8A8-ToDo (± step cache)": lambda row: row.get("variant") == "W8A8-ToDo"}
    picks = {}
    for kind, belongs in kinds.items():
        candidates = [name for name, row in rows.items() if belongs(row) and keeps[name]]
        picks[kind] = min(candidates, key=lambda name: rows[name]["full-size step cost"]) if candidates else "none keeps the bar"
    return picks


def markdown(results: dict) -> str:
    """The rows in one table, then the pick of each kind."""
    rows, keeps = results["rows"], within_bar(results["rows"])
    lines = [f"# Alignment of the fastest combinations on `{results['model']}`\n",
             f"{results['prompts']} evaluation prompts, one picture per call, {results['recipe']}, 256², no negative prompt.\n",
             machine_line(results["machine"]) + "\n",
             "| pipeline | alignment | change vs reference | within 0.02 | PSNR dB / SSIM vs reference | steps reused | "
             "steps downsampled | est. full-size step cost |", "|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        reference = rows[row["reference"]]
        change = row["alignment"]["overall"] - reference["alignment"]["overall"]
        quality = "reference" if row["psnr_db"] is None else f"{row['psnr_db']:.1f} / {row['ssim']:.3f}"
        lines.append(f"| {name} | {row['alignment']['overall']:.3f} | {change:+.3f} | {'yes' if keeps[name] else 'no'} | {quality} | "
                     f"{row['reused'] / row['steps']:.0%} | {row['downsampled'] / row['steps']:.0%} | {row['full-size step cost']:.2f} |")
    lines += ["", "Lowest estimated full-size cost within 0.02 of the reference, per kind:", ""]
    lines += [f"- {kind}: **{name}**" for kind, name in chosen(rows).items()]
    lines += ["", "Reference: PyTorch rows against PyTorch uncached, OpenVINO rows against OpenVINO FP16. cache-dit "
              "settings: F<computed first blocks>B<computed last blocks> W<warm-up steps> <residual threshold>. The "
              "cost weighs a computed step 1, a reused one 0.07, a downsampled one 0.5 (measured at 1024²)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    from helpers.machine import machine
    from helpers.settings import model_name
    from helpers.shapes import evaluation_scenes
    from helpers.variants import Variant

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="model id, with FP16, W8A8 and W8A8-ToDo variants (default: shapes)")
    parser.add_argument("--prompts", type=int, default=64, help="evaluation prompts (at least 8)")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--again", action="store_true", help="measure every row again (default: only rows not in the results file)")
    args = parser.parse_args()
    recipe = Variant.of(args.model, "FP16").recipe
    results = {"machine": machine(), "model": args.model, "prompts": args.prompts,
               "recipe": f"{recipe.num_inference_steps} steps, guidance {recipe.guidance_scale:g}", "rows": {}}
    path = args.out / f"alignment-combos-{model_name(args.model)}.json"
    earlier = {} if args.again else load_results(path)
    done = earlier.get("rows", {}) if earlier.get("prompts") == args.prompts else {}

    def save(rows: dict) -> None:
        save_results(path, results | {"rows": rows})

    results["rows"] = run_combinations(args.model, evaluation_scenes(args.prompts), combination_rows(), args.device, save, done)
    results["chosen"] = chosen(results["rows"])
    save_results(path, results)
    path.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
