"""Token downsampling (``helpers.token_downsampling``): is it worth it? Quality on the shapes model, speed at full size.

    python benchmarks/token_downsampling.py quality --model shapes                  # alignment, PSNR/SSIM (minutes)
    python benchmarks/token_downsampling.py speed --model model/pixart-xl-dpm-random  # steps in turns, profiles (an hour)
    python benchmarks/picture.py --model model/pixart-xl-dpm-random --recipes LCM --tag todo \\
        --engines torch ov-W8A8-static ov-W8A8-ToDo-static                            # the whole picture against PyTorch

``quality``: the alignment score of the shapes model's 64 evaluation pictures, exact and downsampled, and their
PSNR/SSIM against the exact pictures: PyTorch with the processor for each choice of blocks and steps (cheap to try),
and the OpenVINO ``FP16-ToDo`` variant the product makes. ``speed`` needs ``FP16-ToDo`` and ``W8A8-ToDo`` beside
``FP16`` and ``W8A8`` in the folder (``python -m helpers compress --variant W8A8-ToDo`` makes both): the transformer
step at 1024² and 2048² with static shapes, in turns in one process, each variant's per-op profile, the cosine of
each step's output against the exact variant's, and an LCM picture's PSNR against the exact one. Results go to
``results/token-downsampling-<model>.{json,md}`` after each measurement (a stopped run resumes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.inputs import PROMPT, example_inputs, sample_with
from benchmarks.runner import RESULTS, in_child, machine_line, op_profile, run_steps, save_results, timed_in_turns

# (name, blocks, steps): which blocks downsample, and at which denoising steps (None: all)
QUALITY_CHOICES = (
    ("all blocks, all steps", None, None),
    ("first half of the blocks", "first", None),
    ("second half of the blocks", "second", None),
    ("all blocks, first half of the steps", None, "first"),
    ("all blocks, second half of the steps", None, "second"),
    ("all blocks, last quarter of the steps", None, "last quarter"),
)
# (side, the variants timed in turns)
SPEED_SIZES = ((1024, ("W8A8", "FP16")), (2048, ("FP16",)))


def part_of(count: int, which: str | None) -> list[int] | None:
    """Indices ``0..count-1``: all (None), the first or second half, or the last quarter."""
    half = count // 2
    return {None: None, "first": list(range(half)), "second": list(range(half, count)), "last quarter": list(range(count - count // 4, count))}[which]


def task_quality_torch(work: Path, model: str, prompts: int) -> dict:
    """Alignment and distance to the exact pictures of PyTorch with the processor, for each choice of blocks and steps."""
    import torch

    from helpers.comparison import evaluate_alignment
    from helpers.shapes import evaluation_scenes
    from helpers.sources import diffusers_pipeline_class, resolve_model_source
    from helpers.token_downsampling import (
        DEFAULT_FACTOR,
        DownsampledSelfAttention,
        TokenDownsampling,
        disable_token_downsampling,
        enable_token_downsampling,
    )
    from helpers.variants import folder_recipe

    source = resolve_model_source(model)
    recipe, evaluation = folder_recipe(source), evaluation_scenes(prompts)
    pipe = diffusers_pipeline_class(source).from_pretrained(source)
    pipe.set_progress_bar_config(disable=True)
    blocks, steps = len(pipe.transformer.transformer_blocks), recipe.num_inference_steps
    scores, pictures = {}, {}
    scores["PyTorch exact"], pictures["PyTorch exact"] = evaluate_alignment(pipe, evaluation, recipe)
    for name, which_blocks, which_steps in QUALITY_CHOICES:
        hook = enable_token_downsampling(pipe.transformer, TokenDownsampling(DEFAULT_FACTOR, part_of(blocks, which_blocks)))
        processors = [b.attn1.processor for b in pipe.transformer.transformer_blocks if isinstance(b.attn1.processor, DownsampledSelfAttention)]
        downsampled_steps = set(part_of(steps, which_steps) or range(steps))

        def switch(step: int, *_):  # after step ``step``: set the factor of the next one (and of the next batch's first)
            for processor in processors:
                processor.factor = DEFAULT_FACTOR if (step + 1) % steps in downsampled_steps else 1

        switch(-1)
        scores[f"PyTorch, {name}"], pictures[f"PyTorch, {name}"] = evaluate_alignment(pipe, evaluation, recipe, callback=switch)
        disable_token_downsampling(pipe.transformer, hook)
    return {"recipe": recipe.name, "steps": steps, "blocks": blocks, "prompts": prompts, "factor": DEFAULT_FACTOR,
            "rows": quality_rows(scores, pictures, "PyTorch exact"), "torch_threads": torch.get_num_threads()}


def task_quality_openvino(work: Path, model: str, prompts: int, fractions: list[float]) -> dict:
    """The product's ``FP16-ToDo`` and ``W8A8-ToDo`` variants (made here if needed, W8A8 calibrated on 8 prompts) with
    each fraction of their steps downsampled, each against itself with none (the exact FP16 and W8A8 pipelines)."""
    from helpers.comparison import evaluate_alignment
    from helpers.compression import calibration_prompts, collect_calibration_data, make_downsampled_variant
    from helpers.conversion import convert_pipeline
    from helpers.pipeline import OVPixArtPipeline
    from helpers.shapes import evaluation_scenes
    from helpers.sources import resolve_model_source
    from helpers.token_downsampling import TokenDownsampling
    from helpers.variants import Variant, variant_dir

    source, fp16 = resolve_model_source(model), variant_dir(model, "FP16")
    convert_pipeline(source, fp16)
    side = Variant.load(fp16).native_size[0]
    calibrate = lambda variant: collect_calibration_data(variant, calibration_prompts(model), height=side, width=side)  # noqa: E731
    evaluation, rows = evaluation_scenes(prompts), {}
    for variant in ("FP16-ToDo", "W8A8-ToDo"):
        folder = variant_dir(model, variant)
        make_downsampled_variant(source, fp16, folder, TokenDownsampling(), calibration=calibrate)
        pipe = OVPixArtPipeline.from_pretrained(folder, "CPU")
        pipe.set_progress_bar_config(disable=True)
        recipe, scores, pictures = pipe.variant.recipe, {}, {}
        exact = f"OpenVINO {variant.removesuffix('-ToDo')}"
        for fraction in [0.0, *fractions]:
            pipe.set_downsampled_steps(fraction)
            name = f"OpenVINO {variant}, {fraction:.0%} of the steps" if fraction else exact
            scores[name], pictures[name] = evaluate_alignment(pipe, evaluation, recipe)
        rows[exact] = quality_rows(scores, pictures, exact)
    return {"rows by exact pipeline": rows}


def quality_rows(scores: dict, pictures: dict, exact: str) -> dict[str, dict]:
    """Each pipeline's scores, and (but the exact one) the mean PSNR and SSIM of its pictures against the exact ones."""
    import numpy as np

    from helpers.comparison import psnr, ssim

    rows = {}
    for name, images in pictures.items():
        rows[name] = dict(scores[name])
        if name != exact:
            rows[name]["PSNR dB vs exact"] = float(np.mean([psnr(a, b) for a, b in zip(pictures[exact], images)]))
            rows[name]["SSIM vs exact"] = float(np.mean([ssim(a, b) for a, b in zip(pictures[exact], images)]))
    return rows


def task_steps(work: Path, side: int, variants: list[str], runs: int) -> dict:
    """One transformer step (batch 1, static shapes) of each variant and of its ``-ToDo`` folder's downsampled
    transformer, in turns after a warm-up turn; each one's per-op profile (the last turn's) and the cosine of the
    downsampled output against the exact one's."""
    import openvino as ov
    import torch

    from helpers.comparison import cosine_similarity, latency_summary
    from helpers.parts import OVTransformer
    from helpers.variants import DOWNSAMPLED_PART

    folders = {name: work / name / "transformer" for name in variants} | {f"{name}-ToDo": work / f"{name}-ToDo" / DOWNSAMPLED_PART for name in variants}
    models = {name: OVTransformer(folder, ov.Core(), "CPU", {"PERF_COUNT": "YES"}, compile_now=False) for name, folder in folders.items()}
    inputs = example_inputs("transformer", {"side": side // 8, "batch": 1}, next(iter(models.values())).config, torch.float32)
    inputs["timestep"] = torch.full((1,), 500.0)  # a middle step: where the picture's structure is settled
    for model in models.values():
        model.reshape({name: list(value.shape) for name, value in inputs.items()})
    seconds, outputs = timed_in_turns({name: (lambda model=model: model.run("model", **inputs)[0]) for name, model in models.items()}, runs)
    result = {"side": side, "tokens": (side // 16) ** 2, "steps": {name: latency_summary(times) for name, times in seconds.items()}}
    result["profile ms"] = {name: profile_by_type(model.request) for name, model in models.items()}
    result["cosine vs exact"] = {f"{name}-ToDo": cosine_similarity(outputs[f"{name}-ToDo"], outputs[name]) for name in variants}
    return result


def profile_by_type(request, top: int = 8) -> dict[str, float]:
    """Milliseconds per executed-op type in the request's last inference, the ``top`` largest and the total."""
    totals = op_profile(request, top=None)
    ranked = dict(list(totals.items())[:top])
    return {**{name: round(ms, 1) for name, ms in ranked.items()}, "total": round(sum(totals.values()), 1)}


def task_picture_distance(work: Path, side: int, variant: str, fractions: list[float]) -> dict:
    """The same LCM picture (one seed, static shapes) from a ``-ToDo`` variant with each fraction of downsampled steps
    (0 first: the exact picture); each one's PSNR and SSIM against it."""
    import numpy as np

    from helpers.comparison import psnr, ssim
    from helpers.pipeline import OVPixArtPipeline, generate
    from helpers.settings import LCM_RECIPE

    pipe = OVPixArtPipeline.from_pretrained(work / variant, "CPU", compile=False)
    sample_with(pipe, LCM_RECIPE)
    pipe.set_progress_bar_config(disable=True)
    if side > 1024:  # a whole 2048² decode does not fit beside T5 in 24 GiB
        pipe.vae.enable_tiling()
    size = dict(height=side, width=side, use_resolution_binning=False)  # binning would draw 2048² at 1024² and upscale
    pipe.reshape(guidance_scale=LCM_RECIPE.guidance_scale, **size)
    images, seconds = {}, {}
    for fraction in [0.0, *fractions]:
        pipe.set_downsampled_steps(fraction)
        image, seconds[fraction] = generate(pipe, PROMPT, seed=0, recipe=LCM_RECIPE, **size)
        images[fraction] = np.asarray(image)
    return {"side": side, "variant": variant, "seconds": seconds, "vae_tiling": pipe.vae.use_tiling,
            "PSNR dB": {f: psnr(images[0.0], images[f]) for f in fractions}, "SSIM": {f: ssim(images[0.0], images[f]) for f in fractions}}


def speed_plan(runs: int) -> list[tuple[str, str, dict]]:
    steps = [(f"step {side}²", "todo_steps", {"side": side, "variants": list(variants), "runs": runs if side == 1024 else 1})
             for side, variants in SPEED_SIZES]
    # at 2048² a picture takes about 10 minutes on 2 cores: the variant's own share of steps only
    return steps + [(f"LCM picture {side}² FP16-ToDo vs exact", "todo_picture_distance", {"side": side, "variant": "FP16-ToDo", "fractions": fractions})
                    for side, fractions in ((1024, [0.5, 1.0]), (2048, [0.5]))]


def quality_markdown(torch_result: dict, openvino_result: dict | None, model: str) -> list[str]:
    lines = [f"## Quality: the `{model}` model, {torch_result['prompts']} evaluation prompts, {torch_result['recipe']} recipe "
             f"({torch_result['steps']} steps), {torch_result['blocks']} blocks, factor {torch_result['factor']}\n",
             "| pipeline | alignment | vs exact | shape | colour | position | background | PSNR dB vs exact | SSIM vs exact |",
             "|---|---|---|---|---|---|---|---|---|"]
    holds = []
    openvino_tables = (openvino_result or {}).get("rows by exact pipeline", {})
    for exact, rows in [("PyTorch exact", torch_result["rows"]), *openvino_tables.items()]:
        for name, row in rows.items():
            change = row["overall"] - rows[exact]["overall"]
            distance = f"{row['PSNR dB vs exact']:.1f} | {row['SSIM vs exact']:.3f}" if name != exact else "— | —"
            lines.append(f"| {name} | {row['overall']:.3f} | {change:+.3f} | {row['shape']:.3f} | {row['color']:.3f} | "
                         f"{row['position']:.3f} | {row['background']:.3f} | {distance} |")
            if name != exact and change >= -0.02:
                holds.append(name)
    lines += ["", f"Within 0.02 of the exact alignment: {', '.join(holds) if holds else 'none'}.", ""]
    return lines


def speed_markdown(steps: dict) -> list[str]:
    lines = []
    for key, value in steps.items():
        if "error" in value:
            lines += [f"- {key}: failed ({value['error']})", ""]
        elif key.startswith("step"):
            lines += [f"## Transformer step at {value['side']}² (batch 1, {value['tokens']} tokens, static shapes), in turns\n",
                      "| variant | s (median) | vs W8A8 | vs its exact variant | output cosine vs exact |", "|---|---|---|---|---|"]
            medians = {variant: summary["median"] for variant, summary in value["steps"].items()}
            for variant, median in medians.items():
                vs_w8a8 = f"{medians['W8A8'] / median:.2f}×" if "W8A8" in medians else "—"
                exact = medians.get(variant.removesuffix("-ToDo"))
                vs_exact = f"{exact / median:.2f}×" if variant.endswith("-ToDo") and exact else "—"
                cosine = value["cosine vs exact"].get(variant)
                lines.append(f"| {variant} | {median:.2f} | {vs_w8a8} | {vs_exact} | {f'{cosine:.4f}' if cosine is not None else '—'} |")
            lines += ["", "Per-op profile of one step (ms by op type, the largest):\n"]
            lines += [f"- {variant}: " + ", ".join(f"{name} {ms:,.0f}" for name, ms in profile.items()) for variant, profile in value["profile ms"].items()]
            lines.append("")
        else:
            lines += [f"## LCM picture at {value['side']}², {value['variant']}, against its exact picture (one seed)\n",
                      "| steps downsampled | PSNR dB | SSIM |", "|---|---|---|"]
            lines += [f"| {float(fraction):.0%} | {psnr:.1f} | {value['SSIM'][fraction]:.4f} |" for fraction, psnr in value["PSNR dB"].items()]
            lines.append("")
    return lines


def markdown(results: dict) -> str:
    lines = ["# Token downsampling: fewer keys in self-attention\n", machine_line(results["machine"]) + "\n"]
    steps = dict(results.get("steps", {}))
    torch_quality, openvino_quality = steps.pop("quality PyTorch", None), steps.pop("quality OpenVINO", None)
    if torch_quality and "rows" in torch_quality:
        lines += quality_markdown(torch_quality, openvino_quality, results.get("model", "?"))
    lines += speed_markdown(steps)
    return "\n".join(lines) + "\n"


def main() -> None:
    from helpers.settings import model_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "speed"))
    parser.add_argument("--model", required=True, help="quality: a model id (shapes); speed: the folder with FP16, W8A8 and their -ToDo variants")
    parser.add_argument("--prompts", type=int, default=64, help="quality: evaluation prompts")
    parser.add_argument("--runs", type=int, default=3, help="speed: timed turns at 1024² (2048²: one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    args = parser.parse_args()
    if args.what == "quality":
        path, work = args.out / f"token-downsampling-{model_name(args.model)}.json", Path(".").resolve()
        plan = [("quality PyTorch", "todo_quality_torch", {"model": args.model, "prompts": args.prompts}),
                ("quality OpenVINO", "todo_quality_openvino", {"model": args.model, "prompts": args.prompts, "fractions": [0.5, 1.0]})]
    else:
        work = Path(args.model).resolve()
        path, plan = args.out / f"token-downsampling-{work.name}.json", speed_plan(args.runs)
    results = run_steps(path, plan, in_child(work, args.timeout))
    results["model"] = args.model
    save_results(path, results)
    path.with_suffix(".md").write_text(markdown(results))
    print(f"Results: {path}, {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
