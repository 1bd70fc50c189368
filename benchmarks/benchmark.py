"""Full-size benchmark: speed and memory of the real PixArt-XL shapes, side by side with PyTorch.

Random weights in the real configs (``assets/pixart-xl-configs/``): speed and memory do not depend on the weights' values. Every
measurement runs in its own process (so its peak memory is its own) through the same ``helpers`` functions the
notebooks use, and is appended to ``results/full.json`` (``quick.json``) as it finishes: a stopped run resumes where it
stopped. At the end: a markdown table and a chart beside the JSON.

    python benchmarks/benchmark.py                  # full size (hours on 2 cores; about 60 GB of disk)
    python benchmarks/benchmark.py --only transformer vae_decoder
    python benchmarks/benchmark.py --quick          # the same code on the small model (CI's smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

PARTS = ("text_encoder", "transformer", "vae_decoder")
VARIANTS = ("FP16", "INT8", "INT4-T5", "W8A8")
TORCH_ENGINES = ("torch-fp32", "torch-bf16")
# INT4 for the T5 encoder only, W8A8 for the transformer only (their other parts are INT8's)
ENGINES = (*TORCH_ENGINES, "ov-FP16", "ov-INT8", "ov-INT4-T5", "ov-W8A8")
ONLY_PART = {"ov-INT4-T5": "text_encoder", "ov-W8A8": "transformer"}
# W8A8's calibration: the FP16 pipeline's transformer inputs over this many shipped prompts, at this size (512²
# costs a fifth of 1024² per step; the statistics are per channel, so they carry over)
CALIBRATION_PROMPTS, CALIBRATION_SIZE = 4, 512
# (component, shape name) -> inputs: latent side and batch for the transformer, latent side for the VAE
SHAPES = {
    "text_encoder": {"120 tokens": None},
    "transformer": {"1024² b1": (128, 1), "1024² b2": (128, 2), "512² b1": (64, 1)},
    "vae_decoder": {"1024²": 128},
}
# The memory goals of a 16 GB laptop: (goal, GiB, the steps that measure it, in order of preference)
GOALS = (
    ("converting the whole LCM pipeline, anonymous memory", 12.0, ("convert pipeline, one process",)),
    ("INT8 variant: compile + generate", 12.0, ("pipeline INT8",)),
    ("FP16 variant: compile + generate", 24.0, ("pipeline FP16", "pipeline FP16, T5 on demand")),
)


# ------------------------------------------------------------------------------------------------------------
# Tasks: each runs in a child process and returns a JSON-able dict (with its peak memory added by the runner)
# ------------------------------------------------------------------------------------------------------------


def configs(quick: bool) -> dict[str, dict]:
    """The three configs: the real ones (``assets/pixart-xl-configs``), or the small model's."""
    import helpers

    if quick:
        return {"transformer": helpers.TINY_TRANSFORMER_CONFIG, "vae": helpers.TINY_VAE_CONFIG, "t5": helpers.TINY_T5_CONFIG}
    return helpers.full_size_configs()


def task_build(work: Path, quick: bool) -> dict:
    import torch

    import helpers

    c = configs(quick)
    start = time.perf_counter()
    # T5-XXL is built in bf16 (9.5 GB of memory instead of 19 GB) and stored in FP32 by the build itself: the
    # "upcast" step, kept for folders built before, then finds nothing to do.
    helpers.build_random_pipeline(work / "source", c["transformer"], c["vae"], c["t5"], text_encoder_dtype=torch.bfloat16)
    return {"seconds": time.perf_counter() - start}


def task_upcast(work: Path) -> dict:
    """Store the source's T5 in FP32, as the real checkpoint is (it was built in bf16 to halve building's memory)."""
    import helpers

    folder = work / "source" / "text_encoder"
    start = time.perf_counter()
    if helpers.stored_dtypes(folder) != {"F32"}:
        with helpers.atomic_folder(folder) as tmp:  # read from the bf16 folder, then swapped in
            helpers.upcast_checkpoint(folder, tmp)
    return {"seconds": time.perf_counter() - start}


def task_convert(work: Path, part: str) -> dict:
    import helpers

    seconds = helpers.convert_pipeline(work / "source", work / "FP16", parts=(part,), progress=lambda m: None)
    return {"seconds": seconds.get(part)}


def task_convert_all(work: Path) -> dict:
    """The whole pipeline converted in one process, as notebook 1 does it (into a scratch folder, then removed)."""
    import helpers

    scratch = work / "FP16-one-process"
    shutil.rmtree(scratch, ignore_errors=True)
    seconds = helpers.convert_pipeline(work / "source", scratch, progress=lambda m: None)
    shutil.rmtree(scratch)
    return {"seconds": sum(seconds.values()), "parts": seconds}


def task_calibrate(work: Path, prompts: int, size: int) -> dict:
    """Record W8A8's calibration set (the FP16 pipeline's transformer inputs) into ``calibration.npz``."""
    import numpy as np

    import helpers

    start = time.perf_counter()
    calibration = helpers.collect_calibration_data(work / "FP16", helpers.calibration_prompts("benchmark", prompts), size, size)
    np.savez(work / "calibration.npz", **{f"{i}/{name}": value for i, sample in enumerate(calibration) for name, value in sample.items()})
    return {"seconds": time.perf_counter() - start, "samples": len(calibration), "size": size}


def load_calibration(path: Path) -> list[dict]:
    import numpy as np

    samples: dict[int, dict] = {}
    with np.load(path) as stored:
        for key in stored.files:
            index, name = key.split("/", 1)
            samples.setdefault(int(index), {})[name] = stored[key]
    return [samples[i] for i in sorted(samples)]


def task_compress(work: Path, variant: str, part: str) -> dict:
    """Compress one part of the FP16 variant into ``variant``; the folder is marked finished once all parts are in."""
    import helpers

    start = time.perf_counter()
    if not helpers.is_part_converted(work / variant, part):
        settings = helpers.COMPRESSION_RECIPES[variant][part]
        calibration = load_calibration(work / "calibration.npz") if helpers.needs_calibration({part: settings}) else None
        helpers.compress_part(work / "FP16", work / variant, part, settings, calibration)
    helpers.finish_variant(work / "FP16", work / variant, {"variant": variant, "compression": helpers.COMPRESSION_RECIPES[variant]})
    return {"seconds": time.perf_counter() - start}


def task_pipeline(work: Path, variant: str, cache: str | None, on_demand: bool = False) -> dict:
    """Compile a whole variant and make one 1024² LCM picture; with ``cache``, compile only, filling or reading it.

    OpenVINO's CPU plugin prepares (decompresses, repacks) the weights at the first inference, not at compile time:
    the cold picture's time includes that, and its peak memory is the variant's in use.
    """
    import helpers

    cache_dir = work / "cache" / variant
    start = time.perf_counter()
    config = {"CACHE_DIR": str(cache_dir)} if cache else {}
    pipe = helpers.OVPixArtAlphaPipeline.from_variant(work / variant, "CPU", config, low_memory=on_demand)
    result = {"compile_seconds": time.perf_counter() - start}
    if cache == "cached":  # the cache holds the compiled models (GB at full size): measured, then freed
        result["cache_gib"] = helpers.folder_size_mb(cache_dir) * 1e6 / 1024**3
        shutil.rmtree(cache_dir)
    if cache:
        return result
    pipe.set_progress_bar_config(disable=True)
    image, seconds = helpers.generate(pipe, helpers.EXAMPLE_PROMPTS[0], recipe=helpers.LCM_RECIPE, height=1024, width=1024)
    return {**result, "image_seconds": seconds, "image_size": list(image.size)}


def _inputs(component: str, shape, config, dtype):
    import torch

    torch.manual_seed(0)
    if component == "text_encoder":
        return {"input_ids": torch.randint(3, 400, (1, 120)), "attention_mask": torch.ones(1, 120, dtype=torch.long)}
    if component == "vae_decoder":
        return {"latent_sample": torch.randn(1, 4, shape, shape, dtype=dtype)}
    side, batch = shape
    return {
        "hidden_states": torch.randn(batch, 4, side, side, dtype=dtype),
        "encoder_hidden_states": torch.randn(batch, 120, config.caption_channels, dtype=dtype),
        "encoder_attention_mask": torch.ones(batch, 120, dtype=torch.long),
        "timestep": torch.full((batch,), 999.0, dtype=dtype),
        "added_cond_kwargs": {
            "resolution": torch.tensor([[side * 8.0, side * 8.0]], dtype=dtype).repeat(batch, 1),
            "aspect_ratio": torch.ones(batch, 1, dtype=dtype),
        },
    }


def _call(component: str, model, inputs):
    if component == "text_encoder":
        return model(inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    if component == "vae_decoder":
        return model.decode(inputs["latent_sample"], return_dict=False)[0]
    return model(**inputs, return_dict=False)[0]


def task_latency(work: Path, engine: str, component: str, runs: int, warmup: int) -> dict:
    """Median seconds of one call per shape; for PyTorch fp32's transformer also the FLOPs of one call."""
    import openvino as ov
    import torch

    import helpers

    if engine in TORCH_ENGINES:
        dtype = torch.float32 if engine == "torch-fp32" else torch.bfloat16
        model = helpers.load_torch_part(work / "source", component, dtype=dtype)
    else:
        dtype = torch.float32
        cls = {"text_encoder": helpers.OVTextEncoder, "transformer": helpers.OVTransformer, "vae_decoder": helpers.OVVaeDecoder}[component]
        model = cls(work / engine.removeprefix("ov-") / component, ov.Core(), "CPU")
    result = {}
    for name, shape in SHAPES[component].items():
        inputs = _inputs(component, shape, model.config, dtype)
        with torch.no_grad():
            for _ in range(warmup):
                _call(component, model, inputs)
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                _call(component, model, inputs)
                seconds.append(time.perf_counter() - start)
            entry = helpers.latency_summary(seconds)
            if engine == "torch-fp32" and component == "transformer":
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    _call(component, model, inputs)
                entry["flops"] = counter.get_total_flops()
        result[name] = entry
    return result


def task_side_by_side(work: Path, variants: list[str], runs: int, warmup: int) -> dict:
    """One 1024² transformer step of each variant, timed in turns in one process, and where its time goes.

    The variants run alternately (A, B, A, B …) so that a slower or faster spell of the machine hits both alike.
    Each is compiled with ``PERF_COUNT``; the last run's per-node times are summed by operation type and by the
    kernel OpenVINO chose (its ``exec_type``, e.g. ``brgemm_avx2_I8``).
    """
    import openvino as ov
    import torch

    import helpers

    models = {v: helpers.OVTransformer(work / v / "transformer", ov.Core(), "CPU", {"PERF_COUNT": True}) for v in variants}
    inputs = _inputs("transformer", SHAPES["transformer"]["1024² b1"], next(iter(models.values())).config, torch.float32)
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    outputs = {}
    for turn in range(warmup + runs):
        for variant, model in models.items():
            start = time.perf_counter()
            outputs[variant] = _call("transformer", model, inputs)
            if turn >= warmup:
                seconds[variant].append(time.perf_counter() - start)
    result = {}
    for variant, model in models.items():
        by_type, by_kernel = Counter(), Counter()
        for info in model.request.profiling_info:
            ms = info.real_time.total_seconds() * 1e3
            by_type[info.node_type] += ms
            by_kernel[f"{info.node_type} {info.exec_type}"] += ms
        result[variant] = {**helpers.latency_summary(seconds[variant]), "ms by op type": dict(by_type.most_common(12)),
                           "ms by kernel": dict(by_kernel.most_common(12))}
    first, *rest = variants
    for variant in rest:
        result[variant]["speed-up"] = result[first]["median"] / result[variant]["median"]
        result[variant]["cosine vs " + first] = helpers.cosine_similarity(outputs[first], outputs[variant])
    return result


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


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


TASKS = {"build": task_build, "upcast": task_upcast, "convert": task_convert, "convert_all": task_convert_all, "calibrate": task_calibrate,
         "compress": task_compress, "pipeline": task_pipeline, "latency": task_latency, "side_by_side": task_side_by_side, "matmul": task_matmul_peak}


def run_child(task: str, kwargs: dict) -> None:
    """In the child process: run one task under the memory sampler and print its result as JSON."""
    from memory import PeakMemory

    with PeakMemory() as memory:
        result = TASKS[task](**kwargs)
    print("RESULT " + json.dumps({**result, "memory": memory.report()}))


# ------------------------------------------------------------------------------------------------------------
# The plan, the runner, and the report
# ------------------------------------------------------------------------------------------------------------


def bf16_instructions() -> list[str]:
    """The CPU's bfloat16 instruction sets (AVX512-BF16, AMX-BF16): without them PyTorch's bf16 is emulated."""
    import helpers

    return sorted(helpers.cpu_flags() & {"avx512_bf16", "amx_bf16"})


def plan(only: set[str], engines: set[str], quick: bool, runs: int, warmup: int) -> list[tuple[str, str, dict]]:
    """(key, task, arguments) in the order they must run.

    PyTorch bf16 is left out on CPUs without bf16 instructions: its matrix multiply is then emulated, hundreds of
    times slower than fp32 (the "matmul peak" step measures it), and a full-size step would take hours.
    """
    if not bf16_instructions():
        engines = engines - {"torch-bf16"}
    steps = [("build", "build", {"quick": quick}), ("upcast T5 checkpoint", "upcast", {}), ("matmul peak", "matmul", {"side": 512 if quick else 2048})]
    steps += [(f"convert {part}", "convert", {"part": part}) for part in PARTS if part in only]
    if "transformer" in only:
        steps.append(("calibrate W8A8", "calibrate", {"prompts": CALIBRATION_PROMPTS, "size": 64 if quick else CALIBRATION_SIZE}))
    steps += [(f"compress {variant} {part}", "compress", {"variant": variant, "part": part}) for variant in VARIANTS[1:] for part in PARTS if part in only]
    for variant in VARIANTS:
        steps += [
            (f"pipeline {variant}", "pipeline", {"variant": variant, "cache": None}),
            (f"pipeline {variant} fill cache", "pipeline", {"variant": variant, "cache": "fill"}),
            (f"pipeline {variant} cached", "pipeline", {"variant": variant, "cache": "cached"}),
        ]
    # FP16 weights are held in f32 on CPUs without bf16: T5-XXL alone is then 18 GiB, so it is also run on demand
    steps.insert(steps.index(("pipeline INT8", "pipeline", {"variant": "INT8", "cache": None})),
                 ("pipeline FP16, T5 on demand", "pipeline", {"variant": "FP16", "cache": None, "on_demand": True}))
    for component in PARTS:
        if component not in only:
            continue
        for engine in ENGINES:
            if engine in engines and ONLY_PART.get(engine, component) == component:
                steps.append((f"latency {engine} {component}", "latency", {"engine": engine, "component": component, "runs": runs, "warmup": warmup}))
    if "transformer" in only:
        steps.append(("W8A8 vs FP16 side by side", "side_by_side", {"variants": ["FP16", "W8A8"], "runs": runs, "warmup": warmup}))
    steps.append(("convert pipeline, one process", "convert_all", {}))
    if only != set(PARTS):  # the whole-pipeline steps need every part
        steps = [step for step in steps if step[1] not in ("pipeline", "convert_all")]
    return steps


def run(results_path: Path, work: Path, steps, timeout: float) -> dict:
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.setdefault("machine", machine())
    for key, task, kwargs in steps:
        if key in results.get("steps", {}):
            print(f"{key}: done earlier, kept")
            continue
        print(f"{key} ...", flush=True)
        start = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--child", task, json.dumps({"work": str(work), **kwargs})],
            capture_output=True, text=True, timeout=timeout,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode != 0 or not lines:
            outcome = {"error": f"exit {child.returncode}" + (" (killed: out of memory?)" if child.returncode in (-9, 137) else ""), "log": child.stderr[-2000:]}
        else:
            outcome = json.loads(lines[-1].removeprefix("RESULT "))
        outcome["wall_seconds"] = time.perf_counter() - start
        results.setdefault("steps", {})[key] = outcome
        results_path.write_text(json.dumps(results, indent=1))
        print(f"{key}: {json.dumps(outcome)[:300]}", flush=True)
    return results


def machine() -> dict:
    import openvino as ov
    import torch

    core = ov.Core()
    return {
        "cpu": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "bf16_instructions": bf16_instructions(),
        "openvino_default_precision": core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(),
        "openvino": ov.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def derived(results: dict) -> dict:
    """Whole-image times per engine (LCM: encode + 4 steps + decode; standard: encode ×2 + 20 guided steps + decode)."""
    steps = results.get("steps", {})

    def median(engine, component, shape):
        entry = steps.get(f"latency {engine} {component}", {}).get(shape)
        return entry["median"] if entry else None

    engines = {
        "PyTorch fp32": ("torch-fp32",) * 3,
        "PyTorch bf16": ("torch-bf16",) * 3,
        "OpenVINO FP16": ("ov-FP16",) * 3,
        "OpenVINO INT8": ("ov-INT8",) * 3,
        "OpenVINO INT4-T5": ("ov-INT4-T5", "ov-INT8", "ov-INT8"),
        "OpenVINO W8A8": ("ov-INT8", "ov-W8A8", "ov-INT8"),
    }
    table = {}
    for name, (t5, transformer, vae) in engines.items():
        encode, step1, step2, decode = median(t5, "text_encoder", "120 tokens"), median(transformer, "transformer", "1024² b1"), median(transformer, "transformer", "1024² b2"), median(vae, "vae_decoder", "1024²")
        row = {"T5 encode s": encode, "step 1024² b1 s": step1, "step 1024² b2 s": step2, "step 512² b1 s": median(transformer, "transformer", "512² b1"), "VAE 1024² s": decode}
        if None not in (step1, decode):
            row["LCM image s"] = (encode or 0) + 4 * step1 + decode
        if None not in (step2, decode):
            row["standard image s"] = 2 * (encode or 0) + 20 * step2 + decode
        flops = steps.get("latency torch-fp32 transformer", {}).get("1024² b1", {}).get("flops")
        if flops and step1:
            row["step TFLOP/s"] = flops / step1 / 1e12
        table[name] = row
    base = table["PyTorch fp32"]
    for row in table.values():
        for key in ("LCM image s", "standard image s"):
            if row.get(key) and base.get(key):
                row[f"{key.split()[0]} vs fp32"] = base[key] / row[key]
    return table


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; OpenVINO {m['openvino']} (CPU default "
             f"precision {m['openvino_default_precision']}), PyTorch {m['torch']}; {m['date']}.", ""]
    table = derived(results)
    columns = ["T5 encode s", "step 1024² b1 s", "step 1024² b2 s", "step 512² b1 s", "VAE 1024² s", "LCM image s", "standard image s", "LCM vs fp32", "step TFLOP/s"]
    lines += ["| engine | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    if any(row.get("T5 encode s") is None and row.get("LCM image s") for row in table.values()):
        lines += ["", "Image times leave out the T5 encode where its column has no figure."]
    peak = results.get("steps", {}).get("matmul peak", {}).get("tflops")
    if peak:
        side = results["steps"]["matmul peak"]["side"]
        lines += ["", f"Matrix-multiply peak (PyTorch, {side}²): bf16 {peak['bf16']:.3g} TFLOP/s, fp32 {peak['fp32']:.3g} TFLOP/s."]
    if not m.get("bf16_instructions", bf16_instructions()):
        lines += ["", "PyTorch bf16 not run: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so PyTorch emulates "
                  "bf16 matrix multiplies (see the peak above); a full-size step would take hours."]
    side = results.get("steps", {}).get("W8A8 vs FP16 side by side", {})
    if "W8A8" in side:
        lines += ["", "Transformer step at 1024², batch 1: FP16 and W8A8 timed in turns, in one process "
                  "(where the time goes: OpenVINO's per-node profile, summed by operation type).", "",
                  "| variant | median s | speed-up | output cosine vs FP16 | ms by op type (top 5) |", "|---|---|---|---|---|"]
        for variant in ("FP16", "W8A8"):
            row = side[variant]
            ops = ", ".join(f"{name} {ms:.0f}" for name, ms in list(row["ms by op type"].items())[:5])
            cosine = row.get("cosine vs FP16")
            lines.append(f"| {variant} | {row['median']:.3g} | {_fmt(row.get('speed-up'))} | {'—' if cosine is None else f'{cosine:.6f}'} | {ops} |")
    lines += ["", "| memory goal | GiB | measured: anon / total GiB |", "|---|---|---|"]
    for goal, limit, keys in GOALS:
        measured = []
        for key in keys:
            step = results.get("steps", {}).get(key)
            if step and "memory" in step:
                mem = step["memory"]
                ok = "meets it" if mem["anon_gib"] <= limit else "misses it"
                measured.append(f"{key}: {mem['anon_gib']:.1f} / {mem['total_gib']:.1f} ({ok})")
            elif step:
                measured.append(f"{key}: {step.get('error', 'failed')}")
        lines.append(f"| {goal} | ≤ {limit:g} | {'; '.join(measured) or 'not measured'} |")
    lines += ["", "| step | seconds | peak anon GiB | peak file GiB | peak total GiB | note |", "|---|---|---|---|---|---|"]
    order = [key for key, _, _ in plan(set(PARTS), set(ENGINES), False, 1, 1)]
    steps = results.get("steps", {})
    for key in sorted(steps, key=lambda k: order.index(k) if k in order else len(order)):
        step = steps[key]
        if key.startswith("latency") or key == "matmul peak":
            continue
        mem = step.get("memory", {})
        seconds = step.get("seconds") or step.get("image_seconds") or step.get("compile_seconds")
        note = step.get("error", "")
        if "compile_seconds" in step:
            note = f"compile {step['compile_seconds']:.1f} s" + (f", image {step['image_seconds']:.1f} s" if "image_seconds" in step else "")
        lines.append(f"| {key} | {_fmt(seconds)} | {_fmt(mem.get('anon_gib'))} | {_fmt(mem.get('file_gib'))} | {_fmt(mem.get('total_gib'))} | {note} |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = derived(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key in zip(axes, ("step 1024² b1 s", "VAE 1024² s")):
        names = [n for n, row in table.items() if row.get(key)]
        ax.barh(names, [table[n][key] for n in names], color="#1f77b4")
        ax.set_xlabel("seconds")
        ax.set_title(key.replace(" s", ""))
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small model, one timed run: a smoke test")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="components to measure")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to time")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 3; quick: 1)")
    parser.add_argument("--work", type=Path, default=None, help="where models are built (default: model/benchmark[-quick])")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per step")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, kwargs = args.child[0], json.loads(args.child[1])
        kwargs["work"] = Path(kwargs["work"])
        return run_child(task, kwargs)

    import helpers

    name = "quick" if args.quick else "full"
    work = args.work or helpers.MODEL_ROOT / f"benchmark-{name}"
    runs = args.runs or (1 if args.quick else 3)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / f"{name}.json"
    results = run(results_path, work, plan(set(args.only), set(args.engines), args.quick, runs, warmup=1), args.timeout)
    (args.out / f"{name}.md").write_text(markdown(results))
    chart(results, args.out / f"{name}.png")
    print(f"Results: {results_path}, {results_path.with_suffix('.md')}, {results_path.with_suffix('.png')}")
    if args.quick:
        shutil.rmtree(work / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
