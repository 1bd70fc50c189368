"""Training: a small PixArt learned here, on captioned pictures (notebook 6 and ``python -m helpers train``).

PixArt's own recipe, scaled down. The T5 encoder stays frozen. The VAE is fitted to the pictures first. Every
caption's T5 embedding and every picture's VAE latent are then computed once and cached on disk, and the
transformer learns from the cached features to predict the noise, with its eight output channels' second half
learning the variance (improved DDPM's hybrid loss, as PixArt trains). Runs on the CPU; ``device="cuda"`` runs the
same code on a GPU.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .settings import MODEL_INDEX, STANDARD_RECIPE, atomic_folder
from .sources import (
    DPM_SCHEDULER_CONFIG,
    TINY_T5_CONFIG,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    build_random_pipeline,
)

# The architecture of PixArt-XL (PixArtTransformer2DModel, AutoencoderKL with 4 blocks = scale factor 8, T5), sized
# for 256² pictures on a laptop CPU; sample size 32 selects diffusers' 256 aspect-ratio bins. Patches of 2 latent
# pixels, like PixArt-XL: patches of 4 train faster but break most bins (README, "Training a small PixArt here").
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


@dataclass
class TrainingSettings:
    """How long and how the transformer trains (``steps`` is the notebook's parameter)."""

    steps: int = 4000
    batch_size: int = 16
    learning_rate: float = 1e-3  # a 1.8 M-parameter model: 3e-4 learned the captions three times slower
    warmup_steps: int = 100
    caption_dropout: float = 0.1  # captions replaced by an "unconditional" one, so guidance works
    sample_every: int = 500
    device: str = "cpu"
    seed: int = 0


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
    (README, "Training a small PixArt here").
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
    learns to ignore them (measured: README, "Training a small PixArt here")."""
    with torch.no_grad():
        transformer.caption_projection.linear_2.weight.mul_(gain)
        transformer.caption_projection.linear_2.bias.mul_(gain)


# ------------------------------------------------------------------------------------------------------------
# The VAE, fitted to the pictures
# ------------------------------------------------------------------------------------------------------------


def pictures_to_tensor(images: Sequence[Any]) -> torch.Tensor:
    """PIL pictures → a float tensor in [-1, 1], (N, 3, H, W): the VAE's input."""
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def vae_steps_for(training_steps: int) -> int:
    """How long the VAE is fitted for a transformer trained ``training_steps`` steps (half as long, at least 20)."""
    return max(20, training_steps // 2)


def train_vae(
    vae: torch.nn.Module,
    pictures: torch.Tensor,
    steps: int,
    batch_size: int = 16,
    crop: int = 64,
    learning_rate: float = 5e-4,  # 2e-3 sat on a plateau (MSE 0.25 after 400 steps, 0.04 at 5e-4)
    kl_weight: float = 1e-6,
    device: str = "cpu",
    seed: int = 0,
) -> list[float]:
    """Fit an AutoencoderKL to ``pictures`` (N, 3, H, W in [-1, 1]): reconstruction MSE plus a small KL term.

    It learns on random ``crop``² crops: the VAE is convolutional, so what it learns holds at any size, and a
    64² crop costs a sixteenth of a 256² picture. The learning rate falls linearly to a tenth. Then the VAE's
    ``scaling_factor`` is set to 1 / the latents' standard deviation (how Stable Diffusion's was chosen), so the
    transformer sees unit-variance latents. Returns the loss of every step.
    """
    generator = torch.Generator().manual_seed(seed)
    vae.to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - 0.9 * step / max(1, steps))
    losses = []
    for _ in tqdm(range(steps), desc="VAE"):
        batch = _random_crops(pictures[torch.randint(len(pictures), (batch_size,), generator=generator)], crop, generator).to(device)
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.mode()).sample  # the mean: a sampled latent drowns its signal early on
        loss = F.mse_loss(reconstruction, batch) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
    vae.eval()
    latents = encode_pictures(vae, pictures[:256], scale=False, device=device)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return losses


def fit_vae_once(pipe, pictures: torch.Tensor, folder: Path, steps: int, settings: TrainingSettings) -> list[float]:
    """Fit ``pipe.vae`` (``train_vae``) and keep it in ``folder`` with its losses; a later call with the same number
    of pictures, steps and seed loads it instead of fitting it again. The VAE is left on the CPU."""
    import json

    from diffusers import AutoencoderKL

    folder, recipe = Path(folder), {"pictures": len(pictures), "steps": steps, "seed": settings.seed}
    record = folder / "fit.json"
    kept = json.loads(record.read_text()) if record.is_file() else {}
    if kept.get("recipe") == recipe:
        pipe.register_modules(vae=AutoencoderKL.from_pretrained(folder))
        return kept["losses"]
    losses = train_vae(pipe.vae, pictures, steps, device=settings.device, seed=settings.seed)
    pipe.vae.to("cpu")
    with atomic_folder(folder) as tmp:
        pipe.vae.save_pretrained(tmp)
        (tmp / "fit.json").write_text(json.dumps({"recipe": recipe, "losses": losses}))
    return losses


def _random_crops(pictures: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    height, width = pictures.shape[-2:]
    if side >= min(height, width):
        return pictures
    tops = torch.randint(height - side + 1, (len(pictures),), generator=generator)
    lefts = torch.randint(width - side + 1, (len(pictures),), generator=generator)
    return torch.stack([p[:, top : top + side, left : left + side] for p, top, left in zip(pictures, tops, lefts)])


@torch.no_grad()
def encode_pictures(vae: torch.nn.Module, pictures: torch.Tensor, scale: bool = True, device: str = "cpu", batch_size: int = 32) -> torch.Tensor:
    """The VAE latents (posterior means) of ``pictures``, times the scaling factor unless ``scale=False``."""
    vae.to(device).eval()
    chunks = [vae.encode(pictures[i : i + batch_size].to(device)).latent_dist.mean.cpu() for i in range(0, len(pictures), batch_size)]
    latents = torch.cat(chunks)
    return latents * vae.config.scaling_factor if scale else latents


# ------------------------------------------------------------------------------------------------------------
# Cached features: computed once, saved, reused by every training step
# ------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_captions(pipe, captions: Sequence[str], max_length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 embeddings and attention masks of ``captions``, padded to ``max_length`` tokens.

    The pipeline pads to 120 tokens at inference; T5 masks padding, and so does the transformer's cross-attention,
    so the embeddings of the real tokens are the same at any padded length: a short one saves memory and time.
    """
    tokens = pipe.tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    if (tokens.attention_mask.sum(1) >= max_length).any():
        raise ValueError(f"A caption is longer than {max_length} tokens: raise max_length.")
    embeddings = pipe.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    return embeddings, tokens.attention_mask


def features_fingerprint(pipe, dataset) -> str:
    """What cached features depend on: the captions, their number, and the VAE's and T5's weights.

    The pictures themselves are not hashed: a folder whose pictures change under the same captions keeps its cache.
    """
    digest = hashlib.sha1()
    for text in dataset["text"]:
        digest.update(text.encode())
    for module in (pipe.vae, pipe.text_encoder):
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


def cache_features(pipe, dataset, path: Path, batch_size: int = 32, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The latents and caption embeddings of a dataset, computed once and saved to ``path``.

    ``dataset`` has ``image`` and ``text`` columns (``helpers.shapes.load_captioned_images``). A cache made from other
    captions or another VAE (its fingerprint differs) is recomputed. The unconditional captions ("" and the
    standard recipe's negative prompt) are cached beside them for caption dropout. The VAE encodes on ``device``
    and is left on the CPU; the features are CPU tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path, fingerprint = Path(path), features_fingerprint(pipe, dataset)
    if path.is_file():
        with safe_open(path, "pt") as reader:
            if (reader.metadata() or {}).get("fingerprint") == fingerprint:
                return load_file(path)
    latents, embeddings, masks = [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="caching features"):
        rows = dataset[start : start + batch_size]
        latents.append(encode_pictures(pipe.vae, pictures_to_tensor(rows["image"]), device=device))
        embedding, mask = encode_captions(pipe, rows["text"])
        embeddings.append(embedding)
        masks.append(mask)
    pipe.vae.to("cpu")
    null_embeddings, null_masks = encode_captions(pipe, ["", STANDARD_RECIPE.negative_prompt])
    features = {
        "latents": torch.cat(latents).contiguous(),
        "embeddings": torch.cat(embeddings).contiguous(),
        "masks": torch.cat(masks).contiguous(),
        "null_embeddings": null_embeddings.contiguous(),
        "null_masks": null_masks.contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    save_file(features, tmp, metadata={"fingerprint": fingerprint})
    tmp.replace(path)
    return features


# ------------------------------------------------------------------------------------------------------------
# The transformer: PixArt's objective on the cached features
# ------------------------------------------------------------------------------------------------------------


class DiffusionTerms:
    """The noise schedule's terms that the loss needs, from a diffusers scheduler config (betas of the checkpoint)."""

    def __init__(self, scheduler_config: Any):
        from diffusers import DDPMScheduler

        ddpm = DDPMScheduler.from_config(scheduler_config)
        self.steps = ddpm.config.num_train_timesteps
        betas = ddpm.betas.double()
        alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - previous) / (1.0 - alphas_cumprod)
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        # log of the posterior variance, with t=0's (zero) replaced by t=1's, as improved DDPM does
        self.posterior_log_variance = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])).float()
        self.log_betas = torch.log(betas).float()
        self.posterior_mean_x0 = (betas * previous.sqrt() / (1.0 - alphas_cumprod)).float()
        self.posterior_mean_xt = ((1.0 - previous) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod)).float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _at(self.sqrt_alphas_cumprod, t, x0) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def variance_loss(self, variance: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """KL between the true posterior q(x_{t-1} | x_t, x_0) and the model's, in bits per dimension.

        ``variance`` in [-1, 1] interpolates the log variance between the posterior's and beta's (learned range);
        the predicted mean comes from ``eps``, detached, so this term trains the variance only.
        """
        min_log, max_log = _at(self.posterior_log_variance, t, x0), _at(self.log_betas, t, x0)
        fraction = (variance + 1) / 2
        model_log_variance = fraction * max_log + (1 - fraction) * min_log
        x0_predicted = (xt - _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * eps.detach()) / _at(self.sqrt_alphas_cumprod, t, x0)
        mean_x0, mean_xt = _at(self.posterior_mean_x0, t, x0), _at(self.posterior_mean_xt, t, x0)
        true_mean, model_mean = mean_x0 * x0 + mean_xt * xt, mean_x0 * x0_predicted + mean_xt * xt
        kl = 0.5 * (-1.0 + model_log_variance - min_log + torch.exp(min_log - model_log_variance)
                    + (true_mean - model_mean) ** 2 * torch.exp(-model_log_variance))
        return kl.mean() / math.log(2.0)


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device)[t].view(-1, *([1] * (like.dim() - 1)))


def pixart_loss(transformer, terms: DiffusionTerms, latents, embeddings, masks, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """PixArt's training loss for one batch: noise MSE plus the learned-variance KL (improved DDPM's hybrid loss)."""
    t = torch.randint(0, terms.steps, (len(latents),), generator=generator).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    xt = terms.add_noise(latents, noise, t)
    output = transformer(xt, encoder_hidden_states=embeddings, encoder_attention_mask=masks, timestep=t,
                         added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
    eps, variance = output.chunk(2, dim=1)
    mse = F.mse_loss(eps, noise)
    vlb = terms.variance_loss(variance, eps, latents, xt, t) * terms.steps / 1000  # improved DDPM's weighting
    return mse + vlb, {"mse": mse.item(), "vlb": vlb.item()}


def sample_batch(features: dict[str, torch.Tensor], settings: TrainingSettings, generator: torch.Generator):
    """A random batch of cached features; ``caption_dropout`` of the captions become an unconditional one."""
    index = torch.randint(len(features["latents"]), (settings.batch_size,), generator=generator)
    latents, embeddings, masks = features["latents"][index], features["embeddings"][index].clone(), features["masks"][index].clone()
    dropped = torch.rand(settings.batch_size, generator=generator) < settings.caption_dropout
    if dropped.any():
        which = torch.randint(len(features["null_embeddings"]), (int(dropped.sum()),), generator=generator)
        embeddings[dropped], masks[dropped] = features["null_embeddings"][which], features["null_masks"][which]
    device = settings.device
    return latents.to(device), embeddings.to(device), masks.to(device)


def learning_rate_factor(step: int, settings: TrainingSettings) -> float:
    """The learning rate at ``step`` as a fraction of ``settings.learning_rate``: a linear warm-up, then a cosine down
    to a tenth at the last step (the small steps at the end settle the weights, which sharpens the samples)."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_transformer(
    pipe,
    features: dict[str, torch.Tensor],
    settings: TrainingSettings,
    on_sample: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train ``pipe.transformer`` on cached features; every ``sample_every`` steps call ``on_sample(step)``.

    AdamW with a linear warm-up and a cosine decay (``learning_rate_factor``), gradients clipped at 1. Returns one
    record per step (loss, mse, vlb, seconds).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    transformer = pipe.transformer.to(settings.device).train()
    terms = DiffusionTerms(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, settings))
    history = []
    progress = tqdm(range(1, settings.steps + 1), desc="transformer")
    for step in progress:
        start = time.perf_counter()
        loss, parts = pixart_loss(transformer, terms, *sample_batch(features, settings, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append({"step": step, "loss": loss.item(), **parts, "seconds": time.perf_counter() - start})
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if on_sample and (step % settings.sample_every == 0 or step == settings.steps):
            transformer.eval()
            on_sample(step)
            transformer.train()
    transformer.eval()
    return history


def save_pipeline(pipe, folder: Path) -> Path:
    """Save a trained pipeline as a diffusers folder (temporary folder, renamed at the end) on the CPU."""
    pipe.to("cpu")
    with atomic_folder(Path(folder)) as tmp:
        pipe.save_pretrained(tmp)
    assert (Path(folder) / MODEL_INDEX).is_file()
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
    settings: TrainingSettings,
    dataset_size: int = 2048,
    vae_steps: int | None = None,
    progress: Callable[[str], None] = print,
    resume: Path | None = None,
) -> dict[str, Any]:
    """The whole of notebook 6 in one call: data, VAE, cached features, transformer, saved diffusers folder.

    ``work`` keeps the dataset, the starting pipeline, the fitted VAE and the feature cache, so a run stopped during
    the transformer's training starts again from there; ``out`` receives the trained model. ``resume``, a model
    this function saved, trains on from it (more steps, on another day or another machine) instead of from
    scratch: no starting pipeline, its VAE kept as it is (no VAE losses). Returns the loss histories and the
    seconds of each stage.
    """
    from .shapes import load_captioned_images, make_dataset

    work, seconds = Path(work), {}
    start = time.perf_counter()
    dataset = load_captioned_images(make_dataset(work / "data", dataset_size, seed=settings.seed))
    pipe = start_pipeline(work / "start") if resume is None else continue_from(Path(resume))
    seconds["data"] = time.perf_counter() - start
    progress(f"{len(dataset)} captioned pictures, starting pipeline built ({seconds['data']:.0f} s)")
    start, vae_losses = time.perf_counter(), []
    if resume is None:
        vae_steps = vae_steps_for(settings.steps) if vae_steps is None else vae_steps
        vae_losses = fit_vae_once(pipe, pictures_to_tensor(dataset["image"]), work / "vae", vae_steps, settings)
    seconds["vae"] = time.perf_counter() - start
    progress(f"VAE fitted: loss {np.mean(vae_losses[-50:]):.5f} ({seconds['vae']:.0f} s)" if vae_losses else f"VAE kept from {resume}")
    start = time.perf_counter()
    features = cache_features(pipe, dataset, work / "features.safetensors", device=settings.device)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    history = train_transformer(pipe, features, settings)
    seconds["transformer"] = time.perf_counter() - start
    progress(f"transformer trained: loss {np.mean([h['loss'] for h in history[-100:]]):.4f} ({seconds['transformer']:.0f} s)")
    save_pipeline(pipe, out)
    return {"vae_losses": vae_losses, "history": history, "seconds": seconds}
