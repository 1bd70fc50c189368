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
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helpers.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
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


def final_latents(folder: Path, side: int, prompts) -> list[np.ndarray]:
    """The decoder's inputs the FP16 pipeline makes for ``prompts`` (its LCM recipe, 4 steps), one per prompt.

    One part in memory at a time (T5-XXL compiled takes 10 GB): run it in its own process, as ``main`` does.
    """
    import torch
    from diffusers import LCMScheduler

    from helpers.pipeline import OVPixArtPipeline

    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", low_memory=True)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.vae.config["scaling_factor"]
    latents = []
    for seed, prompt in enumerate(prompts):
        out = pipe(prompt, height=side, width=side, output_type="latent", generator=torch.Generator().manual_seed(seed))
        latents.append((out.images / scale).numpy())  # what the pipeline hands vae.decode
    return latents


def cached_latents(folder: Path, side: int, prompts, path: Path) -> list[np.ndarray]:
    """:func:`final_latents`, computed once in a child process (its memory freed with it) and kept in ``path``."""
    if not path.is_file():
        child = ["--model", str(folder.parent), "--latents", str(folder), str(side), json.dumps(list(prompts)), str(path)]
        subprocess.run([sys.executable, __file__, *child], check=True)
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
    """PSNR of decoded pictures, in the pipeline's [-1, 1] output range mapped to [0, 1]."""
    a, b = np.clip((reference + 1) / 2, 0, 1), np.clip((other + 1) / 2, 0, 1)
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12)))


def main() -> None:
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="folder with the FP16 variant folder (FP16/)")
    parser.add_argument("--side", type=int, default=512, help="calibration side")
    parser.add_argument("--check-side", type=int, default=1024, help="side the choices are checked and timed at")
    parser.add_argument("--calibration", type=int, default=4, help="latents to calibrate on")
    parser.add_argument("--runs", type=int, default=3, help="timed decodes per choice at --check-side")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--latents", nargs=4, help=argparse.SUPPRESS)  # the child: FOLDER SIDE PROMPTS_JSON NPZ
    args = parser.parse_args()
    if args.latents:
        folder, side, prompts, path = args.latents
        latents = final_latents(Path(folder), int(side), json.loads(prompts))
        np.savez(path, **{f"latent_{index}": latent for index, latent in enumerate(latents)})
        return
    folder = args.model / "FP16"
    ir = folder / "vae_decoder" / "openvino_model.xml"
    start = time.perf_counter()
    from helpers.settings import MODEL_ROOT

    work = MODEL_ROOT / f"vae-int8-{args.model.name}"  # git-ignored, as every folder under model/ but the shipped one
    work.mkdir(parents=True, exist_ok=True)
    latents = cached_latents(folder, args.side, PROMPTS[: args.calibration + 2], work / f"latents-{args.side}.npz")
    check = cached_latents(folder, args.check_side, PROMPTS[-1:], work / f"latents-{args.check_side}.npz")
    calibration, held_out = latents[: args.calibration], latents[args.calibration :]
    core = ov.Core()
    fp16 = core.compile_model(ir, "CPU")
    reference = [fp16(latent)[0] for latent in held_out]
    check_reference = fp16(check[0])[0]
    results = {"machine": machine(), "side": args.side, "check_side": args.check_side, "calibration": len(calibration),
               "latents_seconds": time.perf_counter() - start, "choices": {}}
    compiled = {"FP16": fp16}
    for choice, keep_float in KEEP_FLOAT.items():
        start = time.perf_counter()
        model = quantized(ir, calibration, keep_float)
        compiled[choice] = core.compile_model(model, "CPU")
        results["choices"][choice] = {
            "keep_float": keep_float,
            "quantize_seconds": time.perf_counter() - start,
            f"psnr_db_{args.side}": statistics.mean(psnr_db(r, compiled[choice](latent)[0]) for r, latent in zip(reference, held_out)),
            f"psnr_db_{args.check_side}": psnr_db(check_reference, compiled[choice](check[0])[0]),
        }
        print(choice, json.dumps(results["choices"][choice]), flush=True)
    seconds = {name: [] for name in compiled}
    for _ in range(args.runs + 1):  # in turns; the first turn warms up
        for name, model in compiled.items():
            tick = time.perf_counter()
            model(check[0])
            seconds[name].append(time.perf_counter() - tick)
    results["decode_seconds"] = {name: statistics.median(times[1:]) for name, times in seconds.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vae-int8-{args.model.name}.json"
    path.write_text(json.dumps(results, indent=1))
    path.with_suffix(".md").write_text(markdown(results))
    print(path.with_suffix(".md").read_text())


def markdown(results: dict) -> str:
    m, side, check = results["machine"], results["side"], results["check_side"]
    fp16 = results["decode_seconds"]["FP16"]
    lines = [
        "# The VAE decoder with INT8 activations\n",
        f"{m['cpu']} ({m.get('cpu_model', '?')}; {', '.join(m.get('instructions', []))}), {m['cores']} cores; OpenVINO "
        f"{m['openvino']}, default precision {m['openvino_default_precision']}; {m['date']}.\n",
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
