"""LoRA's cost in a full-size step: the transformer with no adapter, with a run-time adapter (rank 16, rank 64) and
with a rank-16 adapter fused into its weights, timed in turns in one process; and what switching adapters costs.

    python benchmarks/lora.py                    # PixArt-XL-2-1024-MS shapes (random weights), 1024², batch 1
    python benchmarks/lora.py --quick            # the tiny model at 256²: the same code in seconds (CI's smoke test)

The adapters are random, on every attention and feed-forward linear (PixArt's LoRA script's targets), through the
project's own ``helpers.lora.Adapters`` on the OpenVINO graph. Results: ``results/lora-step-<model>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.inputs import example_inputs
from benchmarks.runner import RESULTS, load_results, machine_line, save_results, timed_in_turns

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
           "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
RANKS = (16, 64)


def transformer_ir(work: Path, preset: str) -> Path:
    """The FP16 transformer IR of a random PixArt transformer of ``preset`` (``full``: PixArt-XL), converted once."""
    ir = work / "transformer" / "openvino_model.xml"
    if not ir.is_file():
        import torch
        from diffusers import PixArtTransformer2DModel

        from helpers.building import random_configs
        from helpers.conversion import convert_part

        torch.manual_seed(0)
        convert_part(PixArtTransformer2DModel.from_config(random_configs(preset)[0]), "transformer", work)
    return ir


def random_adapter(shapes: dict[str, tuple[int, int]], rank: int, seed: int) -> dict:
    """A random rank-``rank`` adapter on every targeted layer, scaled like a trained one (a small update)."""
    from helpers.lora_files import LoraLayer

    rng = np.random.default_rng(seed)
    layers = {}
    for layer, (out_features, in_features) in shapes.items():
        if layer.endswith(TARGETS):
            down = rng.standard_normal((rank, in_features), dtype=np.float32) / np.sqrt(in_features)
            layers[layer] = LoraLayer(down, rng.standard_normal((out_features, rank), dtype=np.float32) * 1e-2, float(rank))
    return {"transformer": layers}


def compiled_ways(ir: Path, adapters_of: dict) -> dict:
    """Per way, the compiled transformer (first output only) and the adapter inputs it is fed, with compile seconds."""
    import openvino as ov

    from helpers.parts import sample_only

    core, ways = ov.Core(), {}
    for name, adapters in adapters_of.items():
        model = sample_only(core.read_model(ir))
        if adapters is not None and adapters.changes("transformer"):
            model = adapters.edit(model, "transformer")
        start = time.perf_counter()
        compiled = core.compile_model(model, "CPU")
        feed = adapters.feed("transformer") if adapters is not None and adapters.branched("transformer") else {}
        ways[name] = (compiled, feed, time.perf_counter() - start)
    return ways


def adapter_sets(ir: Path) -> dict:
    """The ways to time: none, run-time rank 16 and 64 (one compiled model with both loaded), rank 16 fused."""
    import openvino as ov

    from helpers.lora import Adapters
    from helpers.lora_graph import layer_shape, linear_layers

    shapes = {layer: layer_shape(node) for layer, node in linear_layers(ov.Core().read_model(ir)).items()}
    loaded = {f"rank {rank}": random_adapter(shapes, rank, seed=rank) for rank in RANKS}
    run_time = Adapters({"transformer": shapes}, loaded=dict(loaded), weights={"rank 16": 1.0})
    fused = Adapters({"transformer": shapes}, loaded={"rank 16": loaded["rank 16"]}, weights={}, fused={"rank 16": 1.0})
    return {"no adapter": None, "run-time": run_time, "fused rank 16": fused}


def switch_seconds(adapters, runs: int = 5) -> float:
    """What ``set_adapters`` costs beside the step: the active adapters' matrices stacked and scaled again."""
    seconds = []
    for turn in range(runs):
        adapters.weights = {f"rank {RANKS[turn % 2]}": 0.5 + turn / 10}
        adapters.changed()
        start = time.perf_counter()
        adapters.feed("transformer")
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def run(work: Path, preset: str, side: int, runs: int) -> dict:
    import openvino as ov
    import torch

    ir = transformer_ir(work, preset)
    inputs = example_inputs("transformer", {"side": side // 8, "batch": 1}, _config(ir), dtype=torch.float32)
    inputs = {name: value.numpy() for name, value in inputs.items()}
    sets = adapter_sets(ir)
    ways = compiled_ways(ir, sets)
    run_time = sets["run-time"]
    names = {n for port in ways["no adapter"][0].inputs for n in port.get_names()}
    base = {name: value for name, value in inputs.items() if name in names}
    calls = {"no adapter": lambda: ways["no adapter"][0](base)[0], "fused rank 16": lambda: ways["fused rank 16"][0](base)[0]}
    for rank in RANKS:
        run_time.weights = {f"rank {rank}": 1.0}
        run_time.changed()
        feed = dict(run_time.feed("transformer"))
        calls[f"run-time rank {rank}"] = lambda feed=feed: ways["run-time"][0](base | feed)[0]
    seconds, outputs = timed_in_turns(calls, runs)
    return {
        "side": side, "preset": preset, "openvino": ov.__version__,
        "step_seconds": {name: statistics.median(times) for name, times in seconds.items()},
        "all_seconds": seconds,
        "compile_seconds": {name: way[2] for name, way in ways.items()},
        "switch_seconds": switch_seconds(run_time),
        "fused_vs_run_time_max_difference": float(np.abs(outputs["fused rank 16"] - outputs["run-time rank 16"]).max()),
        "adapter_vs_none_max_difference": float(np.abs(outputs["run-time rank 16"] - outputs["no adapter"]).max()),
    }


def _config(ir: Path) -> SimpleNamespace:
    """The transformer's config, read as diffusers' configs are (attributes)."""
    return SimpleNamespace(**json.loads((ir.parent / "config.json").read_text()))


def report(results: dict) -> str:
    steps = results["step_seconds"]
    base = steps["no adapter"]
    lines = [f"# LoRA in a {results['preset']}-size step, {results['side']}², batch 1", "", machine_line(results["machine"]), "",
             "| transformer | step s | vs no adapter |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.3f} | {seconds / base - 1:+.1%} |" for name, seconds in steps.items()]
    lines += ["", f"Switching adapters (stacking and scaling the active matrices): {results['switch_seconds'] * 1e3:.1f} ms; "
              f"it compiles nothing. Compile: " + ", ".join(f"{k} {v:.1f} s" for k, v in results["compile_seconds"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny model at 256², 2 turns")
    parser.add_argument("--work", type=Path, default=Path("model/lora-benchmark"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    preset, side, runs = ("tiny", 256, 2) if args.quick else ("full", 1024, 3)
    path = args.out / f"lora-step-{preset}.json"
    results = load_results(path) | run(args.work / preset, preset, side, runs)
    save_results(path, results)
    path.with_suffix(".md").write_text(report(results))
    print(report(results))
    return results


if __name__ == "__main__":
    main()
