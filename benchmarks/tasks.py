"""The full-size benchmark's tasks: each returns a JSON-able dict (the runner adds its peak memory), in a child
process of its own or, in the quick mode, in the runner's.

Each task imports what it uses when it runs, so that a child's peak memory is its own task's, not that of every
stage's libraries.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from benchmarks.inputs import example_inputs, part_call
from benchmarks.plan import TORCH_ENGINES
from benchmarks.runner import op_profile, timed_in_turns


def configs(quick: bool) -> dict[str, dict]:
    """The three configs: the real ones (``assets/pixart-xl-configs``), or the small model's."""
    from helpers.building import TINY_T5_CONFIG, TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, full_size_configs

    if quick:
        return {"transformer": TINY_TRANSFORMER_CONFIG, "vae": TINY_VAE_CONFIG, "t5": TINY_T5_CONFIG}
    return full_size_configs()


def task_build(work: Path, quick: bool) -> dict:
    import torch

    from helpers.building import build_random_pipeline

    c = configs(quick)
    start = time.perf_counter()
    # T5-XXL is built in bf16 (9.5 GB of memory instead of 19 GB); the build stores it in FP32, as the real
    # checkpoint is.
    build_random_pipeline(work / "source", c["transformer"], c["vae"], c["t5"], text_encoder_dtype=torch.bfloat16)
    return {"seconds": time.perf_counter() - start}


def task_convert(work: Path, part: str) -> dict:
    from helpers.conversion import convert_pipeline

    seconds = convert_pipeline(work / "source", work / "FP16", parts=(part,), report=lambda m: None)
    return {"seconds": seconds.get(part)}


def task_convert_all(work: Path, parts: list[str] | None = None) -> dict:
    """The whole pipeline (or ``parts`` of it) converted in one process, as notebook 1 does it (into a scratch folder,
    then removed)."""
    from helpers.conversion import convert_pipeline
    from helpers.variants import PARTS

    scratch = work / "FP16-one-process"
    shutil.rmtree(scratch, ignore_errors=True)
    seconds = convert_pipeline(work / "source", scratch, parts=tuple(parts or PARTS), report=lambda m: None)
    shutil.rmtree(scratch)
    return {"seconds": sum(seconds.values()), "parts": seconds}


def task_calibrate(work: Path, prompts: int, size: int) -> dict:
    """Record W8A8's calibration set (the FP16 pipeline's transformer inputs) into ``calibration.npz``."""
    from helpers.compression import calibration_prompts, collect_calibration_data, save_calibration

    start = time.perf_counter()
    calibration = collect_calibration_data(work / "FP16", calibration_prompts("benchmark", prompts), size, size)
    save_calibration(calibration, work / "calibration.npz")
    return {"seconds": time.perf_counter() - start, "samples": len(calibration), "size": size}


def task_compress(work: Path, variant: str, part: str) -> dict:
    """Compress one part of the FP16 variant into ``variant``; the folder is marked finished once all parts are in."""
    from helpers.compression import compress_part, load_calibration
    from helpers.schemes import COMPRESSION_SCHEMES, needs_calibration
    from helpers.variants import finish_variant, is_part_converted

    start = time.perf_counter()
    if not is_part_converted(work / variant, part):
        method = COMPRESSION_SCHEMES[variant][part]
        calibration = load_calibration(work / "calibration.npz") if needs_calibration({part: method}) else None
        compress_part(work / "FP16", work / variant, part, method, calibration)
    finish_variant(work / "FP16", work / variant, {"variant": variant, "compression": COMPRESSION_SCHEMES[variant]})
    return {"seconds": time.perf_counter() - start}


def task_pipeline(work: Path, variant: str, cache: str | None, side: int, on_demand: bool = False) -> dict:
    """Compile a whole variant and make one LCM picture of ``side``² (exactly: no resolution binning); with ``cache``,
    compile only, filling or reading it.

    OpenVINO's CPU plugin prepares (decompresses, repacks) the weights at the first inference, not at compile time:
    the cold picture's time includes that, and its peak memory is the variant's in use.
    """
    from helpers.pipeline import OVPixArtPipeline, generate
    from helpers.settings import EXAMPLE_PROMPTS, LCM_RECIPE
    from helpers.variants import folder_size_mb

    cache_dir = work / "cache" / variant
    start = time.perf_counter()
    config = {"CACHE_DIR": str(cache_dir)} if cache else {}
    pipe = OVPixArtPipeline.from_pretrained(work / variant, "CPU", config, low_memory=on_demand)
    result = {"compile_seconds": time.perf_counter() - start}
    if cache == "cached":  # the cache holds the compiled models (GB at full size): measured, then freed
        result["cache_gib"] = folder_size_mb(cache_dir) * 1e6 / 1024**3
        shutil.rmtree(cache_dir)
    if cache:
        return result
    pipe.set_progress_bar_config(disable=True)
    image, seconds = generate(pipe, EXAMPLE_PROMPTS[0], recipe=LCM_RECIPE, height=side, width=side, use_resolution_binning=False)
    return {**result, "image_seconds": seconds, "image_size": list(image.size)}


def task_latency(work: Path, engine: str, component: str, runs: int, warmup: int, sizes: dict, tiling: bool = False) -> dict:
    """Median seconds of one call per input size (``sizes``: label → example shape, ``plan.input_sizes``); for
    PyTorch fp32's transformer also the FLOPs of one call. ``tiling``: the VAE decodes in tiles."""
    import openvino as ov
    import torch

    from helpers.comparison import latency_summary
    from helpers.conversion import load_torch_part
    from helpers.parts import OVTextEncoder, OVTransformer, OVVaeDecoder

    if engine in TORCH_ENGINES:
        dtype = torch.float32 if engine == "torch-fp32" else torch.bfloat16
        model = load_torch_part(work / "source", component, dtype=dtype)
    else:
        dtype = torch.float32
        cls = {"text_encoder": OVTextEncoder, "transformer": OVTransformer, "vae_decoder": OVVaeDecoder}[component]
        model = cls(work / engine.removeprefix("ov-") / component, ov.Core(), "CPU")
    if tiling:
        model.enable_tiling()
    call = part_call(component, model)
    result = {}
    for size, shape in sizes.items():
        inputs = example_inputs(component, shape, model.config, dtype)
        with torch.no_grad():
            seconds, _ = timed_in_turns({size: lambda: call(**inputs)}, runs, warmup)
            result[size] = latency_summary(seconds[size])
            if engine == "torch-fp32" and component == "transformer":
                result[size]["flops"] = flops(call, inputs)
    return result


def flops(call, inputs: dict) -> int:
    """The floating-point operations of one call (PyTorch's counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call(**inputs)
    return counter.get_total_flops()


def task_side_by_side(work: Path, variants: list[str], runs: int, warmup: int, size: str, shape: dict) -> dict:
    """One transformer step of each variant (``size``: its label, ``shape``: its example shape), timed in turns in
    one process, and where its time goes: each is compiled with ``PERF_COUNT``, and its last run's per-node times
    are summed by operation type and by kernel."""
    import openvino as ov
    import torch

    from helpers.comparison import cosine_similarity, latency_summary
    from helpers.parts import OVTransformer

    models = {v: OVTransformer(work / v / "transformer", ov.Core(), "CPU", {"PERF_COUNT": True}) for v in variants}
    inputs = example_inputs("transformer", shape, next(iter(models.values())).config, torch.float32)
    calls = {v: (lambda call=part_call("transformer", model): call(**inputs)) for v, model in models.items()}
    seconds, outputs = timed_in_turns(calls, runs, warmup)
    result = {}
    for variant, model in models.items():
        result[variant] = {**latency_summary(seconds[variant]), "ms by op type": op_profile(model.request),
                           "ms by kernel": op_profile(model.request, by_kernel=True)}
    first, *rest = variants
    result["size"] = size
    for variant in rest:
        result[variant]["speed-up"] = result[first]["median"] / result[variant]["median"]
        result[variant]["cosine vs " + first] = cosine_similarity(outputs[first], outputs[variant])
    return result


def task_build_sigma_part(work: Path, quick: bool, part: str) -> dict:
    """A random PixArt-Σ-2K part saved under ``source/``: the transformer (sample size 256, no micro-conditions) or
    SDXL's VAE (PixArt-α's VAE shapes, SDXL's latent scale)."""
    import torch
    from diffusers import AutoencoderKL, PixArtTransformer2DModel

    from helpers.building import TINY_SIGMA_TRANSFORMER_CONFIG, TINY_SIGMA_VAE_CONFIG, random_configs
    from helpers.conversion import PART_SPECS
    from helpers.folders import atomic_folder

    # full size: the configs of `build-random --family sigma --sample-size 256`; quick: tiny-sigma's
    transformer, vae, _ = (TINY_SIGMA_TRANSFORMER_CONFIG, TINY_SIGMA_VAE_CONFIG, None) if quick else random_configs("full", 256, "sigma")
    cls, config = (PixArtTransformer2DModel, transformer) if part == "transformer" else (AutoencoderKL, vae)
    start = time.perf_counter()
    torch.manual_seed(0)
    with atomic_folder(work / "source" / PART_SPECS[part].subfolder) as tmp:
        cls(**config).save_pretrained(tmp)
    return {"seconds": time.perf_counter() - start, "sample_size": config["sample_size"]}


def task_convert_part(work: Path, part: str) -> dict:
    """One part converted to ``FP16/<part>`` alone (no variant folder around it: it is timed alone)."""
    from helpers.conversion import convert_part, load_torch_part

    start = time.perf_counter()
    convert_part(load_torch_part(work / "source", part), part, work / "FP16")
    return {"seconds": time.perf_counter() - start}


def task_calibrate_examples(work: Path, count: int, side: int) -> dict:
    """W8A8's calibration set from the transformer's example inputs at ``side``, timesteps spread over the schedule."""
    import types

    import torch

    from helpers.compression import save_calibration
    from helpers.conversion import transformer_example

    config = types.SimpleNamespace(**json.loads((work / "FP16" / "transformer" / "config.json").read_text()))
    torch.manual_seed(0)
    calls = []
    for timestep in torch.linspace(999, 0, count):
        example = transformer_example(config, batch=1, side=side)
        example["timestep"] = timestep.reshape(1)
        calls.append({name: value.numpy() for name, value in example.items()})
    save_calibration(calls, work / "calibration.npz")
    return {"samples": len(calls), "side": side}


def task_compress_transformer(work: Path, variant: str) -> dict:
    """``FP16/transformer`` compressed with ``variant``'s method for it into ``<variant>/transformer``."""
    from helpers.compression import compress_part, load_calibration
    from helpers.schemes import COMPRESSION_SCHEMES, needs_calibration
    from helpers.variants import ir_path

    method = COMPRESSION_SCHEMES[variant]["transformer"]
    calibration = load_calibration(work / "calibration.npz") if needs_calibration({"transformer": method}) else None
    start = time.perf_counter()
    compress_part(work / "FP16", work / variant, "transformer", method, calibration)
    return {"seconds": time.perf_counter() - start, "weights_mb": ir_path(work / variant, "transformer").with_suffix(".bin").stat().st_size / 1e6}


def task_matmul_peak(work: Path, side: int) -> dict:
    """Best TFLOP/s of a square matrix multiply in PyTorch, bf16 and fp32, on this machine's cores."""
    import torch

    matrices = {name: (torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype))
                for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    seconds, _ = timed_in_turns({name: (lambda a=a, b=b: a @ b) for name, (a, b) in matrices.items()}, runs=3)
    return {"tflops": {name: 2 * side**3 / min(times) / 1e12 for name, times in seconds.items()}, "side": side}
