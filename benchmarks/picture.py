"""The whole picture against PyTorch at its best: T5 encode + the steps + the decode, per engine, per recipe.

    python benchmarks/picture.py --model model/pixart-xl-dpm-random        # full size, 1024², LCM then standard
    python benchmarks/picture.py --model model/pixart-xl-dpm-random --recipes LCM --engines torch ov-W8A8-static
    python benchmarks/picture.py --model /tmp/tiny --side 256 --runs 1     # a small model: a smoke test

``--model`` is a folder holding the diffusers pipeline (``diffusers/``, as ``build-random`` makes it) and its variant
folders (``FP16/``, ``W8A8/``: ``convert`` and ``compress`` make them). The recipe sets the scheduler, steps and
guidance (LCM: 4 steps, no guidance; standard: DPM-Solver, 20 steps, guidance 4.5), so one folder serves both.

Each engine draws in its own process (PyTorch's T5-XXL and OpenVINO's do not fit 24 GiB together), after a warm-up
picture: PyTorch in bf16 where the CPU has bf16 instructions (fp32 otherwise) with its VAE in ``channels_last``, and
with its transformer ``torch.compile``d; OpenVINO's variants with dynamic and static shapes (``pipe.reshape``). The
results go to ``results/picture-<model>-<side>.json`` after each engine (a stopped run resumes), then a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from benchmarks.inputs import PROMPT, example_inputs, part_call, sample_with
from benchmarks.runner import RESULTS, in_child, machine_line, run_steps, timed_in_turns
from helpers.record import CallRecord
from helpers.settings import LCM_RECIPE, STANDARD_RECIPE

# engine -> how it draws: PyTorch (eager or compiled), or an OpenVINO variant folder with dynamic or static shapes
ENGINES = {
    "torch": {"torch": True, "compile": False},
    "torch-compile": {"torch": True, "compile": True},
    "ov-FP16": {"variant": "FP16", "static": False},
    "ov-FP16-static": {"variant": "FP16", "static": True},
    "ov-W8A8": {"variant": "W8A8", "static": False},
    "ov-W8A8-static": {"variant": "W8A8", "static": True},
    "ov-INT8-static": {"variant": "INT8", "static": True},
    # opt-in: fewer keys in self-attention (benchmarks/token_downsampling.py)
    "ov-FP16-ToDo-static": {"variant": "FP16-ToDo", "static": True},
    "ov-W8A8-ToDo-static": {"variant": "W8A8-ToDo", "static": True},  # the folder's share of downsampled steps
    "ov-W8A8-ToDo-all-static": {"variant": "W8A8-ToDo", "static": True, "downsampled_steps": 1.0},
}
# per recipe; a standard 1024² picture takes minutes on 2 cores, so it runs the best of each side only
DEFAULT_ENGINES = {
    "LCM": ("torch", "torch-compile", "ov-FP16", "ov-FP16-static", "ov-W8A8-static"),
    "standard": ("torch", "ov-FP16-static", "ov-W8A8-static"),
}
RECIPES = {"LCM": LCM_RECIPE, "standard": STANDARD_RECIPE}


def picture_plan(engines: dict[str, tuple], side: int, runs: dict[str, int], warmup: int = 1, turns: bool = True) -> list[tuple[str, str, dict]]:
    """(key, task, arguments): each recipe's engines, one recipe after the other (LCM first: its results come soonest),
    then (``turns``) the FP16 transformer step and decode with static against dynamic shapes, in turns in one process."""
    steps = [
        (f"{recipe} {side}² {engine}", "picture", {"engine": engine, "recipe": recipe, "side": side, "runs": runs[recipe], "warmup": warmup})
        for recipe, recipe_engines in engines.items()
        for engine in recipe_engines
    ]
    return steps + [(f"static vs dynamic {side}² FP16", "static_vs_dynamic", {"variant": "FP16", "side": side, "runs": 3})] * turns


def task_static_vs_dynamic(work: Path, variant: str, side: int, runs: int) -> dict:
    """The transformer's step (batch 1) and the decode of one ``variant``, compiled for dynamic and for static shapes,
    timed in turns (a warm-up turn first); the largest difference between their outputs."""
    import openvino as ov
    import torch

    from helpers.comparison import latency_summary
    from helpers.parts import OVTransformer, OVVaeDecoder

    result = {"variant": variant, "side": side}
    for component, cls in (("transformer", OVTransformer), ("vae_decoder", OVVaeDecoder)):
        models = {shapes: cls(work / variant / component, ov.Core(), "CPU", compile_now=False) for shapes in ("dynamic", "static")}
        inputs = example_inputs(component, {"side": side // 8, "batch": 1}, models["static"].config, torch.float32)
        models["static"].reshape({name: list(value.shape) for name, value in inputs.items() if value is not None})
        calls = {shapes: (lambda call=part_call(component, model): call(**inputs)) for shapes, model in models.items()}
        seconds, outputs = timed_in_turns(calls, runs)
        result[component] = {shapes: latency_summary(times) for shapes, times in seconds.items()}
        result[component]["static speed-up"] = result[component]["dynamic"]["median"] / result[component]["static"]["median"]
        result[component]["max abs difference"] = float((outputs["static"] - outputs["dynamic"]).abs().max())
    return result


def task_picture(work: Path, engine: str, recipe: str, side: int, runs: int, warmup: int) -> dict:
    """Load ``engine``'s pipeline, draw ``warmup`` short pictures (2 steps, the same shapes: everything compiled and
    prepared), then ``runs`` timed ones; each picture's seconds and where they went (T5, the steps, the decode)."""
    import torch

    sampling = RECIPES[recipe]
    start = time.perf_counter()
    pipe, about = load_engine(work, engine)
    sample_with(pipe, sampling)
    pipe.set_progress_bar_config(disable=True)
    size = dict(height=side, width=side, use_resolution_binning=False)  # exactly side², not the nearest bin
    if ENGINES[engine].get("static"):
        pipe.reshape(guidance_scale=sampling.guidance_scale, **size)
    about["load_seconds"] = time.perf_counter() - start
    records = TorchRecords(pipe) if ENGINES[engine].get("torch") else None
    with torch.no_grad():
        short = dataclasses.replace(sampling, num_inference_steps=2)
        first = [timed_picture(pipe, records, short, seed, size)[1]["seconds"] for seed in range(warmup)]
        drawn = [timed_picture(pipe, records, sampling, seed, size) for seed in range(warmup, warmup + runs)]
    pictures = [split for _, split in drawn]
    median = {key: statistics.median(p[key] for p in pictures) for key in pictures[0]}
    return {**about, "recipe": recipe, "steps": sampling.num_inference_steps, "guidance_scale": sampling.guidance_scale,
            "warmup_seconds": first, "pictures": pictures, "median": median, "image_size": list(drawn[-1][0].size)}


def timed_picture(pipe, records: TorchRecords | None, recipe, seed: int, size: dict) -> tuple:
    """One picture and its seconds split by its record (the OpenVINO pipeline's own, or PyTorch's ``records``):
    T5, the decode, and the rest, the denoising loop (transformer and scheduler)."""
    import torch

    start = time.perf_counter()
    output = pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), **recipe.defaults(), **size)
    seconds = time.perf_counter() - start
    record = records.take() if records else output.record
    t5, vae = record.total_seconds("text_encoder"), record.total_seconds("vae_decoder")
    return output.images[0], {"seconds": seconds, "T5 s": t5, "steps s": seconds - t5 - vae, "VAE s": vae}


def load_engine(work: Path, engine: str):
    """The pipeline of ``engine`` and what to say about it (precision, layout, compile)."""
    if ENGINES[engine].get("torch"):
        return torch_best(work / "diffusers", compile=ENGINES[engine]["compile"])
    from helpers.devices import compute_precision
    from helpers.pipeline import OVPixArtPipeline

    variant = ENGINES[engine]["variant"]
    pipe = OVPixArtPipeline.from_pretrained(work / variant, "CPU", compile=not ENGINES[engine]["static"],
                                         downsampled_steps=ENGINES[engine].get("downsampled_steps"))
    about = {"precision": compute_precision("CPU"), "variant": variant, "static_shapes": ENGINES[engine]["static"]}
    if pipe.downsampled_steps is not None:
        about["downsampled_steps"] = pipe.downsampled_steps
    return pipe, about


def torch_best(source: Path, compile: bool):
    """diffusers' pipeline as a PyTorch user would tune it on this CPU: bf16 where the CPU has bf16 instructions
    (fp32 otherwise), the VAE in ``channels_last`` (1.8× faster decode on AMX), the transformer compiled if asked."""
    import torch

    from helpers.reference import reference_dtype
    from helpers.sources import diffusers_pipeline_class

    dtype = reference_dtype()
    pipe = diffusers_pipeline_class(source).from_pretrained(source, dtype=dtype)
    pipe.vae.to(memory_format=torch.channels_last)
    if compile:
        pipe.transformer.compile()  # inductor; the first picture pays the compile (reported as warmup_seconds)
    return pipe, {"precision": str(dtype).removeprefix("torch."), "vae": "channels_last", "torch_compile": compile}


class TorchRecords:
    """For diffusers' PyTorch pipeline, which keeps no record: its prompt encoding and its decode timed (the two
    calls diffusers makes) into a record with the OpenVINO pipeline's part names, one per picture."""

    def __init__(self, pipe):
        self.record = CallRecord()
        pipe.encode_prompt = self._timed("text_encoder", pipe.encode_prompt)
        pipe.vae.decode = self._timed("vae_decoder", pipe.vae.decode)

    def _timed(self, part: str, call):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.record.add(part, time.perf_counter() - start)

        return timed

    def take(self) -> CallRecord:
        """The record of the picture just drawn; the next one starts empty."""
        record, self.record = self.record, CallRecord()
        return record


def markdown(results: dict) -> str:
    """A table per recipe: each engine's picture (median) and its parts, against PyTorch's best (the faster of eager
    and compiled)."""
    lines = ["# The whole picture against PyTorch's best\n", machine_line(results["machine"]) + "\n"]
    steps = results.get("steps", {})
    for recipe in RECIPES:
        rows = {key: value for key, value in steps.items() if value.get("recipe") == recipe and "median" in value}
        failed = {key: value for key, value in steps.items() if key.startswith(recipe + " ") and "error" in value}
        if not rows and not failed:
            continue
        torch_rows = [value["median"]["seconds"] for value in rows.values() if "torch_compile" in value]
        best_torch = min(torch_rows) if torch_rows else None
        lines += [f"## {recipe} recipe\n", "| engine | picture s | vs PyTorch best | T5 s | steps s | VAE s | warm-up s | peak anon GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, value in rows.items():
            median = value["median"]
            ratio = f"{best_torch / median['seconds']:.2f}×" if best_torch else "—"
            memory = value.get("memory", {}).get("anon_gib")
            lines.append(
                f"| {engine_label(key, value)} | {median['seconds']:.1f} | {ratio} | {median['T5 s']:.1f} | {median['steps s']:.1f} | "
                f"{median['VAE s']:.1f} | {value['warmup_seconds'][0]:.1f} | {f'{memory:.1f}' if memory is not None else '—'} |"
            )
        lines += [f"| {key.split(' ', 2)[-1]} | failed: {value['error']} | | | | | | |" for key, value in failed.items()]
        lines.append("")
    turns = steps.get(next((key for key in steps if key.startswith("static vs dynamic")), ""), {})
    if "transformer" in turns:
        lines += [f"## Static against dynamic shapes, OpenVINO {turns['variant']}, in turns in one process\n",
                  "| part | dynamic s | static s | static speed-up | max abs difference |", "|---|---|---|---|---|"]
        lines += [f"| {'transformer step (batch 1)' if part == 'transformer' else 'VAE decode'} | {turns[part]['dynamic']['median']:.2f} | "
                  f"{turns[part]['static']['median']:.2f} | {turns[part]['static speed-up']:.2f}× | {turns[part]['max abs difference']:.2g} |"
                  for part in ("transformer", "vae_decoder")]
        lines.append("")
    lines.append("Picture: median of the timed pictures after a warm-up (model load excluded; "
                 "a 2-step picture that includes torch.compile's compile and OpenVINO's first-inference weight preparation). Steps: the "
                 "denoising loop (transformer + scheduler). Each engine in its own process, one after the other.")
    return "\n".join(lines) + "\n"


def engine_label(key: str, value: dict) -> str:
    if "torch_compile" in value:
        return f"PyTorch {value['precision']}, VAE {value['vae']}" + (", transformer torch.compile" if value["torch_compile"] else ", eager")
    shapes = "static shapes" if value["static_shapes"] else "dynamic shapes"
    downsampled = f", {value['downsampled_steps']:.0%} of the steps downsampled" if "downsampled_steps" in value else ""
    return f"OpenVINO {value['variant']} ({value['precision']}), {shapes}{downsampled}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="folder with diffusers/ and the variant folders (full size: build-random, convert, compress)")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=None, help="engines for every recipe (default: "
                        + "; ".join(f"{recipe}: {' '.join(engines)}" for recipe, engines in DEFAULT_ENGINES.items()) + ")")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--side", type=int, default=1024, help="picture side")
    parser.add_argument("--runs", type=int, default=None, help="timed pictures per engine (default: LCM 2, standard 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--turns", action=argparse.BooleanOptionalAction, default=True, help="also time static against dynamic shapes in turns")
    parser.add_argument("--tag", default=None, help="a word for the results file's name: a new run beside the earlier ones")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds allowed per engine and recipe")
    args = parser.parse_args()
    work, side = args.model.resolve(), args.side
    runs = {"LCM": args.runs or 2, "standard": args.runs or 1}  # a standard 1024² picture takes minutes on 2 cores
    name = f"picture-{work.name}-{side}" + (f"-{args.tag}" if args.tag else "")
    results_path = args.out / f"{name}.json"
    engines = {recipe: tuple(args.engines or DEFAULT_ENGINES[recipe]) for recipe in args.recipes}
    results = run_steps(results_path, picture_plan(engines, side, runs, turns=args.turns), in_child(work, args.timeout))
    results_path.with_suffix(".md").write_text(markdown(results))
    print(f"Results: {results_path}, {results_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
