"""Previews and the tiny decoder (``helpers.previews``, ``helpers.tiny_vae``): what a preview costs a step, what the
tiny decoder saves on the decode, and what it costs the picture.

    python benchmarks/previews.py speed --folder model/pixart-xl-dpm-random/FP16     # 1024² and 2048², random weights
    python benchmarks/previews.py speed --folder model/shapes/FP16 --sides 256
    python benchmarks/previews.py quality                                           # the shapes model's 64 scenes
    python benchmarks/previews.py speed --quick                                     # the tiny model: CI's smoke test

``speed``: in turns in one process, at each side: the linear preview (latents → RGB), the tiny decoder and the model's
VAE decoder on the same random latents, and (up to 1024²) one transformer step, so each preview's cost reads as a
share of a step and of a whole picture (LCM: 4 steps and 3 previews; standard: 20 and 19). A 2048² decode by the
model's VAE runs in tiles (``vae.enable_tiling()``: whole, it does not fit 24 GiB). OpenVINO in the CPU's default
precision. ``quality``: each evaluation scene's latents drawn once (OpenVINO FP16), decoded by the model's VAE, the
tiny decoder and the linear projection; PSNR/SSIM against the VAE's picture (the linear preview against it scaled
down to the latents' size) and the scorer's alignment of each. Results: ``results/previews-<model>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.runner import RESULTS, in_this_process, machine_line, run_steps, timed_in_turns

DECODERS = ("linear preview", "tiny decoder", "VAE decoder")
STEP = "transformer step"
RECIPE_STEPS = {"LCM": 4, "standard": 20}
STEP_SIDE_LIMIT = 1024  # a 2048² step is a Σ-2K matter (docs/sigma-2k.md): not timed here
TILED_SIDE = 2048


def timing_calls(pipe: Any, side: int) -> dict[str, Any]:
    """The calls timed in turns at ``side``: the previewers and decoders on one set of latents, and a transformer step."""
    import torch

    from benchmarks.inputs import example_inputs, part_call
    from helpers.previews import LatentRGB

    latents = torch.randn(1, pipe.full_vae.config["latent_channels"], side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    linear, tiny, vae = LatentRGB.of(pipe), pipe.tiny_vae, pipe.full_vae
    calls = {"linear preview": lambda: linear(latents), "tiny decoder": lambda: tiny.decode_scaled(latents),
             "VAE decoder": lambda: vae.decode(latents / vae.config["scaling_factor"])[0]}
    if side <= STEP_SIDE_LIMIT:
        inputs = example_inputs("transformer", {"batch": 1, "side": side // 8}, pipe.transformer.config, torch.float32)
        step = part_call("transformer", pipe.transformer)
        calls[STEP] = lambda: step(**inputs)
    return calls


def task_speed(work: Path, folder: str, side: int, runs: int) -> dict:
    from helpers.devices import compute_precision
    from helpers.pipeline import OVPixArtPipeline

    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", compile=False, low_memory=False)  # compiled when called: T5 never is
    if side >= TILED_SIDE:
        pipe.full_vae.enable_tiling()
    seconds, _ = timed_in_turns(timing_calls(pipe, side), runs)
    return {"side": side, "precision": compute_precision("CPU"), "tiled_vae": side >= TILED_SIDE,
            "seconds": {name: {"median": statistics.median(values), "runs": values} for name, values in seconds.items()}}


def task_quality(work: Path, model: str, prompts: int, steps: int | None = None) -> dict:
    import numpy as np

    from helpers.comparison import psnr, ssim
    from helpers.conversion import convert_pipeline
    from helpers.pipeline import OVPixArtPipeline
    from helpers.previews import LatentRGB
    from helpers.shapes import alignment_score, evaluation_scenes
    from helpers.sources import resolve_model_source

    folder = work / model / "FP16"  # its own conversion: the model's folders on disk may predate the tiny decoder
    convert_pipeline(resolve_model_source(model), folder)
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU")
    scenes = evaluation_scenes(prompts)
    pictures: dict[str, list] = {name: [] for name in DECODERS}
    for scene, seed in scenes:
        latents = drawn_latents(pipe, scene.caption, seed, steps)
        for name, picture in decoded(pipe, LatentRGB.of(pipe), latents).items():
            pictures[name].append(picture)
    full, side = pictures["VAE decoder"], pictures["VAE decoder"][0].size
    small = [picture.resize(pictures["linear preview"][0].size, resample=3) for picture in full]  # 3: bicubic
    references = {"linear preview": small, "tiny decoder": full, "VAE decoder": full}
    rows = {}
    for name, images in pictures.items():
        shown = images if name != "linear preview" else [image.resize(side, resample=3) for image in images]
        rows[name] = {"alignment": alignment_score(shown, [scene for scene, _ in scenes])["overall"],
                      "psnr": float(np.mean([psnr(r, i) for r, i in zip(references[name], images)])),
                      "ssim": float(np.mean([ssim(r, i) for r, i in zip(references[name], images)]))}
    return {"model": model, "prompts": prompts, "steps": steps or pipe.recipe.num_inference_steps, "side": side[0], "rows": rows}


def drawn_latents(pipe: Any, prompt: str, seed: int, steps: int | None):
    import torch

    call = pipe.recipe.call_arguments(num_inference_steps=steps)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="latent", **call).images


def decoded(pipe: Any, linear: Any, latents: Any) -> dict[str, Any]:
    """The pictures of one set of latents: the linear preview, the tiny decoder's and the model's VAE's."""
    full = pipe.full_vae.decode(latents / pipe.full_vae.config["scaling_factor"])[0]
    return {"linear preview": linear(latents)[0], "tiny decoder": pipe.image_processor.postprocess(pipe.tiny_vae.decode_scaled(latents))[0],
            "VAE decoder": pipe.image_processor.postprocess(full)[0]}


def speed_lines(step: dict) -> list[str]:
    """One side's table: each call's median, and each preview's share of a step and of a picture of each recipe."""
    seconds = {name: row["median"] for name, row in step["seconds"].items()}
    tiled = " (in tiles)" if step.get("tiled_vae") else ""
    lines = [f"## {step['side']}², OpenVINO ({step['precision']}), in turns\n", "| call | median s | " +
             " | ".join(f"share of a {recipe} picture" for recipe in RECIPE_STEPS) + " |", "|---|---|---|---|"]
    for name, value in seconds.items():
        label = name + (tiled if name == "VAE decoder" else "")
        shares = [picture_share(seconds, name, count) for count in RECIPE_STEPS.values()]
        lines.append(f"| {label} | {value:.4f} | " + " | ".join(shares) + " |")
    tiny = seconds["VAE decoder"] / seconds["tiny decoder"]
    return lines + ["", f"The tiny decoder decodes {tiny:.1f}× faster than the model's VAE{tiled}.", ""]


def picture_share(seconds: dict[str, float], name: str, steps: int) -> str:
    """A preview's cost over a picture (``steps`` steps, a preview after each but the last, the VAE's decode), or "—"."""
    if name not in ("linear preview", "tiny decoder") or STEP not in seconds:
        return "—"
    picture = steps * seconds[STEP] + seconds["VAE decoder"]
    return f"{(steps - 1) * seconds[name] / picture:.2%}"


def quality_lines(step: dict) -> list[str]:
    lines = [f"## The {step['model']} model: {step['prompts']} evaluation scenes, {step['steps']} steps, {step['side']}²\n",
             "| decoded by | alignment | PSNR dB | SSIM | against |", "|---|---|---|---|---|"]
    against = {"linear preview": "the VAE's picture scaled to the latents' size", "tiny decoder": "the VAE's picture", "VAE decoder": "itself"}
    for name, row in step["rows"].items():
        lines.append(f"| {name} | {row['alignment']:.3f} | {row['psnr']:.1f} | {row['ssim']:.3f} | {against[name]} |")
    return lines + [""]


def markdown(results: dict) -> str:
    lines = [f"# Previews and the tiny decoder: {results.get('name', '?')}\n", machine_line(results["machine"]) + "\n"]
    for key, step in results.get("steps", {}).items():
        if "error" in step:
            lines += [f"- {key}: failed ({step['error']})", ""]
        else:
            lines += quality_lines(step) if "rows" in step else speed_lines(step)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "quality"))
    parser.add_argument("--folder", type=Path, default=Path("model/pixart-xl-dpm-random/FP16"), help="speed: a variant folder")
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 2048], help="speed: picture sides")
    parser.add_argument("--runs", type=int, default=3, help="speed: timed turns")
    parser.add_argument("--model", default="shapes", help="quality: a model id with a tiny VAE")
    parser.add_argument("--prompts", type=int, default=64, help="quality: evaluation scenes")
    parser.add_argument("--quick", action="store_true", help="speed: the tiny model at 256², 1 turn (its folder: --folder)")
    parser.add_argument("--work", type=Path, default=Path("model/previews-benchmark"), help="quality: where the model is converted")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.what == "quality":
        name, plan = f"previews-{args.model}", [("quality", "quality", {"model": args.model, "prompts": args.prompts})]
    else:
        sides, runs = ([256], 1) if args.quick else (args.sides, args.runs)
        name = f"previews-{'quick' if args.quick else args.folder.parent.name}"
        plan = [(f"speed {side}²", "speed", {"folder": str(args.folder), "side": side, "runs": runs}) for side in sides]
    tasks = {"speed": task_speed, "quality": task_quality}
    results = run_steps(args.out / f"{name}.json", plan, in_this_process(tasks, args.work), name=name)
    (args.out / f"{name}.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
