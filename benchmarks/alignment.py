"""Quality of a model's variants: the alignment score on the evaluation prompts, and PSNR/SSIM against FP16.

    python benchmarks/alignment.py --model shapes          # converts and compresses first if needed

For PyTorch (the diffusers folder) and each OpenVINO variant: the fraction of the evaluation pictures whose shape,
colour, place and background match the caption (``helpers.shapes.alignment_score``), and how far each variant's pictures
are from FP16's. Writes ``results/alignment-<model>.json``, ``.md`` and a picture grid ``.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.runner import RESULTS, machine_line, save_results
from helpers.schemes import COMPRESSION_SCHEMES, needs_calibration
from helpers.variants import VARIANTS, Variant, is_variant, variant_dir


def prepare_variants(model_id: str, variants: list[str]) -> None:
    """Convert and compress the model like notebooks 1 and 3 (each step skipped when already done)."""
    from helpers.compression import calibration_prompts, collect_calibration_data, compress_variant
    from helpers.conversion import convert_pipeline
    from helpers.sources import resolve_model_source

    fp16 = variant_dir(model_id, "FP16")
    convert_pipeline(resolve_model_source(model_id), fp16)
    for variant in variants:
        if variant == "FP16":
            continue
        folder, scheme = variant_dir(model_id, variant), COMPRESSION_SCHEMES[variant]
        calibration = None
        if needs_calibration(scheme) and not is_variant(folder):
            calibration = collect_calibration_data(fp16, calibration_prompts(model_id))
        compress_variant(fp16, folder, scheme, calibration=calibration)


def main() -> None:
    import numpy as np

    from helpers.comparison import alignment_of_variants, alignment_table, psnr, show_evaluation, ssim
    from helpers.machine import machine
    from helpers.settings import model_name
    from helpers.shapes import evaluation_scenes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="model id (default: shapes)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--prompts", type=int, default=64, help="evaluation prompts (at least 8)")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    prepare_variants(args.model, args.variants)
    evaluation = evaluation_scenes(args.prompts)
    start = time.perf_counter()
    scores, pictures = alignment_of_variants(args.model, args.variants, evaluation, device=args.device)
    table = alignment_table(scores)
    reference = pictures["FP16"]
    table["PSNR dB vs FP16"] = [float(np.mean([psnr(a, b) for a, b in zip(reference, pictures[name])])) for name in table.index]
    table["SSIM vs FP16"] = [float(np.mean([ssim(a, b) for a, b in zip(reference, pictures[name])])) for name in table.index]
    table = table.round(3)

    name = f"alignment-{model_name(args.model)}"
    results = {"machine": machine(), "model": args.model, "prompts": args.prompts, "scores": scores,
               "table": table.to_dict(orient="index"), "seconds": time.perf_counter() - start}
    save_results(args.out / f"{name}.json", results)
    (args.out / f"{name}.md").write_text(f"Model `{args.model}`, {args.prompts} evaluation prompts, {Variant.of(args.model, 'FP16').recipe} "
                                         f"(no negative prompt).\n\n{machine_line(results['machine'])}\n\n{table.to_markdown()}\n")
    figure = show_evaluation(pictures["PyTorch"], [scene for scene, _ in evaluation])
    figure.savefig(args.out / f"{name}.png", dpi=80, bbox_inches="tight")
    print(table.to_string())


if __name__ == "__main__":
    main()
