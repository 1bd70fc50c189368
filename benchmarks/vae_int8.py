"""The VAE decoder with INT8 activations: which convolutions can take them and keep the picture.

    python benchmarks/vae_int8.py --model model/pixart-xl-dpm-random      # full-size VAE (random weights)
    python benchmarks/vae_int8.py --model model/shapes                    # the shipped shapes model's VAE

NNCF's ``quantize`` (INT8 weights and activations, bias correction off) is calibrated on the FP16 pipeline's own
final latents at ``--side`` (512²: a 1024² calibration does not fit 24 GiB) and applied with the decoder's blocks
kept in float, one choice at a time (``KEEP_FLOAT``, from all-INT8 to only the lowest resolutions in INT8). Each
choice's decode is compared with the FP16 IR's on other latents (PSNR, dB), at ``--side`` and at ``--check-side``
(1024²), and timed against it in turns at ``--check-side``. Results: ``results/vae-int8-<model>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.inputs import sample_with
from benchmarks.runner import RESULTS, in_child, machine_line, save_results, timed_in_turns
from helpers.machine import machine
from helpers.settings import LCM_RECIPE, MODEL_ROOT

# choice -> the decoder's modules kept in float (regular expressions over OpenVINO node names); the rest INT8.
# The up blocks run at rising resolution (up_blocks.3 at the picture's full size): each holds about a quarter of the FLOPs.
KEEP_FLOAT = {
    "all INT8": [],
    "float: conv_out": [r".*decoder\.conv_out.*"],
    "float: up_blocks.3, conv_out": [r".*decoder\.up_blocks\.3\..*", r".*decoder\.conv_out.*"],
    "float: up_blocks.2-3, conv_out": [r".*decoder\.up_blocks\.[23]\..*", r".*decoder\.conv_out.*"],
    "INT8: mid block and up_blocks.0 only": [r".*decoder\.up_blocks\.[123]\..*", r".*decoder\.conv_out.*"],
}
PROMPTS = ("a lighthouse on a rocky coast", "a red circle on a blue background", "a bowl of fruit on a table",
           "a city street at night in the rain", "a portrait of an old sailor", "a green triangle above a yellow square")


def task_final_latents(work: Path, folder: str, side: int, prompts: list[str], path: str) -> dict:
    """The decoder's inputs the FP16 pipeline makes for ``prompts`` (its LCM recipe, 4 steps), one per prompt, saved
    to ``path``. One part in memory at a time (T5-XXL compiled takes 10 GB): run in its own process."""
    import torch

    from helpers.pipeline import OVPixArtPipeline

    pipe = OVPixArtPipeline.from_pretrained(Path(folder), "CPU", low_memory=True)
    sample_with(pipe, LCM_RECIPE)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.vae.config["scaling_factor"]
    latents = {}
    for seed, prompt in enumerate(prompts):
        out = pipe(prompt, height=side, width=side, output_type="latent", generator=torch.Generator().manual_seed(seed))
        latents[f"latent_{seed}"] = (out.images / scale).numpy()  # what the pipeline hands vae.decode
    np.savez(path, **latents)
    return {"latents": len(latents)}


def cached_latents(folder: Path, side: int, prompts, path: Path) -> list[np.ndarray]:
    """:func:`task_final_latents`, computed once in a child process (its memory freed with it) and kept in ``path``."""
    if not path.is_file():
        outcome = in_child(path.parent, timeout=3 * 3600)("vae_latents", {"folder": str(folder), "side": side, "prompts": list(prompts), "path": str(path)})
        if "error" in outcome:
            raise RuntimeError(f"The final latents were not made: {outcome['error']}\n{outcome.get('log', '')}")
    with np.load(path) as stored:
        return [stored[f"latent_{index}"] for index in range(len(prompts))]


def quantized(ir: Path, calibration: list[np.ndarray], keep_float: list[str]):
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    model = ov.Core().read_model(ir)
    return nncf.quantize(
        model,
        nncf.Dataset([{"latent_sample": latent} for latent in calibration]),
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=keep_float, validate=False),
        advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True),
    )


def psnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """PSNR of decoded pictures, their [-1, 1] output range mapped to [0, 1] as the pipeline maps it."""
    from helpers.comparison import psnr

    return psnr(np.clip((reference + 1) / 2, 0, 1), np.clip((other + 1) / 2, 0, 1))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="folder with the FP16 variant folder (FP16/)")
    parser.add_argument("--side", type=int, default=512, help="calibration side")
    parser.add_argument("--check-side", type=int, default=1024, help="side the choices are checked and timed at")
    parser.add_argument("--calibration", type=int, default=4, help="latents to calibrate on")
    parser.add_argument("--runs", type=int, default=3, help="timed decodes per choice at --check-side")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    import openvino as ov

    args = arguments()
    folder, start = args.model / "FP16", time.perf_counter()
    ir = folder / "vae_decoder" / "openvino_model.xml"
    work = MODEL_ROOT / f"vae-int8-{args.model.name}"  # git-ignored, as every folder under model/ but the shipped one
    work.mkdir(parents=True, exist_ok=True)
    latents = cached_latents(folder, args.side, PROMPTS[: args.calibration + 2], work / f"latents-{args.side}.npz")
    check = cached_latents(folder, args.check_side, PROMPTS[-1:], work / f"latents-{args.check_side}.npz")[0]
    calibration, held_out = latents[: args.calibration], latents[args.calibration :]
    core = ov.Core()
    compiled = {"FP16": core.compile_model(ir, "CPU")}
    results = {"machine": machine(), "side": args.side, "check_side": args.check_side, "calibration": len(calibration),
               "latents_seconds": time.perf_counter() - start, "choices": {}}
    for choice, keep_float in KEEP_FLOAT.items():
        start = time.perf_counter()
        compiled[choice] = core.compile_model(quantized(ir, calibration, keep_float), "CPU")
        results["choices"][choice] = {"keep_float": keep_float, "quantize_seconds": time.perf_counter() - start,
                                      **distances(compiled["FP16"], compiled[choice], held_out, check, args)}
        print(choice, json.dumps(results["choices"][choice]), flush=True)
    seconds, _ = timed_in_turns({name: partial(model, check) for name, model in compiled.items()}, args.runs)
    results["decode_seconds"] = {name: statistics.median(times) for name, times in seconds.items()}
    path = args.out / f"vae-int8-{args.model.name}.json"
    save_results(path, results)
    path.with_suffix(".md").write_text(markdown(results))
    print(path.with_suffix(".md").read_text())


def distances(fp16, choice, held_out: list[np.ndarray], check: np.ndarray, args) -> dict[str, float]:
    """A choice's PSNR against the FP16 IR: the mean over the held-out latents at ``--side``, the check latent's."""
    return {f"psnr_db_{args.side}": statistics.mean(psnr_db(fp16(latent)[0], choice(latent)[0]) for latent in held_out),
            f"psnr_db_{args.check_side}": psnr_db(fp16(check)[0], choice(check)[0])}


def markdown(results: dict) -> str:
    side, check = results["side"], results["check_side"]
    fp16 = results["decode_seconds"]["FP16"]
    lines = [
        "# The VAE decoder with INT8 activations\n",
        machine_line(results["machine"]) + "\n",
        f"Calibrated on {results['calibration']} of the FP16 pipeline's final latents at {side}²; PSNR against the FP16 IR's "
        f"decode of other latents; decode timed at {check}² in turns with FP16 ({fp16:.2f} s).\n",
        f"| choice | PSNR {side}² dB | PSNR {check}² dB | decode {check}² s | vs FP16 |",
        "|---|---|---|---|---|",
    ]
    for choice, value in results["choices"].items():
        seconds = results["decode_seconds"][choice]
        lines.append(f"| {choice} | {value[f'psnr_db_{side}']:.1f} | {value[f'psnr_db_{check}']:.1f} | {seconds:.2f} | {fp16 / seconds:.2f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
