"""Editing pictures (``helpers.editing``): does an edit do what it says on the shapes model, and what does it cost?

    python benchmarks/editing.py quality                  # the shapes model's 64 evaluation scenes (about 15 minutes)
    python benchmarks/editing.py speed                    # PixArt-XL's transformer and VAE, random weights, 1024²
    python benchmarks/editing.py speed --only encoder     # the VAE encoder alone, OpenVINO against PyTorch (minutes)
    python benchmarks/editing.py speed --quick            # the tiny model at 256²: the same code in seconds (CI's test)

``quality``: each evaluation scene is rendered (a picture a user has, whose scene is known), edited, and read back by
the project's scorer (``helpers.shapes.read_scene``). Recolouring by image-to-image at strengths 0.6, 0.7 and 0.8 (the
scene's prompt with another colour) succeeds when the scorer reads the new colour with the shape, place and background
kept. Strength 0.04 (2 of 50 steps, the scene's own prompt) is compared with the picture and with its VAE round trip:
the shapes VAE's own round trip of a rendered picture is only about 25.6 dB, so that is the most any edit keeps.
Inpainting draws a new shape into the empty quarter opposite a corner shape (centre scenes are left out): found when
the scorer reads the new shape, colour and background in that quarter's crop, kept when it reads the old shape and
colour in theirs; the pixels the mask keeps (16 pixels from it) are compared with the round trip. OpenVINO FP16 in the
CPU's default precision; diffusers' PyTorch pipeline (f32) with the same edit code for the 0.7 recolour and inpainting.

``speed``: a random PixArt-XL (the real transformer and VAE; T5 cut to one layer, since it costs an edit what it costs
a picture) converted with its VAE encoder. In turns in one process: the VAE encoder, OpenVINO FP16 against PyTorch
bf16 in ``channels_last``; a 4-step LCM picture against an edit at strength 0.5, with each call's record (steps run,
seconds per part). Results: ``results/editing-<model>.{json,md}``, ``results/editing-speed-<preset>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.inputs import PROMPT
from benchmarks.runner import RESULTS, in_this_process, in_turns, machine_line, run_steps, timed_in_turns
from helpers.record import PART_LABELS

STRENGTHS = (0.6, 0.7, 0.8)
NEAR_ZERO = {"strength": 0.04, "num_inference_steps": 50}  # 2 of 50 steps: the fewest DPM-Solver runs
KEPT_MARGIN = 16  # pixels between the mask and the kept pixels measured: the decoder's reach, two latents
OPPOSITE = {"top left": "bottom right", "top right": "bottom left", "bottom left": "top right", "bottom right": "top left"}
GOAL = 0.9  # of the pictures: recoloured as asked, the new shape found
PYTORCH_KINDS = ("recolour 0.7", "inpaint")
EDIT_STRENGTH = 0.5  # speed: half the steps


@dataclass(frozen=True)
class EditCase:
    """One evaluation scene's picture and the edits asked of it: another colour, and (a corner scene) a new shape in
    the opposite quarter."""

    scene: Any
    seed: int
    picture: Any
    recoloured: Any
    added: Any | None


def edit_cases(prompts: int, side: int) -> list[EditCase]:
    """The first ``prompts`` evaluation scenes, each rendered with its seed's jitter, with a colour and a shape drawn
    from the seed: the same cases every run."""
    import numpy as np

    from helpers.shapes import COLORS, SHAPES, Scene, evaluation_scenes, render

    cases = []
    for scene, seed in evaluation_scenes(prompts):
        rng = np.random.default_rng(seed)
        colors = [color for color in COLORS if color not in (scene.color, scene.background)]
        recoloured = Scene(scene.shape, str(rng.choice(colors)), scene.position, scene.background)
        added = None
        if scene.position in OPPOSITE:
            shape = str(rng.choice([shape for shape in SHAPES if shape != scene.shape]))
            added = Scene(shape, str(rng.choice(colors)), OPPOSITE[scene.position], scene.background)
        picture = render(scene, side, side, rng=np.random.default_rng(seed))
        cases.append(EditCase(scene, seed, picture, recoloured, added))
    return cases


def edited(pipe: Any, prompt: str, seed: int, **kwargs: Any):
    """One edit with the folder's recipe (diffusers' PyTorch pipeline does not apply it by itself), drawn at the
    picture's own size (the shapes model's native one; a small side on the tiny models, whose bins are 1024²'s)."""
    import torch

    from helpers.settings import recipe_for

    arguments = recipe_for(pipe.scheduler).call_arguments(use_resolution_binning=False, **kwargs)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **arguments).images[0]


def recolour(pipe: Any, cases: list[EditCase], strength: float, call: dict) -> dict:
    """The scorer's reading of each recoloured picture against the recoloured scene."""
    from helpers.shapes import alignment_score, read_scene

    images = [edited(pipe, case.recoloured.caption, case.seed, image=case.picture, strength=strength, **call) for case in cases]
    misses = [{"asked": case.recoloured.caption, "read": read} for case, image in zip(cases, images)
              if (read := read_scene(image)) != vars(case.recoloured)]
    return {"pictures": len(cases), **alignment_score(images, [case.recoloured for case in cases]), "misses": misses}


def near_zero(pipe: Any, cases: list[EditCase], call: dict) -> dict:
    """Strength near 0 with the scene's own prompt: how close the result stays to the picture and its round trip
    (its own steps whatever ``call`` says: 2 of 50 is what makes it near 0)."""
    from helpers.comparison import psnr
    from helpers.editing import vae_round_trip
    from helpers.shapes import alignment_score

    images = [edited(pipe, case.scene.caption, case.seed, image=case.picture, **NEAR_ZERO) for case in cases]
    trips = [vae_round_trip(pipe, case.picture) for case in cases]
    return {"pictures": len(cases), "overall": alignment_score(images, [case.scene for case in cases])["overall"],
            "PSNR dB vs picture": mean_psnr(psnr, [case.picture for case in cases], images),
            "PSNR dB vs VAE round trip": mean_psnr(psnr, trips, images),
            "VAE round trip PSNR dB": mean_psnr(psnr, [case.picture for case in cases], trips)}


def mean_psnr(psnr, references: list, images: list) -> float:
    return float(statistics.mean(psnr(reference, image) for reference, image in zip(references, images)))


def inpaint(pipe: Any, cases: list[EditCase], call: dict) -> dict:
    """A new shape inpainted into the empty quarter of each corner scene: found, the old one kept, the kept pixels."""
    import numpy as np

    from helpers.comparison import psnr
    from helpers.editing import kept_pixels, quarter_mask, vae_round_trip

    found, kept, to_trip, to_picture, misses = [], [], [], [], []
    for case in (case for case in cases if case.added is not None):
        mask = quarter_mask(*case.picture.size, case.added.position)
        image = edited(pipe, case.added.caption, case.seed, image=case.picture, mask_image=mask, **call)
        new, old = read_quarter(image, case.added.position), read_quarter(image, case.scene.position)
        found.append(all(new[attribute] == getattr(case.added, attribute) for attribute in ("shape", "color", "background")))
        misses += [] if found[-1] else [{"picture": case.scene.caption, "asked": case.added.caption, "read in the quarter": new}]
        kept.append(old["shape"] == case.scene.shape and old["color"] == case.scene.color)
        outside = kept_pixels(mask, KEPT_MARGIN)
        pixels, trip = np.asarray(image), np.asarray(vae_round_trip(pipe, case.picture))
        to_trip.append(psnr(trip[outside], pixels[outside]))
        to_picture.append(psnr(np.asarray(case.picture)[outside], pixels[outside]))
    return {"pictures": len(found), "found": float(np.mean(found)), "old shape kept": float(np.mean(kept)),
            "kept pixels PSNR dB vs VAE round trip": float(np.mean(to_trip)), "kept pixels PSNR dB vs picture": float(np.mean(to_picture)), "misses": misses}


def read_quarter(image: Any, quarter: str) -> dict[str, str]:
    """The scorer's reading of one quarter of a picture, cropped: the shape it holds, if any, and its background."""
    from helpers.editing import quarter_box
    from helpers.shapes import read_scene

    return read_scene(image.crop(quarter_box(*image.size, quarter)))


KINDS = {**{f"recolour {strength}": (lambda strength: lambda pipe, cases, call: recolour(pipe, cases, strength, call))(strength)
            for strength in STRENGTHS},
         "near zero": near_zero, "inpaint": inpaint}


def task_quality(work: Path, source: str, fp16: str, engine: str, prompts: int, kinds: list[str], side: int | None = None,
                 steps: int | None = None) -> dict:
    """Each kind of edit over the cases, on OpenVINO FP16 (converted into ``fp16`` if needed) or PyTorch f32; ``steps``
    instead of the recipe's (a smoke test's few)."""
    import time

    from helpers.devices import compute_precision
    from helpers.pipeline import OVPixArtPipeline
    from helpers.reference import editing_reference
    from helpers.settings import recipe_for

    if engine == "openvino":
        pipe, precision = OVPixArtPipeline.from_pretrained(Path(source), "CPU", export=True, export_dir=Path(fp16)), compute_precision("CPU")
    else:
        pipe, precision = editing_reference(Path(source)), "f32"
    pipe.set_progress_bar_config(disable=True)
    cases, rows = edit_cases(prompts, side or pipe.transformer.config.sample_size * pipe.vae_scale_factor), {}
    for kind in kinds:
        start = time.perf_counter()
        rows[kind] = KINDS[kind](pipe, cases, {"num_inference_steps": steps} if steps else {})
        rows[kind]["seconds per edit"] = (time.perf_counter() - start) / rows[kind]["pictures"]
    return {"engine": engine, "precision": precision, "recipe": recipe_for(pipe.scheduler).name, "rows": rows}


def quality_markdown(results: dict) -> str:
    lines = [f"# Editing pictures on the `{results.get('model', '?')}` model, {results.get('prompts', '?')} evaluation scenes\n",
             machine_line(results["machine"]) + "\n", "| engine | edit | pictures | read as asked | shape | colour | position | "
             "background | s per edit |", "|---|---|---|---|---|---|---|---|---|"]
    steps = {key: value for key, value in results.get("steps", {}).items() if "rows" in value}
    for key, step in steps.items():
        for kind, row in step["rows"].items():
            if kind.startswith("recolour"):
                lines.append(f"| {key} | {kind}: another colour | {row['pictures']} | {row['overall']:.3f} | {row['shape']:.3f} | "
                             f"{row['color']:.3f} | {row['position']:.3f} | {row['background']:.3f} | {row['seconds per edit']:.2f} |")
    lines += ["", "| engine | strength 0.04 (2 of 50 steps) | pictures | PSNR dB vs picture | PSNR dB vs VAE round trip | "
              "VAE round trip PSNR dB | scene read back |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {key} | own prompt | {row['pictures']} | {row['PSNR dB vs picture']:.1f} | {row['PSNR dB vs VAE round trip']:.1f} | "
              f"{row['VAE round trip PSNR dB']:.1f} | {row['overall']:.3f} |"
              for key, step in steps.items() if (row := step["rows"].get("near zero"))]
    lines += ["", "| engine | inpainting the empty quarter | pictures | new shape found | old shape kept | kept pixels PSNR dB vs VAE "
              "round trip | vs picture | s per edit |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {key} | a new shape | {row['pictures']} | {row['found']:.3f} | {row['old shape kept']:.3f} | "
              f"{row['kept pixels PSNR dB vs VAE round trip']:.1f} | {row['kept pixels PSNR dB vs picture']:.1f} | {row['seconds per edit']:.2f} |"
              for key, step in steps.items() if (row := step["rows"].get("inpaint"))]
    lines += ["", f"Goals: {GOAL} of the pictures recoloured as asked and of the new shapes found. Kept pixels: those at least "
              f"{KEPT_MARGIN} pixels from the mask. Failed: " + (", ".join(f"{key} ({value['error']})" for key, value in
                                                                       results.get("steps", {}).items() if "error" in value) or "none") + "."]
    return "\n".join(lines) + "\n"


def quality(model: str, source: Path, fp16: Path, prompts: int, path: Path, work: Path, side: int | None = None,
            steps: int | None = None, pytorch_kinds: tuple[str, ...] = PYTORCH_KINDS) -> dict:
    """Every kind of edit on OpenVINO FP16, then the PyTorch rows, each saved as it ends (a stopped run resumes); the
    pictures ``side``² (default: the model's native size), ``steps`` instead of the recipe's (default: the recipe's)."""
    common = {"source": str(source), "fp16": str(fp16), "prompts": prompts, "side": side, "steps": steps}
    plan = [("OpenVINO FP16", "quality", {**common, "engine": "openvino", "kinds": list(KINDS)}),
            ("PyTorch f32", "quality", {**common, "engine": "pytorch", "kinds": list(pytorch_kinds)})]
    results = run_steps(path, plan, in_this_process(TASKS, work), model=model, prompts=prompts)
    path.with_suffix(".md").write_text(quality_markdown(results))
    return results


# ---------------------------------------------------------------- speed


def random_folder(work: Path, preset: str) -> Path:
    """A diffusers folder with random weights: ``preset``'s transformer and VAE (``full``: PixArt-XL's), its T5 cut to
    one layer (T5 runs once a call, an edit's as a picture's: its full-size cost is in docs/whole-picture.md), built once."""
    from helpers.building import SCHEDULERS, build_random_pipeline, random_configs

    transformer, vae, t5 = random_configs(preset)
    return build_random_pipeline(work / "diffusers", transformer, vae, {**t5, "num_layers": 1}, SCHEDULERS["lcm"])


def task_encoder(work: Path, preset: str, side: int, runs: int) -> dict:
    """The VAE encoder on one ``side``² picture: OpenVINO FP16 (the CPU's default precision) and PyTorch at its best
    here (bf16 where the CPU has bf16 instructions, ``channels_last``; and f32, which can be faster on CPUs without
    AMX), in turns after a warm-up turn; each PyTorch latents' cosine with OpenVINO's."""
    import openvino as ov
    import torch
    from diffusers import AutoencoderKL

    from helpers.comparison import cosine_similarity, latency_summary
    from helpers.conversion import convert_pipeline
    from helpers.devices import compute_precision
    from helpers.parts import OVVaeEncoder
    from helpers.reference import reference_dtype
    from helpers.variants import VAE_ENCODER

    source = random_folder(work, preset)
    convert_pipeline(source, work / "FP16", parts=(VAE_ENCODER,))  # the encoder alone: the other parts wait for `edit`
    encoder = OVVaeEncoder(work / "FP16" / VAE_ENCODER, ov.Core(), "CPU")
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, side, side) * 2 - 1
    openvino = f"OpenVINO FP16 ({compute_precision('CPU')})"
    calls = {openvino: lambda: encoder.encode(pixels).latent_dist.mode()}
    for dtype in dict.fromkeys([reference_dtype(), torch.float32]):  # bf16 first where the CPU has it
        vae = AutoencoderKL.from_pretrained(source / "vae", torch_dtype=dtype).eval().to(memory_format=torch.channels_last)
        given = pixels.to(dtype).contiguous(memory_format=torch.channels_last)
        calls[f"PyTorch {str(dtype).removeprefix('torch.')}, channels_last"] = lambda vae=vae, given=given: vae.encode(given).latent_dist.mode().float()
    with torch.no_grad():
        seconds, outputs = timed_in_turns(calls, runs)
    return {"side": side, "preset": preset, "openvino": openvino, "turns": {name: latency_summary(times) for name, times in seconds.items()},
            "cosine": {name: cosine_similarity(outputs[openvino], output) for name, output in outputs.items() if name != openvino},
            "torch_threads": torch.get_num_threads()}


def task_edit(work: Path, preset: str, side: int, runs: int) -> dict:
    """The folder's LCM picture (4 steps) and an edit at strength 0.5, in turns after a short warm-up (one step of
    each: every part compiled and run at these shapes); each call's seconds and its record's steps and parts."""
    import torch

    from helpers.devices import compute_precision
    from helpers.pipeline import OVPixArtPipeline
    from helpers.shapes import Scene, render

    pipe = OVPixArtPipeline.from_pretrained(random_folder(work, preset), "CPU", export=True, export_dir=work / "FP16")
    pipe.set_progress_bar_config(disable=True)
    picture = render(Scene("circle", "red", "top left", "blue"), side, side)  # any picture: the cost is the size's

    def call(**kwargs: Any):
        size = dict(height=side, width=side, use_resolution_binning=False)
        return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **size, **kwargs).record

    call(num_inference_steps=1)
    call(image=picture, strength=1 / pipe.recipe.num_inference_steps)  # one step: the encoder compiled and run too
    calls = {"text-to-image": call, f"edit at strength {EDIT_STRENGTH}": lambda: call(image=picture, strength=EDIT_STRENGTH)}
    turns: dict[str, list[dict]] = {name: [] for name in calls}
    for _, name, seconds, record in in_turns(calls, runs, warmup=0):
        parts = {part: record.total_seconds(part) for part in record.seconds}
        turns[name].append({"seconds": seconds, "steps": record.steps, "parts": parts})
    return {"side": side, "preset": preset, "precision": compute_precision("CPU"), "recipe": pipe.recipe.name,
            "num_inference_steps": pipe.recipe.num_inference_steps, "strength": EDIT_STRENGTH, "turns": turns}


def median_call(turns: list[dict]) -> dict:
    """A call's median seconds, and the median seconds of each of its parts, over its turns."""
    parts = {part for turn in turns for part in turn["parts"]}
    return {"seconds": statistics.median(turn["seconds"] for turn in turns), "steps": turns[0]["steps"],
            "parts": {part: statistics.median(turn["parts"].get(part, 0.0) for turn in turns) for part in sorted(parts, key=PART_ORDER.index)}}


PART_ORDER = ["text_encoder", "vae_encoder", "transformer", "vae_decoder"]


def speed_markdown(results: dict) -> str:
    """The encoder's table, the calls' table, and whether the edit cost the encoder plus its share of the steps."""
    lines = [f"# Editing at {results.get('side', '?')}², {results.get('preset', '?')}-size model (random weights)\n",
             machine_line(results["machine"]) + "\n"]
    for key, step in results.get("steps", {}).items():
        if "error" in step:
            lines += [f"- {key}: failed ({step['error']})", ""]
        elif "openvino" in step:
            lines += encoder_lines(step)
        elif "turns" in step:
            lines += edit_lines(step)
    return "\n".join(lines) + "\n"


def encoder_lines(step: dict) -> list[str]:
    turns, openvino = step["turns"], step["openvino"]
    lines = [f"## The VAE encoder, one {step['side']}² picture, in turns in one process\n",
             "| engine | median s | min s | max s | turns | OpenVINO's speed-up | latents' cosine with OpenVINO's |", "|---|---|---|---|---|---|---|"]
    for name, row in turns.items():
        against = f"{row['median'] / turns[openvino]['median']:.2f}×" if name != openvino else "—"
        cosine = f"{step['cosine'][name]:.5f}" if name in step["cosine"] else "—"
        lines.append(f"| {name} | {row['median']:.3f} | {row['min']:.3f} | {row['max']:.3f} | {row['runs']} | {against} | {cosine} |")
    return lines + ["", f"PyTorch on {step['torch_threads']} threads; the same random weights and picture for every engine.", ""]


def edit_lines(step: dict) -> list[str]:
    calls = {name: median_call(turns) for name, turns in step["turns"].items()}
    picture, edit = calls["text-to-image"], calls[f"edit at strength {step['strength']}"]
    lines = [f"## The {step['recipe']} recipe's picture ({step['num_inference_steps']} steps) and an edit at strength {step['strength']}, "
             f"{step['side']}², OpenVINO FP16 ({step['precision']}), in turns\n",
             "| call | steps run | s (median) | " + " | ".join(f"{PART_LABELS[part]} s" for part in PART_ORDER) + " |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {call['steps']} | {call['seconds']:.2f} | " + " | ".join(f"{call['parts'].get(part, 0.0):.2f}" for part in PART_ORDER) + " |"
              for name, call in calls.items()]
    share = edit["steps"] / picture["steps"]
    expected = picture["seconds"] - (1 - share) * picture["parts"]["transformer"] + edit["parts"].get("vae_encoder", 0.0)
    return lines + ["", f"The edit ran {edit['steps']} of {picture['steps']} steps: its steps took {edit['parts']['transformer'] / picture['parts']['transformer']:.0%} "
                        f"of the picture's. The picture less {1 - share:.0%} of its steps plus the encoder is {expected:.2f} s; the edit took "
                        f"{edit['seconds']:.2f} s ({edit['seconds'] / expected - 1:+.1%}), {edit['seconds'] / picture['seconds']:.0%} of the picture.", ""]


TASKS = {"quality": task_quality, "encoder": task_encoder, "edit": task_edit}


def speed(preset: str, side: int, runs: int, only: list[str], path: Path, work: Path) -> dict:
    """The encoder's turns and the calls' turns (``only`` picks), each saved as it ends (a stopped run resumes)."""
    arguments = {"preset": preset, "side": side, "runs": runs}
    plan = [(f"VAE encoder {side}²", "encoder", arguments), (f"picture and edit {side}²", "edit", arguments)]
    results = run_steps(path, [step for step in plan if step[1] in only], in_this_process(TASKS, work), preset=preset, side=side)
    path.with_suffix(".md").write_text(speed_markdown(results))
    return results


def main(argv: list[str] | None = None) -> dict:
    from helpers.settings import model_name
    from helpers.sources import resolve_model_source
    from helpers.variants import variant_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "speed"))
    parser.add_argument("--model", default="shapes", help="quality: a model id (default: shapes)")
    parser.add_argument("--prompts", type=int, default=64, help="quality: evaluation scenes (at least 8)")
    parser.add_argument("--steps", type=int, default=None, help="quality: steps instead of the recipe's (a smoke test)")
    parser.add_argument("--quick", action="store_true", help="speed: the tiny model at 256²")
    parser.add_argument("--only", nargs="+", choices=("encoder", "edit"), default=["encoder", "edit"], help="speed: which turns")
    parser.add_argument("--runs", type=int, default=None, help="speed: timed turns (default: 3 for the encoder, 2 for the calls)")
    parser.add_argument("--work", type=Path, default=Path("model/editing-benchmark"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.what == "quality":
        name = f"editing-{model_name(args.model)}" + (f"-{args.prompts}" if args.prompts != 64 else "") + (f"-{args.steps}-steps" if args.steps else "")
        source, fp16 = resolve_model_source(args.model), variant_dir(args.model, "FP16")
        results = quality(args.model, source, fp16, args.prompts, args.out / f"{name}.json", args.work, steps=args.steps)
        print(quality_markdown(results))
        return results
    preset, side = ("tiny", 256) if args.quick else ("full", 1024)
    results = speed(preset, side, args.runs or 2, args.only, args.out / f"editing-speed-{preset}.json", args.work / preset)
    print(speed_markdown(results))
    return results


if __name__ == "__main__":
    main()
