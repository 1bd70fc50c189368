"""The benchmark's tasks: each runs in a child process and returns a JSON-able dict (the runner adds its peak memory).

Each task imports what it uses when it runs, so that a child's peak memory is its own task's, not that of every
stage's libraries.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

from benchmarks.plan import INPUT_SIZES, TORCH_ENGINES
from helpers.machine import PeakMemory


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


def task_convert_all(work: Path) -> dict:
    """The whole pipeline converted in one process, as notebook 1 does it (into a scratch folder, then removed)."""
    from helpers.conversion import convert_pipeline

    scratch = work / "FP16-one-process"
    shutil.rmtree(scratch, ignore_errors=True)
    seconds = convert_pipeline(work / "source", scratch, report=lambda m: None)
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
    from helpers.variants import COMPRESSION_SCHEMES, finish_variant, is_part_converted, needs_calibration

    start = time.perf_counter()
    if not is_part_converted(work / variant, part):
        method = COMPRESSION_SCHEMES[variant][part]
        calibration = load_calibration(work / "calibration.npz") if needs_calibration({part: method}) else None
        compress_part(work / "FP16", work / variant, part, method, calibration)
    finish_variant(work / "FP16", work / variant, {"variant": variant, "compression": COMPRESSION_SCHEMES[variant]})
    return {"seconds": time.perf_counter() - start}


def task_pipeline(work: Path, variant: str, cache: str | None, on_demand: bool = False) -> dict:
    """Compile a whole variant and make one 1024² LCM picture; with ``cache``, compile only, filling or reading it.

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
    image, seconds = generate(pipe, EXAMPLE_PROMPTS[0], recipe=LCM_RECIPE, height=1024, width=1024)
    return {**result, "image_seconds": seconds, "image_size": list(image.size)}


def example_inputs(component: str, shape: dict, config, dtype) -> dict:
    """The inputs of one latency: the conversion's example inputs at ``shape`` (one of ``INPUT_SIZES``), floats in ``dtype``."""
    import torch

    from helpers.conversion import PART_SPECS

    torch.manual_seed(0)
    inputs = PART_SPECS[component].example(config, **shape)
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def part_call(component: str, model):
    """``model`` called on named example inputs the way diffusers calls it: the conversion's export wrapper does
    exactly that, and the OpenVINO parts are called like the torch modules, so this serves both engines."""
    from helpers.conversion import PART_SPECS

    return PART_SPECS[component].wrapper(model)


def task_latency(work: Path, engine: str, component: str, runs: int, warmup: int, sizes: dict | None = None,
                 tiling: bool = False) -> dict:
    """Median seconds of one call per input size (``INPUT_SIZES``, or ``sizes``: label → example shape); for
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
    for size, shape in (sizes or INPUT_SIZES[component]).items():
        inputs = example_inputs(component, shape, model.config, dtype)
        with torch.no_grad():
            for _ in range(warmup):
                call(**inputs)
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                call(**inputs)
                seconds.append(time.perf_counter() - start)
            entry = latency_summary(seconds)
            if engine == "torch-fp32" and component == "transformer":
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    call(**inputs)
                entry["flops"] = counter.get_total_flops()
        result[size] = entry
    return result


def task_side_by_side(work: Path, variants: list[str], runs: int, warmup: int, size: str = "1024² b1", shape: dict | None = None) -> dict:
    """One transformer step of each variant (``size``: 1024², or ``shape``), timed in turns in one process, and where its time goes.

    The variants run alternately (A, B, A, B …) so that a slower or faster spell of the machine hits both alike.
    Each is compiled with ``PERF_COUNT``; the last run's per-node times are summed by operation type and by the
    kernel OpenVINO chose (its ``exec_type``, e.g. ``brgemm_avx2_I8``).
    """
    import openvino as ov
    import torch

    from helpers.comparison import cosine_similarity, latency_summary
    from helpers.parts import OVTransformer

    models = {v: OVTransformer(work / v / "transformer", ov.Core(), "CPU", {"PERF_COUNT": True}) for v in variants}
    calls = {v: part_call("transformer", model) for v, model in models.items()}
    shape = shape or INPUT_SIZES["transformer"][size]
    inputs = example_inputs("transformer", shape, next(iter(models.values())).config, torch.float32)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    outputs = {}
    for turn in range(warmup + runs):
        for variant, call in calls.items():
            start = time.perf_counter()
            outputs[variant] = call(**inputs)
            if turn >= warmup:
                seconds[variant].append(time.perf_counter() - start)
    result = {}
    for variant, model in models.items():
        by_type, by_kernel = Counter(), Counter()
        for info in model.request.profiling_info:
            ms = info.real_time.total_seconds() * 1e3
            by_type[info.node_type] += ms
            by_kernel[f"{info.node_type} {info.exec_type}"] += ms
        result[variant] = {**latency_summary(seconds[variant]), "ms by op type": dict(by_type.most_common(12)),
                           "ms by kernel": dict(by_kernel.most_common(12))}
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
    from helpers.settings import atomic_folder

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
    from helpers.variants import COMPRESSION_SCHEMES, ir_path, needs_calibration

    method = COMPRESSION_SCHEMES[variant]["transformer"]
    calibration = load_calibration(work / "calibration.npz") if needs_calibration({"transformer": method}) else None
    start = time.perf_counter()
    compress_part(work / "FP16", work / variant, "transformer", method, calibration)
    return {"seconds": time.perf_counter() - start, "weights_mb": ir_path(work / variant, "transformer").with_suffix(".bin").stat().st_size / 1e6}


def task_matmul_peak(work: Path, side: int) -> dict:
    """Best TFLOP/s of a square matrix multiply in PyTorch, bf16 and fp32, on this machine's cores."""
    import torch

    peaks = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(3))
        peaks[name] = 2 * side**3 / best / 1e12
    return {"tflops": peaks, "side": side}


def task_picture(work: Path, **kwargs) -> dict:
    from benchmarks.picture import task_picture

    return task_picture(work, **kwargs)


def task_static_vs_dynamic(work: Path, **kwargs) -> dict:
    from benchmarks.picture import task_static_vs_dynamic

    return task_static_vs_dynamic(work, **kwargs)


def task_todo_quality_torch(work: Path, **kwargs) -> dict:
    from benchmarks.token_downsampling import task_quality_torch

    return task_quality_torch(work, **kwargs)


def task_todo_quality_openvino(work: Path, **kwargs) -> dict:
    from benchmarks.token_downsampling import task_quality_openvino

    return task_quality_openvino(work, **kwargs)


def task_todo_steps(work: Path, **kwargs) -> dict:
    from benchmarks.token_downsampling import task_steps

    return task_steps(work, **kwargs)


def task_todo_picture_distance(work: Path, **kwargs) -> dict:
    from benchmarks.token_downsampling import task_picture_distance

    return task_picture_distance(work, **kwargs)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


TASKS = {"build": task_build, "convert": task_convert, "convert_all": task_convert_all, "calibrate": task_calibrate,
         "compress": task_compress, "pipeline": task_pipeline, "latency": task_latency, "side_by_side": task_side_by_side,
         "matmul": task_matmul_peak, "build_sigma_part": task_build_sigma_part,
         "convert_part": task_convert_part, "calibrate_examples": task_calibrate_examples,
         "compress_transformer": task_compress_transformer, "picture": task_picture,
         "static_vs_dynamic": task_static_vs_dynamic, "todo_quality_torch": task_todo_quality_torch,
         "todo_quality_openvino": task_todo_quality_openvino, "todo_steps": task_todo_steps,
         "todo_picture_distance": task_todo_picture_distance}


def run_child(task: str, kwargs: dict) -> None:
    """In the child process: run one task under the memory sampler and print its result as JSON."""
    with PeakMemory() as memory:
        result = TASKS[task](**kwargs)
    print("RESULT " + json.dumps({**result, "memory": memory.report()}))
