"""The whole picture against PyTorch at its best: T5 encode + the steps + the decode, per engine, per recipe.

    python benchmarks/picture.py --model model/pixart-xl-dpm-random        # full size, 1024², LCM then standard
    python benchmarks/picture.py --model model/pixart-xl-dpm-random --recipes LCM --engines torch ov-W8A8-static
    python benchmarks/picture.py --model /tmp/tiny --side 256 --runs 1     # a small model: a smoke test

``--model`` is a folder holding the diffusers pipeline (``diffusers/``, as ``build-random`` makes it) and its variant
folders (``FP16/``, ``W8A8/``: ``convert`` and ``compress`` make them). The recipe sets the scheduler, steps and
guidance (LCM: 4 steps, no guidance; standard: DPM-Solver, 20 steps, guidance 4.5), so one folder serves both.

Each engine draws in its own process (PyTorch's T5-XXL and OpenVINO's do not fit 24 GiB together), after a warm-up
picture: PyTorch in bf16 where the CPU has bf16 instructions (fp32 otherwise) with its VAE in ``channels_last``, and
with its transformer ``torch.compile``d, for the standard recipe also with cache-dit's DBCache; OpenVINO's variants
with dynamic and static shapes (``pipe.reshape``), and the fastest combinations: W8A8-ToDo, the step cache, the tiny
decoder (a draft, its picture compared with the full decode's). The caches' settings are the fastest that kept the
``shapes`` model's alignment within 0.02 of the exact pipeline's (``benchmarks/alignment_combos.py``). The results go
to ``results/picture-<model>-<side>.json`` after each engine (a stopped run resumes), then a markdown table.
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
from helpers.variants import TINY_VAE_DECODER

# The caches' settings: on the shapes model (results/alignment-combos-shapes.md, 64 prompts, 20 guided steps), the ones
# of lowest estimated full-size cost whose alignment stayed within 0.02 of the uncached pipeline's. cache-dit's DBCache
# computes the first block (First Block Cache, as the OpenVINO step cache) after max_warmup_steps computed steps and
# reuses the rest below residual_diff_threshold: 54 % of the steps reused, alignment 0.953 (uncached 0.969)
CACHE_DIT = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "max_warmup_steps": 4, "residual_diff_threshold": 0.2}
STEP_CACHE = 0.2  # the OpenVINO step cache on W8A8 (and W8A8-ToDo's exact steps): 63 % reused, 0.969 (FP16 0.969)

# engine -> how it draws: PyTorch (eager or compiled, with cache-dit or not), or an OpenVINO variant folder with
# dynamic or static shapes, the step cache, the tiny decoder
ENGINES = {
    "torch": {"torch": True, "compile": False},
    "torch-compile": {"torch": True, "compile": True},
    # cache-dit (standard recipe: LCM's 4 steps are all warm-up); compiled block by block, as cache-dit's own route
    "torch-cache-dit": {"torch": True, "compile": False, "cache_dit": CACHE_DIT},
    "torch-compile-cache-dit": {"torch": True, "compile": True, "cache_dit": CACHE_DIT},
    "ov-FP16": {"variant": "FP16", "static": False},
    "ov-FP16-static": {"variant": "FP16", "static": True},
    "ov-W8A8": {"variant": "W8A8", "static": False},
    "ov-W8A8-static": {"variant": "W8A8", "static": True},
    "ov-INT8-static": {"variant": "INT8", "static": True},
    # opt-in: fewer keys in self-attention (benchmarks/token_downsampling.py)
    "ov-FP16-ToDo-static": {"variant": "FP16-ToDo", "static": True},
    "ov-W8A8-ToDo-static": {"variant": "W8A8-ToDo", "static": True},  # the folder's share of downsampled steps
    "ov-W8A8-ToDo-all-static": {"variant": "W8A8-ToDo", "static": True, "downsampled_steps": 1.0},
    # the combinations: the step cache on W8A8, and on W8A8-ToDo's exact steps
    "ov-W8A8-static-cache": {"variant": "W8A8", "static": True, "step_cache": STEP_CACHE},
    "ov-W8A8-ToDo-static-cache": {"variant": "W8A8-ToDo", "static": True, "step_cache": STEP_CACHE},
    # drafts: each recipe's fastest combination decoded by the tiny VAE, compared with its full decode ("... vs full decode")
    "ov-W8A8-ToDo-static-tiny": {"variant": "W8A8-ToDo", "static": True, "decoder": "tiny"},
    "ov-W8A8-static-cache-tiny": {"variant": "W8A8", "static": True, "step_cache": STEP_CACHE, "decoder": "tiny"},
}
# per recipe; a standard 1024² picture takes minutes on 2 cores, so it runs PyTorch compiled only (eager: --engines).
# The standard recipe's fastest combination by the shapes estimate is W8A8 + the step cache (0.42 of the uncached
# steps' cost; with ToDo's first half 0.48: the cache reuses only the exact steps), so its draft is that one's
DEFAULT_ENGINES = {
    "LCM": ("torch", "torch-compile", "ov-FP16", "ov-FP16-static", "ov-W8A8-static", "ov-W8A8-ToDo-static",
            "ov-W8A8-ToDo-static-tiny"),
    "standard": ("torch-compile", "torch-compile-cache-dit", "ov-FP16-static", "ov-W8A8-static", "ov-W8A8-ToDo-static-cache",
                 "ov-W8A8-static-cache", "ov-W8A8-static-cache-tiny"),
}
RECIPES = {"LCM": LCM_RECIPE, "standard": STANDARD_RECIPE}


def picture_plan(engines: dict[str, tuple], side: int, runs: dict[str, int], warmup: int = 1, turns: bool = True) -> list[tuple[str, str, dict]]:
    """(key, task, arguments): each recipe's engines, one recipe after the other (LCM first: its results come soonest),
    a draft engine followed by its picture against its full decode; then (``turns``) the FP16 transformer step and
    decode with static against dynamic shapes, in turns in one process."""
    steps = []
    for recipe, recipe_engines in engines.items():
        for engine in recipe_engines:
            key = f"{recipe} {side}² {engine}"
            steps.append((key, "picture", {"engine": engine, "recipe": recipe, "side": side, "runs": runs[recipe], "warmup": warmup}))
            if ENGINES[engine].get("decoder") == "tiny":  # the seed of its last timed picture
                steps.append((f"{key} vs full decode", "picture_draft", {"engine": engine, "recipe": recipe, "side": side,
                                                                         "seed": warmup + runs[recipe] - 1}))
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


def prepared_engine(work: Path, engine: str, recipe: str, side: int) -> tuple:
    """``engine``'s pipeline set to sample by ``recipe`` at ``side``², static shapes reshaped; what to say about it
    (its load seconds too) and the size arguments of its calls."""
    sampling = RECIPES[recipe]
    start = time.perf_counter()
    pipe, about = load_engine(work, engine)
    sample_with(pipe, sampling)
    pipe.set_progress_bar_config(disable=True)
    size = dict(height=side, width=side, use_resolution_binning=False)  # exactly side², not the nearest bin
    if ENGINES[engine].get("decoder"):
        pipe.set_decoder(ENGINES[engine]["decoder"])
        about["decoder"] = ENGINES[engine]["decoder"]
    if ENGINES[engine].get("static"):  # the tiny decoder too, when set
        pipe.reshape(guidance_scale=sampling.guidance_scale, **size)
    about["load_seconds"] = time.perf_counter() - start
    return pipe, about, size


def task_picture(work: Path, engine: str, recipe: str, side: int, runs: int, warmup: int) -> dict:
    """Load ``engine``'s pipeline, draw ``warmup`` short pictures (2 steps, the same shapes: everything compiled and
    prepared), then ``runs`` timed ones; each picture's seconds and where they went (T5, the steps, the decode), and
    the steps a cache reused."""
    import torch

    sampling = RECIPES[recipe]
    pipe, about, size = prepared_engine(work, engine, recipe, side)
    records = TorchRecords(pipe, "cache_dit" in ENGINES[engine]) if ENGINES[engine].get("torch") else None
    with torch.no_grad():
        short = dataclasses.replace(sampling, num_inference_steps=2)
        first = [timed_picture(pipe, records, short, seed, size)[1]["seconds"] for seed in range(warmup)]
        drawn = [timed_picture(pipe, records, sampling, seed, size) for seed in range(warmup, warmup + runs)]
    pictures = [split for _, split in drawn]
    median = {key: statistics.median(p[key] for p in pictures) for key in pictures[0]}
    return {**about, "recipe": recipe, "steps": sampling.num_inference_steps, "guidance_scale": sampling.guidance_scale,
            "warmup_seconds": first, "pictures": pictures, "median": median, "image_size": list(drawn[-1][0].size)}


def task_picture_draft(work: Path, engine: str, recipe: str, side: int, seed: int) -> dict:
    """A draft engine's picture (the tiny decoder) against the same engine's full decode: the latents of ``seed`` (the
    seed of its last timed picture), decoded by each, as the pipeline decodes; PSNR and SSIM. Its own process, so the
    full VAE does not count in the draft's memory."""
    import torch

    from helpers.comparison import psnr, ssim

    pipe, about, size = prepared_engine(work, engine, recipe, side)
    with torch.no_grad():
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = pipe(PROMPT, generator=generator, output_type="latent", **RECIPES[recipe].defaults(), **size).images
        pictures = {}
        for decoder in ("tiny", "full"):
            pipe.set_decoder(decoder)
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            pictures[decoder] = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    return {**about, "recipe": recipe, "engine": engine, "seed": seed,
            "psnr_db": psnr(pictures["full"], pictures["tiny"]), "ssim": ssim(pictures["full"], pictures["tiny"])}


def timed_picture(pipe, records: TorchRecords | None, recipe, seed: int, size: dict) -> tuple:
    """One picture and its seconds split by its record (the OpenVINO pipeline's own, or PyTorch's ``records``):
    T5, the decode (the full or the tiny decoder), and the rest, the denoising loop (transformer and scheduler); with a
    cache, the steps it reused."""
    import torch

    start = time.perf_counter()
    output = pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(seed), **recipe.defaults(), **size)
    seconds = time.perf_counter() - start
    record = records.take() if records else output.record
    t5 = record.total_seconds("text_encoder")
    vae = record.total_seconds("vae_decoder") + record.total_seconds(TINY_VAE_DECODER)
    split = {"seconds": seconds, "T5 s": t5, "steps s": seconds - t5 - vae, "VAE s": vae}
    return output.images[0], split | ({} if record.reused is None else {"steps reused": record.reused})


def load_engine(work: Path, engine: str):
    """The pipeline of ``engine`` and what to say about it (precision, layout, compile, caches)."""
    spec = ENGINES[engine]
    if spec.get("torch"):
        return torch_best(work / "diffusers", compile=spec["compile"], cache_dit=spec.get("cache_dit"))
    from helpers.devices import compute_precision
    from helpers.pipeline import OVPixArtPipeline

    pipe = OVPixArtPipeline.from_pretrained(work / spec["variant"], "CPU", compile=not spec["static"],
                                         downsampled_steps=spec.get("downsampled_steps"), step_cache=spec.get("step_cache", False))
    about = {"precision": compute_precision("CPU"), "variant": spec["variant"], "static_shapes": spec["static"]}
    if pipe.downsampled_steps is not None:
        about["downsampled_steps"] = pipe.downsampled_steps
    if pipe.step_cache_threshold is not None:
        about["step_cache"] = pipe.step_cache_threshold
    return pipe, about


def torch_best(source: Path, compile: bool, cache_dit: dict | None = None):
    """diffusers' pipeline as a PyTorch user would tune it on this CPU: bf16 where the CPU has bf16 instructions
    (fp32 otherwise), the VAE in ``channels_last`` (1.8× faster decode on AMX), cache-dit's DBCache at ``cache_dit``
    (its settings) if given, the transformer compiled if asked: whole, or with cache-dit block by block (cache-dit
    runs the blocks under ``torch.compiler.disable``, so a compiled transformer would leave them eager)."""
    import torch

    from helpers.reference import reference_dtype
    from helpers.sources import diffusers_pipeline_class

    dtype = reference_dtype()
    pipe = diffusers_pipeline_class(source).from_pretrained(source, dtype=dtype)
    pipe.vae.to(memory_format=torch.channels_last)
    about = {"precision": str(dtype).removeprefix("torch."), "vae": "channels_last", "torch_compile": compile}
    if cache_dit:
        about["cache_dit"] = with_cache_dit(pipe, cache_dit)
    if compile and cache_dit:
        for block in pipe.transformer.transformer_blocks:
            block.compile()  # inductor, each block (cache-dit's compile_repeated_blocks route); the warm-up pays it
    elif compile:
        pipe.transformer.compile()  # inductor; the first picture pays the compile (reported as warmup_seconds)
    return pipe, about


def with_cache_dit(pipe, settings: dict) -> str:
    """cache-dit's DBCache on diffusers' pipeline, at ``settings`` (``cache_dit.DBCacheConfig``'s fields); the
    configuration in cache-dit's words (``DBCache_F1B0_W8I1M0MC0_R0.12``, say)."""
    import cache_dit

    config = cache_dit.DBCacheConfig(**settings)
    cache_dit.enable_cache(pipe, cache_config=config)
    return config.strify()


def cache_dit_steps(pipe) -> int:
    """The steps cache-dit cached in the pipeline's last call (its summary of that call)."""
    import cache_dit

    return len(cache_dit.summary(pipe, logging=False)[-1].cached_steps)


class TorchRecords:
    """For diffusers' PyTorch pipeline, which keeps no record: its prompt encoding and its decode timed (the two
    calls diffusers makes) into a record with the OpenVINO pipeline's part names, one per picture; with cache-dit
    (``cached``), the steps it cached as the record's reused ones."""

    def __init__(self, pipe, cached: bool = False):
        self.pipe, self.cached, self.record = pipe, cached, CallRecord()
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
        if self.cached:
            record.reused = cache_dit_steps(self.pipe)
        return record


def markdown(results: dict) -> str:
    """A table per recipe: each engine's picture (median) and its parts, against PyTorch's best (the fastest PyTorch
    row, cache-dit's included) and PyTorch's best uncached; the drafts against their full decode."""
    lines = ["# The whole picture against PyTorch's best\n", machine_line(results["machine"]) + "\n"]
    steps = results.get("steps", {})
    for recipe in RECIPES:
        lines += recipe_table(steps, recipe)
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
                 "denoising loop (transformer + scheduler). Each engine in its own process, one after the other. The caches' "
                 "settings kept the shapes model's alignment within 0.02 of the uncached pipeline's (alignment-combos-shapes.md).")
    return "\n".join(lines) + "\n"


def recipe_table(steps: dict, recipe: str) -> list[str]:
    """One recipe's rows (the failed ones with their error), then a line per draft against its full decode."""
    rows = {key: value for key, value in steps.items() if value.get("recipe") == recipe and "median" in value}
    failed = {key: value for key, value in steps.items() if key.startswith(recipe + " ") and "error" in value}
    if not rows and not failed:
        return []
    torch_rows = {key: value["median"]["seconds"] for key, value in rows.items() if "torch_compile" in value}
    best = min(torch_rows.values(), default=None)
    uncached = min((seconds for key, seconds in torch_rows.items() if "cache_dit" not in rows[key]), default=None)
    lines = [f"## {recipe} recipe\n", "| engine | picture s | vs PyTorch best | vs PyTorch uncached | T5 s | steps s | steps reused | VAE s "
             "| warm-up s | peak anon GiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, value in rows.items():
        median, memory = value["median"], value.get("memory", {}).get("anon_gib")
        reused = f"{median['steps reused']:g} of {value['steps']}" if "steps reused" in median else "—"
        lines.append(
            f"| {engine_label(key, value)} | {median['seconds']:.1f} | {ratio(best, median['seconds'])} | {ratio(uncached, median['seconds'])} | "
            f"{median['T5 s']:.1f} | {median['steps s']:.1f} | {reused} | {median['VAE s']:.1f} | {value['warmup_seconds'][0]:.1f} | "
            f"{f'{memory:.1f}' if memory is not None else '—'} |"
        )
    lines += [f"| {key.split(' ', 2)[-1]} | failed: {value['error']} | | | | | | | | |" for key, value in failed.items()]
    drafts = {key: value for key, value in steps.items() if value.get("recipe") == recipe and "psnr_db" in value}
    lines += [""] + [f"- Draft {engine_label(key, value)}: PSNR {value['psnr_db']:.1f} dB, SSIM {value['ssim']:.3f} against the "
                     f"same latents (seed {value['seed']}) decoded by the full VAE." for key, value in drafts.items()]
    return lines + [""] * bool(drafts)


def ratio(reference: float | None, seconds: float) -> str:
    return f"{reference / seconds:.2f}×" if reference else "—"


def engine_label(key: str, value: dict) -> str:
    if "torch_compile" in value:
        compiled = (", blocks torch.compile" if "cache_dit" in value else ", transformer torch.compile") if value["torch_compile"] else ", eager"
        cached = f", cache-dit {value['cache_dit']}" if "cache_dit" in value else ""
        return f"PyTorch {value['precision']}, VAE {value['vae']}{compiled}{cached}"
    shapes = "static shapes" if value["static_shapes"] else "dynamic shapes"
    downsampled = f", {value['downsampled_steps']:.0%} of the steps downsampled" if "downsampled_steps" in value else ""
    cached = f", step cache {value['step_cache']:g}" if "step_cache" in value else ""
    decoder = ", tiny decoder (draft)" if value.get("decoder") == "tiny" else ""
    return f"OpenVINO {value['variant']} ({value['precision']}), {shapes}{downsampled}{cached}{decoder}"


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
