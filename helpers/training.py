"""Training a small PixArt here (notebook 6, ``python -m helpers train``): the data, the starting pipeline, saving
and resuming, and ``train_shapes_model``, which runs the stages in the order of notebook 6's cells: data, starting
pipeline, the VAE (``training_vae``), cached features (``training_features``), the transformer
(``training_transformer``), the saved model. CPU by default; ``device="cuda"`` runs the same code on a GPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .building import (
    DPM_SCHEDULER_CONFIG,
    TINY_T5_CONFIG,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    build_random_pipeline,
)
from .folders import atomic_folder
from .settings import MODEL_INDEX
from .training_features import cache_features
from .training_transformer import TrainingPlan, train_transformer
from .training_vae import fit_vae_once, pictures_to_tensor, vae_steps_for

# The architecture of PixArt-XL (PixArtTransformer2DModel, AutoencoderKL with 4 blocks = scale factor 8, T5), sized
# for 256² pictures on a laptop CPU; sample size 32 selects diffusers' 256 aspect-ratio bins. Patches of 2 latent
# pixels, like PixArt-XL: patches of 4 train faster but break most bins (docs/shapes-model.md).
# They are the tiny model's configs (``tiny``), grown where learning needs room.
SHAPES_TRANSFORMER_CONFIG = {
    **TINY_TRANSFORMER_CONFIG,
    "sample_size": 32,
    "num_layers": 6,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "cross_attention_dim": 128,  # = heads × head dim, the width of the captions' projection
}
SHAPES_VAE_CONFIG = {
    **TINY_VAE_CONFIG,
    "block_out_channels": (16, 32, 64, 64),
    "norm_num_groups": 8,
    "sample_size": 256,
    "mid_block_add_attention": False,  # convolutions only: what a flat-colour picture needs, and fast
}


def dataset_size_for(training_steps: int) -> int:
    """How many captioned pictures a run of ``training_steps`` transformer steps learns from: 2048, or 256 for a run
    under 1000 steps such as CI's ``TRAINING_STEPS=100`` (caching 2048 pictures' features took 78 s and 5 GB on two
    CPU cores, 256 pictures' 8 s and 1.4 GB)."""
    return 2048 if training_steps >= 1000 else 256


def prepare_data(work: Path, dataset_size: int, seed: int = 0):
    """The captioned pictures of ``work/data`` as a ``datasets.Dataset`` (``image``, ``text``), generated there once
    (``helpers.shapes.make_dataset``; a folder of another size is made again)."""
    from .shapes import load_captioned_images, make_dataset

    return load_captioned_images(make_dataset(Path(work) / "data", dataset_size, seed=seed))


def start_pipeline(folder: Path):
    """A PixArt-α pipeline to train: frozen T5 made contextual, untrained VAE and transformer, DPM-Solver (20 guided steps).

    The random weights are built once into ``folder``; the two changes below are applied at every load (they are
    deterministic), so the trained model saved at the end carries them.
    """
    from diffusers import PixArtAlphaPipeline

    build_random_pipeline(folder, SHAPES_TRANSFORMER_CONFIG, SHAPES_VAE_CONFIG, TINY_T5_CONFIG, DPM_SCHEDULER_CONFIG)
    pipe = PixArtAlphaPipeline.from_pretrained(folder)
    make_contextual(pipe.text_encoder)
    amplify_captions(pipe.transformer)
    return pipe


def make_contextual(text_encoder: torch.nn.Module, strength: float = 8.0, gain: float = 3.0) -> None:
    """Make a random T5 encoder mix each token with its neighbours, as a pretrained one does.

    PixArt's cross-attention sees the caption as a set of token vectors, without their positions, and a random T5
    hardly mixes tokens, so the "red" of a red shape and of a red background come out nearly the same vector
    (docs/shapes-model.md).
    Here each attention head of every block looks at one neighbour (1 or 2 tokens before or after: a large bias on
    that relative-position bucket) and writes ``gain`` times more into the residual stream; the two "red"s are
    then about half their length apart. The encoder stays frozen: these weights are chosen, not learned.
    """
    attention = text_encoder.encoder.block[0].layer[0].SelfAttention
    offsets = torch.tensor([-1, 1, -2, 2])
    buckets = attention._relative_position_bucket(
        offsets, bidirectional=True, num_buckets=text_encoder.config.relative_attention_num_buckets,
        max_distance=text_encoder.config.relative_attention_max_distance,
    )
    with torch.no_grad():
        table = attention.relative_attention_bias.weight  # (buckets, heads), shared by every block
        table.zero_()
        for head, bucket in enumerate(buckets[: table.shape[1]].tolist()):
            table[bucket, head] = strength
        for block in text_encoder.encoder.block:
            block.layer[0].SelfAttention.o.weight.mul_(gain)


def amplify_captions(transformer: torch.nn.Module, gain: float = 20.0) -> None:
    """Start the caption projection ``gain`` times larger, so the captions reach the cross-attention at the scale
    of the picture tokens: the default initialisation leaves them about 20 times smaller, and the transformer then
    learns to ignore them (measured: docs/shapes-model.md)."""
    with torch.no_grad():
        transformer.caption_projection.linear_2.weight.mul_(gain)
        transformer.caption_projection.linear_2.bias.mul_(gain)


def save_pipeline(pipe, folder: Path) -> Path:
    """Save a trained pipeline as a diffusers folder (temporary folder, renamed at the end) on the CPU."""
    pipe.to("cpu")
    with atomic_folder(Path(folder)) as tmp:
        pipe.save_pretrained(tmp)
    return Path(folder)


def continue_from(folder: Path):
    """A trained model (a diffusers folder ``save_pipeline`` wrote), loaded to train on from there.

    Every part as it was saved: the transformer learned that T5's embeddings (contextual already, so it is not made
    contextual again) and that VAE's latents, whatever the work folder's starting model is.
    """
    from diffusers import PixArtAlphaPipeline

    if not (Path(folder) / MODEL_INDEX).is_file():
        raise FileNotFoundError(f"No trained model to resume at {folder}: give the folder a training run saved (its --out).")
    return PixArtAlphaPipeline.from_pretrained(folder)


def train_shapes_model(
    out: Path,
    work: Path,
    plan: TrainingPlan,
    dataset_size: int | None = None,
    vae_steps: int | None = None,
    report: Callable[[str], None] = print,
    resume: Path | None = None,
) -> dict[str, Any]:
    """The whole of notebook 6 in one call, its stages in its order: ``prepare_data``, ``start_pipeline`` (or
    ``continue_from``), ``fit_vae_once``, ``cache_features``, ``train_transformer``, ``save_pipeline``.

    ``work`` keeps the dataset, the starting pipeline, the fitted VAE and the feature cache, so a run stopped during
    the transformer's training starts again from there; ``out`` receives the trained model. ``dataset_size`` and
    ``vae_steps`` default to ``dataset_size_for`` and ``vae_steps_for`` of ``plan.steps``. ``resume``, a model this
    function saved, trains on from it (more steps, on another day or another machine) instead of from scratch: no
    starting pipeline, its VAE kept as it is (no VAE losses). ``report`` receives one line per stage. Returns the
    loss histories and the seconds of each stage.
    """
    work, seconds = Path(work), {}
    start = time.perf_counter()
    dataset = prepare_data(work, dataset_size_for(plan.steps) if dataset_size is None else dataset_size, plan.seed)
    pipe = start_pipeline(work / "start") if resume is None else continue_from(Path(resume))
    seconds["data"] = time.perf_counter() - start
    report(f"{len(dataset)} captioned pictures, starting pipeline built ({seconds['data']:.0f} s)")
    start, vae_losses = time.perf_counter(), []
    if resume is None:
        vae_steps = vae_steps_for(plan.steps) if vae_steps is None else vae_steps
        pictures = pictures_to_tensor(dataset["image"])
        vae_losses = fit_vae_once(pipe, pictures, work / "vae", vae_steps, device=plan.device, seed=plan.seed)
    seconds["vae"] = time.perf_counter() - start
    report(f"VAE fitted: loss {np.mean(vae_losses[-50:]):.5f} ({seconds['vae']:.0f} s)" if vae_losses else f"VAE kept from {resume}")
    start = time.perf_counter()
    features = cache_features(pipe, dataset, work / "features.safetensors", device=plan.device)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    history = train_transformer(pipe, features, plan)
    seconds["transformer"] = time.perf_counter() - start
    report(f"transformer trained: loss {np.mean([h['loss'] for h in history[-100:]]):.4f} ({seconds['transformer']:.0f} s)")
    save_pipeline(pipe, out)
    return {"vae_losses": vae_losses, "history": history, "seconds": seconds}
