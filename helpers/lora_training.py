"""Teaching the shapes model a new concept with a LoRA (docs/lora.md): captioned pictures of a shape it never saw
(``helpers.shapes.NEW_SHAPES``) mixed with the shapes it knows, the base model's cached features, a peft LoRA on
the transformer trained with PixArt's loss, saved as a PEFT folder (``adapter_config.json`` +
``adapter_model.safetensors``). CPU, a few minutes on two cores."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .folders import atomic_folder
from .training_features import cache_features
from .training_transformer import TrainingPlan, train_transformer

# The attention and feed-forward projections of every transformer block: where a concept's look is written.
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
DEFAULT_LORA_STEPS = 5000
STEPS_VARIABLE = "LORA_TRAINING_STEPS"  # CI sets a few steps: every code path in seconds


def lora_steps(default: int = DEFAULT_LORA_STEPS) -> int:
    """The steps a run takes: ``LORA_TRAINING_STEPS`` from the environment, else ``default``."""
    return int(os.environ.get(STEPS_VARIABLE, default))


def lora_dataset_size(steps: int) -> int:
    """Pictures a run of ``steps`` learns from: 512, or 64 for a short (CI) run, where caching them would dominate."""
    return 512 if steps >= 100 else 64


def concept_dataset(work: Path, concept: str, size: int, seed: int = 0):
    """Half pictures of ``concept``, half of the base shapes: the base prompts keep being taught what they draw,
    so the adapter changes only what the new word asks for. A ``datasets.Dataset`` (``image``, ``text``)."""
    from datasets import concatenate_datasets

    from .shapes import load_captioned_images, make_dataset

    # make_dataset keeps a folder of the right count whatever made it: the folder names say what did
    new = make_dataset(Path(work) / f"data-{concept}-{size}-{seed}", size // 2, seed=seed, shapes=(concept,))
    base = make_dataset(Path(work) / f"data-base-{size}-{seed}", size - size // 2, seed=seed + 1)
    return concatenate_datasets([load_captioned_images(new), load_captioned_images(base)])


def add_lora(transformer, rank: int, seed: int = 0):
    """``transformer`` wrapped by peft with a fresh LoRA of ``rank`` (alpha = rank: a scale of 1); only the LoRA's
    A and B matrices train, the base weights are frozen in place."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # peft draws the A matrices from torch's global generator: one seed, one adapter
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGET_MODULES))
    return get_peft_model(transformer, config)


def lora_plan(steps: int, learning_rate: float, seed: int) -> TrainingPlan:
    """The base model's training plan, shortened: a warm-up of a tenth of the run, no samples along the way."""
    return TrainingPlan(
        steps=steps, learning_rate=learning_rate, warmup_steps=max(1, steps // 10), sample_every=steps, seed=seed
    )


def save_adapter(lora, out: Path) -> Path:
    """The LoRA alone as a PEFT folder, written into a temporary folder renamed at the end."""
    with atomic_folder(Path(out)) as tmp:
        lora.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's blank model card: the docs say how it was made
    return Path(out)


def train_lora(
    base: Path,
    out: Path,
    concept: str = "ring",
    steps: int | None = None,
    rank: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
    work: Path | None = None,
    report: Callable[[str], None] = print,
) -> Path:
    """Teach the diffusers model at ``base`` (the shapes model) to draw ``concept``, and save the LoRA to ``out``.

    ``steps`` defaults to ``lora_steps()`` (``LORA_TRAINING_STEPS``, else the shipped adapter's run). ``work`` keeps the pictures and the
    feature cache for a next run (a temporary folder when not given). ``report`` receives one line per stage.
    Returns ``out``, a PEFT folder: ``PeftModel.from_pretrained(pipe.transformer, out)`` applies it.
    """
    from diffusers import PixArtAlphaPipeline

    steps = lora_steps() if steps is None else steps
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch if work is None else work)
        start = time.perf_counter()
        pipe = PixArtAlphaPipeline.from_pretrained(base)
        dataset = concept_dataset(work, concept, lora_dataset_size(steps), seed)
        features = cache_features(pipe, dataset, work / f"features-{concept}-{len(dataset)}.safetensors")
        report(f"{len(dataset)} captioned pictures, features cached ({time.perf_counter() - start:.0f} s)")
        start, lora = time.perf_counter(), add_lora(pipe.transformer, rank, seed)
        history = train_transformer(pipe, features, lora_plan(steps, learning_rate, seed))
        loss = np.mean([record["loss"] for record in history[-50:]])
        report(f"LoRA rank {rank} trained {steps} steps: loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")
    return save_adapter(lora, out)
