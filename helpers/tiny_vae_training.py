"""A tiny VAE decoder for the shapes model: diffusers' ``AutoencoderTiny`` (the TAESD architecture) distilled from the
model's own ``AutoencoderKL``, so that previews and pictures decode many times faster than with the full VAE.

As TAESD does, it decodes the latents *as the diffusion pipeline holds them* (the full encoder's mean times the VAE's
``scaling_factor``) straight to a [-1, 1] picture: ``AutoencoderTiny.from_pretrained(folder).decode(latents).sample``.
It learns the full VAE's decode of those latents (distillation), not the rendered picture, so it copies the full
decoder, blur and all. Only the decoder half is trained and meant to be used; the encoder half is as small as
``AutoencoderTiny`` allows (4 channels, no blocks) and stays untrained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .folders import atomic_folder
from .shapes import all_scenes, render
from .training_vae import encode_pictures, pictures_to_tensor

# Four stages of 32 channels: 3 nearest-neighbour 2× upsamplings = 8×, the full VAE's down-scaling. One block in
# each of the first three stages; none in the last, full-resolution one (only its 3×3 output convolution): a block
# there cost 2.5× the time of a training step and, at 800 steps, lost 1 dB. The encoder's four stages keep its 8×
# down-scaling (so the folder is a consistent AutoencoderTiny) with ~700 weights.
SHAPES_TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "encoder_block_out_channels": (4, 4, 4, 4),
    "num_encoder_blocks": (0, 0, 0, 0),
    "decoder_block_out_channels": (32, 32, 32, 32),
    "num_decoder_blocks": (1, 1, 1, 0),
    "upsampling_scaling_factor": 2,
    "act_fn": "relu",
    "upsample_fn": "nearest",
    "scaling_factor": 1.0,  # TAESD's: it takes the pipeline's (already scaled) latents as they are
    "shift_factor": 0.0,
}
TINY_VAE_FOLDER = "tiny_vae"  # inside the diffusers folder
RECORD_NAME = "distillation.json"  # the recipe and the final loss, beside the weights
QUALITY_SEED = 20261207  # held-out scenes: never the training seed's


def scene_pictures(count: int, seed: int, side: int = 256) -> torch.Tensor:
    """``count`` random shapes scenes (jittered, as the training data is) in [-1, 1], (N, 3, side, side)."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    return pictures_to_tensor([render(scenes[rng.integers(len(scenes))], side, side, rng) for _ in range(count)])


@torch.no_grad()
def full_decode(vae, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """The full VAE's picture of pipeline latents (divided by its ``scaling_factor`` first, as the pipeline does),
    clamped to [-1, 1] like the pipeline's post-processing: the target the tiny decoder learns."""
    vae.eval()
    chunks = [
        vae.decode(latents[i : i + batch_size] / vae.config.scaling_factor).sample.clamp(-1, 1)
        for i in range(0, len(latents), batch_size)
    ]
    return torch.cat(chunks)


def noised(latents: torch.Tensor, generator: torch.Generator, lowest: float = 0.5) -> torch.Tensor:
    """Latents part of the way along the diffusion: ``sqrt(a)·x + sqrt(1-a)·noise``, ``a`` uniform in
    [``lowest``, 1], so that a preview of a half-denoised latent decodes as the full VAE would draw it."""
    keep = lowest + (1 - lowest) * torch.rand(len(latents), 1, 1, 1, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    return keep.sqrt() * latents + (1 - keep).sqrt() * noise


def distillation_pairs(
    vae, count: int, seed: int, side: int = 256, noised_fraction: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pipeline latents of ``count`` rendered scenes (plus ``noised_fraction`` as many noised copies) and the full
    VAE's decode of each: the tiny decoder's inputs and targets."""
    latents = encode_pictures(vae, scene_pictures(count, seed, side))
    extra = round(count * noised_fraction)
    if extra:
        generator = torch.Generator().manual_seed(seed)
        latents = torch.cat([latents, noised(latents[:extra], generator)])
    targets = torch.cat([full_decode(vae, chunk) for chunk in tqdm(latents.split(32), desc="full decode")])
    return latents.contiguous(), targets.contiguous()


def aligned_crops(
    latents: torch.Tensor, targets: torch.Tensor, side: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random window of each latent (``side``² latent pixels) and of its picture (8× that); whole when
    ``side`` is None or not smaller than the latents."""
    height, width = latents.shape[-2:]
    if side is None or side >= min(height, width):
        return latents, targets
    scale = targets.shape[-1] // width
    tops = torch.randint(height - side + 1, (len(latents),), generator=generator).tolist()
    lefts = torch.randint(width - side + 1, (len(latents),), generator=generator).tolist()
    pairs = [
        (z[:, t : t + side, s : s + side], x[:, t * scale : (t + side) * scale, s * scale : (s + side) * scale])
        for z, x, t, s in zip(latents, targets, tops, lefts)
    ]
    return torch.stack([z for z, _ in pairs]), torch.stack([x for _, x in pairs])


def new_tiny_vae(seed: int, config: dict[str, Any] | None = None):
    """An untrained ``AutoencoderTiny`` of ``config`` (``SHAPES_TINY_VAE_CONFIG``), its weights drawn from ``seed``."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(**(config or SHAPES_TINY_VAE_CONFIG))


def distil(
    tiny,
    latents: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    batch_size: int = 8,
    crop: int | None = 16,
    learning_rate: float = 2e-3,  # 5e-3 lost 1.4 dB at 800 steps
    seed: int = 0,
) -> list[float]:
    """Fit ``tiny``'s decoder to map ``latents`` to ``targets``: MSE (what PSNR measures) on aligned random crops,
    the learning rate falling along a cosine to a twentieth. Crops cost less than whole pictures; the decoder is
    convolutional, so it learns the same thing. Returns every step's loss."""
    generator = torch.Generator().manual_seed(seed)
    tiny.train()
    optimizer = torch.optim.Adam(tiny.decoder.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps), eta_min=learning_rate / 20)
    losses = []
    progress = tqdm(range(steps), desc="tiny VAE")
    for _ in progress:
        rows = torch.randint(len(latents), (batch_size,), generator=generator)
        z, x = aligned_crops(latents[rows], targets[rows], crop, generator)
        loss = F.mse_loss(tiny.decode(z).sample, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        progress.set_postfix(mse=f"{np.mean(losses[-50:]):.5f}", refresh=False)
    tiny.eval()
    return losses


def load_full_vae(diffusers_folder: Path):
    """The diffusers model's own ``AutoencoderKL`` (its ``vae`` sub-folder), in eval mode on the CPU."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(diffusers_folder) / "vae").eval()


def train_tiny_vae(
    diffusers_folder: Path,
    out: Path | None = None,
    steps: int = 2000,
    seed: int = 0,
    pictures: int = 256,
    side: int = 256,
    noised_fraction: float = 0.25,
    batch_size: int = 8,
    crop: int | None = 16,
    learning_rate: float = 2e-3,
) -> Path:
    """Distil the full VAE decoder of ``diffusers_folder`` into a tiny one and save it to ``out`` (default
    ``<diffusers_folder>/tiny_vae``), written into a temporary folder renamed at the end.

    The same arguments give the same weights. ``pictures`` scenes of ``side``² are encoded once, a quarter more
    noised (``noised_fraction``) so that previews of half-denoised latents look sane, and decoded by the full VAE.
    """
    started = time.perf_counter()
    vae = load_full_vae(diffusers_folder)
    latents, targets = distillation_pairs(vae, pictures, seed, side, noised_fraction)
    tiny = new_tiny_vae(seed)
    losses = distil(tiny, latents, targets, steps, batch_size, crop, learning_rate, seed)
    recipe = {
        "steps": steps, "seed": seed, "pictures": pictures, "side": side, "noised_fraction": noised_fraction,
        "batch_size": batch_size, "crop": crop, "learning_rate": learning_rate,
    }
    record = {
        "recipe": recipe,
        "final_mse": float(np.mean(losses[-100:])) if losses else None,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    out = Path(out) if out is not None else Path(diffusers_folder) / TINY_VAE_FOLDER
    with atomic_folder(out) as tmp:
        tiny.save_pretrained(tmp)
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return out


def _unit_pictures(pictures: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] tensors → H×W×3 float arrays in [0, 1], clamped as the pipeline's post-processing does."""
    return list((pictures.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).double().numpy())


@torch.no_grad()
def tiny_vae_quality(
    diffusers_folder: Path, tiny_folder: Path, count: int = 16, seed: int = QUALITY_SEED, side: int = 256
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of the tiny decode against the full decode of ``count`` held-out scenes (another
    seed than training's): how far the fast preview is from the picture the pipeline would draw."""
    from diffusers import AutoencoderTiny

    from .comparison import psnr, ssim

    latents, targets = distillation_pairs(load_full_vae(diffusers_folder), count, seed, side)
    tiny = AutoencoderTiny.from_pretrained(tiny_folder).eval()
    drawn = torch.cat([tiny.decode(chunk).sample for chunk in latents.split(8)])
    pairs = list(zip(_unit_pictures(targets), _unit_pictures(drawn)))
    return {
        "psnr": float(np.mean([psnr(full, fast) for full, fast in pairs])),
        "ssim": float(np.mean([ssim(full, fast) for full, fast in pairs])),
        "count": float(count),
    }
