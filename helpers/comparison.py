"""Comparison: pictures, latency, sizes and similarity of variants side by side."""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .pipeline import OVPixArtPipeline, generate
from .settings import SamplingRecipe
from .shapes import ATTRIBUTES, Scene, alignment_score, score_image
from .variants import Variant, VariantNotReadyError, as_variant, part_sizes_mb


def save_baseline(image: Image.Image, drawn_with: dict, folder: Path) -> Path:
    """Keep the PyTorch baseline image and what it was drawn with (prompt, seed, call arguments, seconds), for later
    notebooks to compare against."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "image.png")
    (folder / "drawn_with.json").write_text(json.dumps(drawn_with, indent=2))
    return folder


def load_baseline(folder: Path) -> tuple[Image.Image, dict]:
    """The baseline image and what it was drawn with, or a clear error if notebook 1 has not made them."""
    folder = Path(folder)
    if not (folder / "drawn_with.json").is_file():
        raise VariantNotReadyError(f"No PyTorch baseline at {folder}: run notebook 1 (01-convert) first.")
    return Image.open(folder / "image.png").convert("RGB"), json.loads((folder / "drawn_with.json").read_text())


def psnr(reference: Image.Image | np.ndarray, image: Image.Image | np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (integer pixels in 0–255, float pixels in 0–1)."""
    a, b = _as_unit_array(reference), _as_unit_array(image)
    if a.shape != b.shape:
        raise ValueError(f"Images differ in shape: {a.shape} vs {b.shape}.")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _as_unit_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    array = np.asarray(image)
    # integer pixels are 0–255, float pixels 0–1 (what diffusers' output_type="np" gives)
    return array.astype(np.float64) / 255.0 if np.issubdtype(array.dtype, np.integer) else array.astype(np.float64)


def size_table(before: Path, after: Path):
    """MB of weights per part and in total, before and after compression, and their ratio (a pandas DataFrame)."""
    import pandas as pd

    rows = pd.DataFrame({"MB before": part_sizes_mb(before), "MB after": part_sizes_mb(after)})
    rows.loc["total"] = rows.sum()
    rows["ratio"] = rows["MB before"] / rows["MB after"]
    return rows.round(3)


def ssim(reference: Image.Image | np.ndarray, image: Image.Image | np.ndarray) -> float:
    """Structural similarity (1 = identical) of two RGB images, computed per channel by scikit-image."""
    from skimage.metrics import structural_similarity

    a, b = _as_unit_array(reference), _as_unit_array(image)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def cosine_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Cosine of the angle between two tensors taken as flat vectors (1 = same direction)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def latency_summary(seconds: Iterable[float]) -> dict[str, float]:
    """Median and spread (min, max) of repeated timings, in seconds."""
    samples = np.asarray(list(seconds), dtype=np.float64)
    if samples.size == 0:
        raise ValueError("No timings to summarize: run the pipeline at least once after the warm-up.")
    return {"median": float(np.median(samples)), "min": float(samples.min()), "max": float(samples.max()), "runs": int(samples.size)}


@dataclass
class VariantRun:
    """What one variant produced on the comparison prompts, and how long it took."""

    variant: str
    images: list[Image.Image]
    latents: list[np.ndarray]
    text_embeddings: list[np.ndarray]
    pipeline_seconds: list[float]
    part_seconds: dict[str, list[float]]
    sizes_mb: dict[str, float]


def run_variant(
    variant: Variant | Path,
    prompts: Iterable[str],
    seeds: Iterable[int],
    device: str = "AUTO",
    ov_config: dict | None = None,
    runs: int = 3,
    warmup: int = 0,
    **kwargs: Any,
) -> VariantRun:
    """Compile one variant, make a picture per prompt and seed, then time ``runs`` generations after ``warmup``.

    The pictures per prompt already warm the pipeline up (OpenVINO prepares the weights at the first inference).

    One variant is compiled at a time and freed at the end, so comparing the real pipeline's variants never holds
    two in memory. The final latents come from the pipeline's step callback, the text embeddings from its
    ``encode_prompt``.
    """
    variant = as_variant(variant)
    pipe = OVPixArtPipeline.from_pretrained(variant, device, ov_config)
    pipe.set_progress_bar_config(disable=True)
    images, latents, embeddings = [], [], []
    prompts, seeds = list(prompts), list(seeds)
    for prompt, seed in zip(prompts, seeds):
        last = {}
        image, _ = generate(pipe, prompt, seed, callback=lambda step, t, x: last.update(latents=x), **kwargs)
        images.append(image)
        latents.append(last["latents"].numpy())
        embeddings.append(pipe.encode_prompt(prompt, do_classifier_free_guidance=False)[0].numpy())
    for _ in range(warmup):
        generate(pipe, prompts[0], seeds[0], **kwargs)
    parts = {"text encoder": pipe.text_encoder, "transformer step": pipe.transformer, "VAE decode": pipe.vae}
    for part in parts.values():
        part.seconds.clear()
    pipeline_seconds = [generate(pipe, prompts[0], seeds[0], **kwargs)[1] for _ in range(runs)]
    run = VariantRun(
        variant=variant.name,
        images=images,
        latents=latents,
        text_embeddings=embeddings,
        pipeline_seconds=pipeline_seconds,
        part_seconds={name: list(part.seconds) for name, part in parts.items()},
        sizes_mb=variant.part_sizes_mb(),
    )
    del pipe
    gc.collect()
    return run


def comparison_table(runs: list[VariantRun], reference: str = "FP16"):
    """One row per variant: size, latency (median and spread), and similarity to the reference variant."""
    import pandas as pd

    base = next(run for run in runs if run.variant == reference)
    rows = {}
    for run in runs:
        total = latency_summary(run.pipeline_seconds)
        rows[run.variant] = {
            "weights MB": sum(run.sizes_mb.values()),
            "size ratio": sum(base.sizes_mb.values()) / sum(run.sizes_mb.values()),
            "pipeline s (median)": total["median"],
            "pipeline s (min–max)": f"{total['min']:.2f}–{total['max']:.2f}",
            **{f"{name} ms": 1000 * latency_summary(seconds)["median"] for name, seconds in run.part_seconds.items()},
            "PSNR dB": float(np.mean([psnr(a, b) for a, b in zip(base.images, run.images)])),
            "SSIM": float(np.mean([ssim(a, b) for a, b in zip(base.images, run.images)])),
            "text cosine": float(np.mean([cosine_similarity(a, b) for a, b in zip(base.text_embeddings, run.text_embeddings)])),
            "latent cosine": float(np.mean([cosine_similarity(a, b) for a, b in zip(base.latents, run.latents)])),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    return table.round({"SSIM": 4, "text cosine": 6, "latent cosine": 6})


def show_grid(runs: list[VariantRun], prompts: Iterable[str], size: float = 3.0):
    """Pictures in a grid: one row per prompt, one column per variant."""
    import matplotlib.pyplot as plt

    prompts = list(prompts)
    fig, axes = plt.subplots(len(prompts), len(runs), figsize=(size * len(runs), size * len(prompts)), squeeze=False)
    for row, prompt in enumerate(prompts):
        for col, run in enumerate(runs):
            ax = axes[row][col]
            ax.imshow(run.images[row])
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(run.variant)
            if col == 0:
                ax.set_ylabel(prompt[:40] + ("…" if len(prompt) > 40 else ""), fontsize=8)
    fig.tight_layout()
    return fig


def plot_comparison(table, columns: Iterable[str] = ("weights MB", "pipeline s (median)", "PSNR dB")):
    """One bar chart per column of the comparison table, variants side by side."""
    import matplotlib.pyplot as plt

    columns = list(columns)
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = table[column].replace(np.inf, np.nan)
        ax.bar(table.index, values, color=["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(values)])
        ax.set_title(column)
    fig.tight_layout()
    return fig


def set_step_cache(pipe: OVPixArtPipeline, threshold: float | None) -> None:
    """The step cache on at ``threshold`` (None: off), and the transformer compiled for it: switching between on and
    off compiles it again, which no picture's time should include."""
    pipe.disable_step_cache() if threshold is None else pipe.enable_step_cache(threshold)
    pipe.transformer.compile()


def draw_with_step_cache(pipe: OVPixArtPipeline, prompt: str, seed: int, threshold: float | None, **kwargs: Any) -> dict[str, Any]:
    """One picture (``generate``, the checkpoint's recipe) with the step cache at ``threshold`` (None: off): the
    picture, its seconds, the transformer's seconds and the steps computed and reused."""
    set_step_cache(pipe, threshold)
    pipe.transformer.seconds.clear()
    image, seconds = generate(pipe, prompt, seed, **kwargs)
    return {
        "image": image,
        "picture_s": seconds,
        "transformer_s": sum(pipe.transformer.seconds),
        "counts": pipe.step_cache_counts or {"computed": len(pipe.transformer.seconds), "reused": 0},
    }


def compare_step_cache(
    pipe: OVPixArtPipeline, prompts: Sequence[str], seeds: Sequence[int], thresholds: Iterable[float], **kwargs: Any
) -> tuple[Any, dict[str, list[Image.Image]]]:
    """The same prompts and seeds without the step cache and at each threshold: one row each (steps computed and
    reused, seconds per picture and in the transformer, PSNR/SSIM against the uncached pictures), and the pictures.

    Each way is compiled (and run for two steps) before it is timed.
    """

    rows, pictures = {}, {}
    for threshold in (None, *thresholds):
        name = "uncached" if threshold is None else f"cached, threshold {threshold:g}"
        set_step_cache(pipe, threshold)
        pipe(prompts[0], num_inference_steps=2, output_type="latent", **kwargs)  # warm-up
        draws = [draw_with_step_cache(pipe, prompt, seed, threshold, **kwargs) for prompt, seed in zip(prompts, seeds)]
        pictures[name] = [d["image"] for d in draws]
        counts = {"steps computed": sum(d["counts"]["computed"] for d in draws), "steps reused": sum(d["counts"]["reused"] for d in draws)}
        rows[name] = counts | _against_first(draws, pictures[name], pictures["uncached"])
    pipe.disable_step_cache()
    return _ways_table(rows), pictures


def _against_first(draws: list[dict[str, Any]], images: list[Image.Image], first: list[Image.Image]) -> dict[str, float]:
    """One way's row: median seconds per picture and in the transformer, PSNR/SSIM against the first way's pictures."""
    return {
        "picture s (median)": float(np.median([d["picture_s"] for d in draws])),
        "transformer s (median)": float(np.median([d["transformer_s"] for d in draws])),
        "PSNR dB": float(np.mean([psnr(a, b) for a, b in zip(first, images)])),
        "SSIM": float(np.mean([ssim(a, b) for a, b in zip(first, images)])),
    }


def _ways_table(rows: dict[str, dict[str, float]]):
    """The rows of :func:`_against_first` as a table, with each way's transformer speed-up over the first."""
    import pandas as pd

    table = pd.DataFrame.from_dict(rows, orient="index")
    table["transformer speed-up"] = table["transformer s (median)"].iloc[0] / table["transformer s (median)"]
    return table.round(3)


def compare_downsampled_steps(
    pipe: OVPixArtPipeline, prompts: Sequence[str], seeds: Sequence[int], fractions: Iterable[float], **kwargs: Any
) -> tuple[Any, dict[str, list[Image.Image]]]:
    """A ``-ToDo`` variant's pictures of the same prompts and seeds with none of their steps downsampled (the exact
    pictures) and with each fraction of them: one row each (steps downsampled, seconds per picture and in the
    transformer, PSNR/SSIM against the exact pictures), and the pictures.

    Each way is run for two steps (compiling what it needs) before it is timed.
    """

    rows, pictures = {}, {}
    made_with = pipe.transformer.downsampling.steps  # the pipeline's own fraction, set again at the end
    for fraction in (0.0, *fractions):
        name = f"{fraction:.0%} of the steps downsampled"
        pipe.set_downsampled_steps(fraction)
        pipe(prompts[0], num_inference_steps=2, output_type="latent", **kwargs)  # warm-up
        draws = []
        for prompt, seed in zip(prompts, seeds):
            pipe.transformer.seconds.clear()
            downsampled_before = len(pipe.transformer.downsampled.seconds)
            image, seconds = generate(pipe, prompt, seed, **kwargs)
            draws.append({"image": image, "picture_s": seconds, "transformer_s": sum(pipe.transformer.seconds),
                          "downsampled": len(pipe.transformer.downsampled.seconds) - downsampled_before, "steps": len(pipe.transformer.seconds)})
        pictures[name] = [d["image"] for d in draws]
        counts = {"steps downsampled": sum(d["downsampled"] for d in draws), "steps": sum(d["steps"] for d in draws)}
        rows[name] = counts | _against_first(draws, pictures[name], next(iter(pictures.values())))
    pipe.set_downsampled_steps(made_with)
    return _ways_table(rows), pictures


def show_side_by_side(images: Iterable[Image.Image], titles: Iterable[str], size: float = 4.0):
    """A row of pictures with their titles (matplotlib figure)."""
    import matplotlib.pyplot as plt

    images, titles = list(images), list(titles)
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------
# Alignment: does the picture show what the caption asks for? (the shapes evaluation set, scored from pixels)
# ------------------------------------------------------------------------------------------------------------


def generate_evaluation(
    pipe: Any, evaluation: Sequence[tuple[Scene, int]], recipe: SamplingRecipe, batch_size: int = 16, **kwargs: Any
) -> list[Image.Image]:
    """One picture per (scene, seed) of an evaluation set, with the recipe given (the same for every pipeline).

    Prompts go in batches; a list of generators gives each picture its own seed's noise, so a picture does not
    depend on the batch it was in. Works for diffusers' PyTorch pipeline and the OpenVINO one alike.
    """
    from tqdm.auto import tqdm

    images = []
    for start in tqdm(range(0, len(evaluation), batch_size), desc="evaluation", leave=False):
        chunk = evaluation[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed) for _, seed in chunk]
        images += pipe([scene.caption for scene, _ in chunk], generator=generators, **recipe.call_arguments(**kwargs)).images
    return images


def alignment_table(scores: dict[str, dict[str, float]]):
    """One row per pipeline: the fraction of evaluation pictures right per attribute, and with all four right."""
    import pandas as pd

    return pd.DataFrame.from_dict(scores, orient="index")[[*ATTRIBUTES, "overall"]].round(3)


def show_evaluation(images: Sequence[Image.Image], scenes: Sequence[Scene], columns: int = 8, size: float = 1.7):
    """The evaluation pictures in a grid, each titled with its caption; a red title marks a wrong picture."""
    import matplotlib.pyplot as plt

    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * 1.25 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, scene in zip(axes.flat, images, scenes):
        ax.imshow(image)
        right = score_image(image, scene)["all"]
        title = f"{scene.color} {scene.shape}\n{scene.position} / {scene.background}"
        ax.set_title(title, fontsize=6.5, color="black" if right else "red")
    fig.tight_layout()
    return fig


def evaluate_alignment(pipe: Any, evaluation: Sequence[tuple[Scene, int]], recipe: SamplingRecipe, **kwargs: Any) -> tuple[dict[str, float], list[Image.Image]]:
    """The alignment score of a pipeline on an evaluation set, and its pictures."""
    images = generate_evaluation(pipe, evaluation, recipe, **kwargs)
    return alignment_score(images, [scene for scene, _ in evaluation]), images


def alignment_of_variants(
    model_id: str, variants: Iterable[str], evaluation: Sequence[tuple[Scene, int]], device: str = "AUTO", **kwargs: Any
) -> tuple[dict[str, dict[str, float]], dict[str, list[Image.Image]]]:
    """The alignment score of the PyTorch pipeline and of each OpenVINO variant, one pipeline in memory at a time.

    Every pipeline draws the same evaluation set with the checkpoint's recipe. Returns scores and pictures by name.
    """
    from .reference import reference_images
    from .sources import resolve_model_source
    loaded = {name: Variant.of(model_id, name) for name in variants}
    recipe = next(iter(loaded.values())).recipe
    scenes, seeds = [scene for scene, _ in evaluation], [seed for _, seed in evaluation]
    # PyTorch in two stages (T5, then transformer and VAE): the real pipeline does not fit in memory whole
    images, _ = reference_images(resolve_model_source(model_id), [scene.caption for scene in scenes], seeds, recipe, **kwargs)
    scores, pictures = {"PyTorch": alignment_score(images, scenes)}, {"PyTorch": images}
    for name, variant in loaded.items():
        pipe = OVPixArtPipeline.from_pretrained(variant, device)
        pipe.set_progress_bar_config(disable=True)
        scores[name], pictures[name] = evaluate_alignment(pipe, evaluation, recipe, **kwargs)
        del pipe
        gc.collect()
    return scores, pictures
