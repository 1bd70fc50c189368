"""Comparison: pictures, latency, sizes and similarity of variants side by side, and of the ways a pipeline can skip
work across steps; the notebooks' comparison and calibration parameters, read from the environment in one place."""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from .pipeline import OVPixArtPipeline, timed_call
from .record import CallRecord
from .settings import MODEL_ROOT, SamplingRecipe, example_prompts
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
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (integer pixels in 0–255, float pixels in
    0–1), by scikit-image; infinite for identical images."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _as_unit_array(reference), _as_unit_array(image)  # images of different shapes: scikit-image's ValueError
    return float("inf") if np.array_equal(a, b) else float(peak_signal_noise_ratio(a, b, data_range=1.0))


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


@dataclass(frozen=True)
class NotebookSettings:
    """How much work the notebooks do, each field from the environment variable of its name in capitals
    (``COMPARE_SIDE=256``), else its default (the sides: the model's own). ``calibration_*``: W8A8's calibration set;
    ``compare_*``: example prompts each variant draws at ``compare_side``², timed ``compare_runs`` times;
    ``evaluation_*``: shapes prompts of the alignment score (at least 8) at ``evaluation_side``²; ``generate_steps``:
    the steps of notebook 2's pictures (0: the recipe's), fewer where a model's native size is slow."""

    model_id: str
    calibration_prompts: int
    calibration_side: int
    compare_prompts: int
    compare_runs: int
    compare_side: int
    evaluation_size: int
    evaluation_side: int
    generate_steps: int = 0

    @property
    def generate_arguments(self) -> dict[str, int]:
        """Notebook 2's call arguments for its steps: none for the recipe's."""
        return {"num_inference_steps": self.generate_steps} if self.generate_steps else {}

    @property
    def prompts(self) -> list[str]:  # the example prompts compared, each drawn with seed 42 (``seeds``)
        return list(example_prompts(self.model_id))[: self.compare_prompts]

    seeds = property(lambda self: [42] * self.compare_prompts)

    def size(self, side: int) -> dict[str, Any]:
        """The call arguments that draw exactly ``side``² (no resolution binning, which would round to a bin)."""
        return dict(height=side, width=side, use_resolution_binning=False)

    def calibration(self, fp16: Variant | Path, device: str = "CPU") -> list[dict[str, np.ndarray]]:
        """W8A8's calibration set: the FP16 transformer's inputs over ``calibration_prompts`` prompts (seeds 0, 1, …)
        at ``calibration_side``², the same set each time."""
        from .compression import calibration_prompts, collect_calibration_data

        prompts, side = calibration_prompts(self.model_id, self.calibration_prompts), self.calibration_side
        return collect_calibration_data(fp16, prompts, side, side, device)


def notebook_settings(model_id: str, root: Path = MODEL_ROOT) -> NotebookSettings:
    """The notebooks' :class:`NotebookSettings` for ``model_id`` (its FP16 folder gives the native side)."""
    from .schemes import CALIBRATION_PROMPTS

    side = Variant.of(model_id, "FP16", root).native_size[0]
    defaults = dict(calibration_prompts=CALIBRATION_PROMPTS, calibration_side=side, compare_prompts=4, compare_runs=3,
                    compare_side=side, evaluation_size=64, evaluation_side=side, generate_steps=0)
    return NotebookSettings(model_id, **{name: int(os.environ.get(name.upper(), value)) for name, value in defaults.items()})


# One picture, its seconds and its call's record (steps, seconds per part).
Drawn = NamedTuple("Drawn", [("image", Image.Image), ("seconds", float), ("record", CallRecord)])


def draw(pipe: OVPixArtPipeline, prompt: str, seed: int, **kwargs: Any) -> Drawn:
    """One picture of ``prompt`` with a seeded generator and the checkpoint's recipe where ``kwargs`` do not say
    otherwise (as :func:`helpers.pipeline.generate`), with its call's record."""
    output, seconds = timed_call(pipe, prompt, seed, pipe.recipe, **kwargs)
    return Drawn(output.images[0], seconds, output.record)


@dataclass
class VariantRun:
    """What one variant produced on the comparison prompts, and how long it took."""

    variant: str
    images: list[Image.Image]
    latents: list[np.ndarray]
    text_embeddings: list[np.ndarray]
    pipeline_seconds: list[float]
    part_seconds: dict[str, list[float]]  # each call of each part in the timed runs, by the record's part names
    sizes_mb: dict[str, float]


def run_variant(variant: Variant | Path, prompts: Iterable[str], seeds: Iterable[int], device: str = "AUTO",
                ov_config: dict | None = None, runs: int = 3, warmup: int = 0, **kwargs: Any) -> VariantRun:
    """Compile one variant, make a picture per prompt and seed (which warms it up too), then time ``runs``
    generations after ``warmup``. One variant is compiled at a time and freed at the end, so comparing the real
    pipeline's variants never holds two in memory. The final latents come from the step callback, the text
    embeddings from ``encode_prompt``, the seconds of each part's calls from each timed call's record."""
    variant = as_variant(variant)
    pipe = OVPixArtPipeline.from_pretrained(variant, device, ov_config)
    pipe.set_progress_bar_config(disable=True)
    images, latents, embeddings = [], [], []
    prompts, seeds = list(prompts), list(seeds)
    for prompt, seed in zip(prompts, seeds):
        last = {}
        images.append(draw(pipe, prompt, seed, callback=lambda step, t, x: last.update(latents=x), **kwargs).image)
        latents.append(last["latents"].numpy())
        embeddings.append(pipe.encode_prompt(prompt, do_classifier_free_guidance=False)[0].numpy())
    for _ in range(warmup):
        draw(pipe, prompts[0], seeds[0], **kwargs)
    timed = [draw(pipe, prompts[0], seeds[0], **kwargs) for _ in range(runs)]
    part_seconds = {part: [s for run in timed for s in run.record.seconds.get(part, ())] for part in PART_COLUMNS}
    run = VariantRun(variant.name, images, latents, embeddings, [run.seconds for run in timed], part_seconds, variant.part_sizes_mb())
    del pipe
    gc.collect()
    return run


PART_COLUMNS = {"text_encoder": "text encoder", "transformer": "transformer step", "vae_decoder": "VAE decode"}  # table names


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
            **{f"{PART_COLUMNS[part]} ms": 1000 * latency_summary(seconds)["median"] for part, seconds in run.part_seconds.items()},
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


# ---- Faster across steps: the step cache and token downsampling against the exact pipeline (notebook 8) ----


def set_step_cache(pipe: OVPixArtPipeline, threshold: float | None) -> None:
    """The step cache at ``threshold`` (None: off), its transformer compiled: no picture's time includes that."""
    pipe.disable_step_cache() if threshold is None else pipe.enable_step_cache(threshold)
    pipe.transformer.compile()


def compare_ways(pipe: OVPixArtPipeline, prompts: Sequence[str], seeds: Sequence[int], ways: dict[str, Callable[[], None]],
                 **kwargs: Any) -> tuple[Any, dict[str, list[Image.Image]]]:
    """The same prompts and seeds drawn each way (a function that sets the pipeline up, then run for two steps to
    compile what it needs before anything is timed): a row per way, the steps summed over the pictures (computed,
    reused by the step cache, downsampled), the median seconds per picture and in the transformer, the transformer's
    speed-up and PSNR/SSIM against the first way's pictures; and the pictures of each way."""
    import pandas as pd

    rows, pictures = {}, {}
    for name, set_up in ways.items():
        set_up()
        pipe(prompts[0], num_inference_steps=2, output_type="latent", **kwargs)  # warm-up
        draws = [draw(pipe, prompt, seed, **kwargs) for prompt, seed in zip(prompts, seeds)]
        pictures[name] = [d.image for d in draws]
        first, records = next(iter(pictures.values())), [d.record for d in draws]
        rows[name] = {
            "steps": sum(r.steps for r in records), "steps computed": sum(r.computed for r in records),
            "steps reused": sum(r.reused or 0 for r in records), "steps downsampled": sum(r.downsampled for r in records),
            "picture s (median)": float(np.median([d.seconds for d in draws])),
            "transformer s (median)": float(np.median([r.total_seconds("transformer") for r in records])),
            "PSNR dB": float(np.mean([psnr(a, d.image) for a, d in zip(first, draws)])),
            "SSIM": float(np.mean([ssim(a, d.image) for a, d in zip(first, draws)])),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.insert(6, "transformer speed-up", table["transformer s (median)"].iloc[0] / table["transformer s (median)"])
    return table.round(3), pictures


def compare_step_cache(pipe: OVPixArtPipeline, prompts: Sequence[str], seeds: Sequence[int], thresholds: Iterable[float],
                       **kwargs: Any) -> tuple[Any, dict[str, list[Image.Image]]]:
    """:func:`compare_ways`: without the step cache ("uncached"), then at each threshold ("cached, threshold 0.1").
    The pipeline's own threshold is set again at the end."""
    made_with = pipe.step_cache_threshold
    ways = {"uncached": None} | {f"cached, threshold {threshold:g}": threshold for threshold in thresholds}
    try:
        return compare_ways(pipe, prompts, seeds, {name: partial(set_step_cache, pipe, t) for name, t in ways.items()}, **kwargs)
    finally:
        pipe.disable_step_cache() if made_with is None else pipe.enable_step_cache(made_with)


def compare_downsampled_steps(pipe: OVPixArtPipeline, prompts: Sequence[str], seeds: Sequence[int], fractions: Iterable[float],
                              **kwargs: Any) -> tuple[Any, dict[str, list[Image.Image]]]:
    """:func:`compare_ways` for a ``-ToDo`` variant: none of its steps downsampled (the exact pictures), then each
    fraction of them ("50% of the steps downsampled"). The pipeline's own fraction is set again at the end."""
    made_with = pipe.downsampled_steps
    ways = {f"{fraction:.0%} of the steps downsampled": fraction for fraction in (0.0, *fractions)}
    try:
        return compare_ways(pipe, prompts, seeds, {name: partial(pipe.set_downsampled_steps, f) for name, f in ways.items()}, **kwargs)
    finally:
        pipe.set_downsampled_steps(made_with)


# ---- Alignment: does the picture show what the caption asks for? (the shapes evaluation set, scored from pixels) ----


def generate_evaluation(pipe: Any, evaluation: Sequence[tuple[Scene, int]], recipe: SamplingRecipe, batch_size: int = 16,
                        **kwargs: Any) -> list[Image.Image]:
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


def alignment_of_variants(model_id: str, variants: Iterable[str], evaluation: Sequence[tuple[Scene, int]], device: str = "AUTO",
                          **kwargs: Any) -> tuple[dict[str, dict[str, float]], dict[str, list[Image.Image]]]:
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
