"""What a trained LoRA does to the shapes model's pictures: the alignment score on the new concept's prompts and on
the prompts the model already knew, without the adapter, at strength 0 and at strength 1, for PyTorch + peft and
each OpenVINO variant (the adapter at run time beside INT8 and W8A8 layers too).

    python benchmarks/lora_alignment.py                         # the shipped adapter, model/shapes/lora/ring
    python benchmarks/lora_alignment.py --adapter PATH --concept ring --prompts 32

Writes ``results/alignment-lora-<concept>.json``, ``.md`` and a grid ``.png`` of the adapter's concept pictures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.alignment import prepare_variants
from benchmarks.runner import RESULTS, machine_line, save_results

MODEL = "shapes"
STRENGTHS = {"base": None, "strength 0": 0.0, "strength 1": 1.0}


def evaluations(concept: str, prompts: int) -> dict:
    from helpers.shapes import concept_scenes, evaluation_scenes

    return {"concept": concept_scenes(concept, prompts), "known": evaluation_scenes(64)}


def pytorch_scores(adapter: Path, sets: dict) -> tuple[dict, list]:
    """diffusers + peft in f32, the adapter at strength 1: the reference the OpenVINO rows are read against."""
    from diffusers import PixArtAlphaPipeline

    from helpers.comparison import evaluate_alignment
    from helpers.reference import add_torch_adapters
    from helpers.settings import recipe_for
    from helpers.sources import resolve_model_source

    pipe = PixArtAlphaPipeline.from_pretrained(resolve_model_source(MODEL))
    add_torch_adapters(pipe.transformer, {"adapter": (adapter, 1.0)})
    results = {name: evaluate_alignment(pipe, scenes, recipe_for(pipe.scheduler)) for name, scenes in sets.items()}
    return {name: score for name, (score, _) in results.items()}, results["concept"][1]


def openvino_scores(variant: str, adapter: Path, sets: dict) -> dict:
    """One variant's scores on each set: without the adapter, and with it at each strength (switched, not compiled)."""
    from helpers.comparison import evaluate_alignment
    from helpers.pipeline import OVPixArtPipeline
    from helpers.variants import Variant

    pipe = OVPixArtPipeline.from_pretrained(Variant.of(MODEL, variant))
    pipe.load_lora_weights(adapter, adapter_name="adapter")
    scores = {}
    for label, strength in STRENGTHS.items():
        pipe.set_lora_enabled(strength is not None)
        pipe.set_adapters("adapter", strength or 0.0)
        for name, scenes in sets.items():
            scores[f"{label}, {name}"] = evaluate_alignment(pipe, scenes, pipe.recipe)[0]
    return scores


def rows(pytorch: dict, openvino: dict[str, dict]) -> dict[str, dict[str, float]]:
    """The table's rows: per engine and strength, the concept's and the known prompts' scores."""
    table = {"PyTorch + peft, strength 1": {"concept": pytorch["concept"]["overall"], "known": pytorch["known"]["overall"]}}
    for variant, scores in openvino.items():
        for label in STRENGTHS:
            table[f"OpenVINO {variant}, {label}"] = {name: scores[f"{label}, {name}"]["overall"] for name in ("concept", "known")}
    return table


def main() -> None:
    import pandas as pd

    from helpers.comparison import show_evaluation
    from helpers.lora import lora_dir
    from helpers.machine import machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, default=lora_dir(MODEL) / "ring")
    parser.add_argument("--concept", default="ring")
    parser.add_argument("--prompts", type=int, default=32, help="the concept's prompts (the known ones: 64)")
    parser.add_argument("--variants", nargs="+", default=["FP16", "INT8", "W8A8"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    prepare_variants(MODEL, args.variants)
    sets, start = evaluations(args.concept, args.prompts), time.perf_counter()
    pytorch, pictures = pytorch_scores(args.adapter, sets)
    openvino = {variant: openvino_scores(variant, args.adapter, sets) for variant in args.variants}
    table = pd.DataFrame.from_dict(rows(pytorch, openvino), orient="index").round(3)
    table.columns = [f"{args.concept} prompts ({args.prompts})", "known prompts (64)"]
    name = f"alignment-lora-{args.concept}"
    adapter = os.path.relpath(args.adapter)  # as the reader's checkout names it
    results = {"machine": machine(), "model": MODEL, "adapter": adapter, "concept": args.concept,
               "pytorch": pytorch, "openvino": openvino, "table": table.to_dict(orient="index"),
               "seconds": time.perf_counter() - start}
    save_results(args.out / f"{name}.json", results)
    (args.out / f"{name}.md").write_text(
        f"Model `{MODEL}` with the LoRA `{adapter}` ({args.concept}): the fraction of pictures whose shape, colour, "
        f"place and background are all right, at the model's recipe.\n\n{machine_line(results['machine'])}\n\n"
        f"{table.to_markdown()}\n")
    figure = show_evaluation(pictures, [scene for scene, _ in sets["concept"]])
    figure.savefig(args.out / f"{name}.png", dpi=80, bbox_inches="tight")
    print(table.to_string())


if __name__ == "__main__":
    main()
