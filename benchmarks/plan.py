"""The full-size benchmark's plan: which steps run, in which order, on which engines, components and input sizes.

A step is ``(key, task, arguments)``: its key names it in the results JSON, its task is one of
``benchmarks.registry.TASKS``, run with those arguments (``benchmarks.runner.run_steps``).
"""

from __future__ import annotations

from helpers.machine import bf16_instructions
from helpers.schemes import CALIBRATION_PROMPTS, COMPRESSION_SCHEMES
from helpers.variants import PARTS, VARIANTS

TORCH_ENGINES = ("torch-fp32", "torch-bf16")
ENGINES = (*TORCH_ENGINES, *(f"ov-{variant}" for variant in VARIANTS))
# INT4 for the T5 encoder only, W8A8 for the transformer only: their other parts are INT8's
ONLY_PART = {"ov-INT4-T5": "text_encoder", "ov-W8A8": "transformer"}
# W8A8's calibration: the FP16 pipeline's transformer inputs over helpers' CALIBRATION_PROMPTS shipped prompts, at
# this size (512² costs a fifth of 1024² per step; the statistics are per channel, so they carry over)
CALIBRATION_SIZE = 512
# The picture side the latencies and the whole pictures are measured at: full size, and the quick mode's (the small
# model's VAE at 1024² alone would take most of a CI minute)
PICTURE_SIDE = {False: 1024, True: 256}
# PixArt-Sigma-XL-2-2K-MS: PixArt-XL's transformer at sample size 256 without micro-conditions, SDXL's VAE (the
# same shapes as PixArt-α's, another latent scale). A 2048² step is 16 384 tokens, four times a 1024² step's, so
# attention's share grows. Timed against FP16: the variants that change the transformer (INT4-T5's is INT8's).
SIGMA_2K_VARIANTS = ("FP16", "INT8", "W8A8")
# (label, example shape) of the step and of the decode; quick: smaller (the decode still in 3 × 3 tiles)
SIGMA_2K_STEP = {False: ("2048² b1", {"side": 256, "batch": 1}), True: ("512² b1", {"side": 64, "batch": 1})}
SIGMA_2K_DECODE = {False: ("2048²", {"side": 256, "batch": 1}), True: ("1024²", {"side": 128, "batch": 1})}
# W8A8's calibration for it: the transformer's inputs at 512² and timesteps across the schedule (random latents and
# captions: with random weights, a pipeline's recorded inputs would be no more realistic, and timing does not
# depend on the ranges calibrated)
SIGMA_2K_CALIBRATION = {"count": 8, "side": 64}
# The memory goals of a 16 GB laptop: (goal, GiB, the steps that measure it, in order of preference)
GOALS = (
    ("converting the whole LCM pipeline, anonymous memory", 12.0, ("convert pipeline, one process",)),
    ("INT8 variant: compile + generate", 12.0, ("pipeline INT8",)),
    ("FP16 variant: compile + generate", 24.0, ("pipeline FP16", "pipeline FP16, T5 on demand")),
)


def input_sizes(quick: bool) -> dict[str, dict[str, dict]]:
    """Per component, the inputs each latency is timed on, by label: keyword arguments of its example function in
    ``helpers.conversion.PART_SPECS``. T5: 120 tokens; the transformer: the picture's latent (side / 8) at batch 1
    and 2 (a guided step), and at half the side; the VAE: the picture's decode."""
    side = PICTURE_SIDE[quick]
    latent = side // 8
    return {
        "text_encoder": {"120 tokens": {"batch": 1, "length": 120}},
        "transformer": {f"{side}² b1": {"side": latent, "batch": 1}, f"{side}² b2": {"side": latent, "batch": 2},
                        f"{side // 2}² b1": {"side": latent // 2, "batch": 1}},
        "vae_decoder": {f"{side}²": {"side": latent, "batch": 1}},
    }


def part_engine(engine: str, part: str) -> str:
    """The engine that runs ``part`` in ``engine``'s pipeline: its own, or INT8 where it covers one part only."""
    return engine if ONLY_PART.get(engine, part) == part else "ov-INT8"


def plan(only: set[str], engines: set[str], quick: bool, runs: int, warmup: int) -> list[tuple[str, str, dict]]:
    """(key, task, arguments) in the order they must run.

    PyTorch bf16 is left out on CPUs without bf16 instructions: its matrix multiply is then emulated, hundreds of
    times slower than fp32 (the "matmul peak" step measures it), and a full-size step would take hours.
    """
    if not bf16_instructions():
        engines = engines - {"torch-bf16"}
    return _steps(only, engines, quick, runs, warmup)


def _steps(only: set[str], engines: set[str], quick: bool, runs: int, warmup: int) -> list[tuple[str, str, dict]]:
    """The plan's steps for ``engines`` as given, whatever this CPU has."""
    parts = [part for part in PARTS if part in only]
    steps = [("build", "build", {"quick": quick}), ("matmul peak", "matmul", {"side": 512 if quick else 2048})]
    steps += _variant_steps(parts, quick)
    if only == set(PARTS):  # the whole-pipeline steps need every part
        steps += _pipeline_steps(PICTURE_SIDE[quick])
    steps += _latency_steps(parts, engines, input_sizes(quick), runs, warmup)
    if "transformer" in only:
        size, shape = next(iter(input_sizes(quick)["transformer"].items()))  # the picture's step, batch 1
        steps.append(("W8A8 vs FP16 side by side", "side_by_side", {"variants": ["FP16", "W8A8"], "runs": runs, "warmup": warmup,
                                                                     "size": size, "shape": shape}))
    if only == set(PARTS):
        # quick: T5 alone, the cheapest part: the parts were converted already, and this process's peak memory is
        # not the step's own (so not what the full-size step measures) in the quick mode anyway
        steps.append(("convert pipeline, one process", "convert_all", {"parts": ["text_encoder"]} if quick else {}))
    return steps


def _variant_steps(parts: list[str], quick: bool) -> list[tuple[str, str, dict]]:
    """FP16 converted part by part, W8A8's calibration set recorded from it, then each compressed variant's parts."""
    steps = [(f"convert {part}", "convert", {"part": part}) for part in parts]
    if "transformer" in parts:
        steps.append(("calibrate W8A8", "calibrate", {"prompts": CALIBRATION_PROMPTS, "size": 64 if quick else CALIBRATION_SIZE}))
    steps += [(f"compress {variant} {part}", "compress", {"variant": variant, "part": part}) for variant in COMPRESSION_SCHEMES for part in parts]
    return steps


def _pipeline_steps(side: int) -> list[tuple[str, str, dict]]:
    """Each variant compiled and run whole (one LCM picture of ``side``²): cold, then filling OpenVINO's model
    cache, then compiled from it."""
    steps = []
    for variant in VARIANTS:
        steps += [
            (f"pipeline {variant}", "pipeline", {"variant": variant, "cache": None, "side": side}),
            (f"pipeline {variant} fill cache", "pipeline", {"variant": variant, "cache": "fill", "side": side}),
            (f"pipeline {variant} cached", "pipeline", {"variant": variant, "cache": "cached", "side": side}),
        ]
        if variant == "FP16":  # FP16 weights are held in f32 on CPUs without bf16: T5-XXL alone is then 18 GiB
            steps.append(("pipeline FP16, T5 on demand", "pipeline", {"variant": "FP16", "cache": None, "side": side, "on_demand": True}))
    return steps


def _latency_steps(parts: list[str], engines: set[str], sizes: dict, runs: int, warmup: int) -> list[tuple[str, str, dict]]:
    """Each component timed on each engine that has its own version of it, at its ``sizes``."""
    return [
        (f"latency {engine} {part}", "latency", {"engine": engine, "component": part, "runs": runs, "warmup": warmup,
                                                  "sizes": sizes[part]})
        for part in parts
        for engine in ENGINES
        if engine in engines and part_engine(engine, part) == engine
    ]


def sigma_2k_plan(quick: bool, runs: int, warmup: int) -> list[tuple[str, str, dict]]:
    """PixArt-Σ-2K's transformer and VAE decoder, without T5 (PixArt-α's): built, converted, the transformer
    compressed to each variant; then one 2048² step of each variant in turns, and one 2048² decode, whole and in tiles.

    The decode is timed once, cold: it takes minutes, and its 99 MB of weights are prepared in well under a second.
    """
    size, shape = SIGMA_2K_STEP[quick]
    decode_size, decode_shape = SIGMA_2K_DECODE[quick]
    steps = [(f"Σ-2K build {part}", "build_sigma_part", {"quick": quick, "part": part}) for part in ("transformer", "vae_decoder")]
    steps += [(f"Σ-2K convert {part}", "convert_part", {"part": part}) for part in ("transformer", "vae_decoder")]
    steps.append(("Σ-2K calibrate W8A8", "calibrate_examples", SIGMA_2K_CALIBRATION))
    steps += [(f"Σ-2K compress {variant} transformer", "compress_transformer", {"variant": variant}) for variant in SIGMA_2K_VARIANTS[1:]]
    steps.append((f"Σ-2K step {size}", "side_by_side", {"variants": list(SIGMA_2K_VARIANTS), "runs": runs, "warmup": warmup,
                                                     "size": size, "shape": shape}))
    decode = {"engine": "ov-FP16", "component": "vae_decoder", "runs": 1, "warmup": 0, "sizes": {decode_size: decode_shape}}
    steps.append((f"Σ-2K decode {decode_size}", "latency", decode))
    steps.append((f"Σ-2K decode {decode_size} in tiles", "latency", {**decode, "tiling": True}))
    return steps


def report_order() -> list[str]:
    """Every step key the plan makes, in the order the report lists them (a results file's other keys come after)."""
    # every engine, PyTorch bf16 included: the report depends on the results only, not on the machine rendering them
    return [key for key, _, _ in _steps(set(PARTS), set(ENGINES), False, 1, 1)]
