"""The VAE, fitted to the pictures (notebook 6's "Fitting the VAE"): reconstruction plus a small KL term on random
crops, a ``scaling_factor`` that gives the transformer unit-variance latents, and ``fit_vae_once``, the stage that
fits it once per work folder and keeps it there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .folders import atomic_folder


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


def fit_vae_once(pipe, pictures: torch.Tensor, folder: Path, steps: int, device: str = "cpu", seed: int = 0) -> list[float]:
    """Fit ``pipe.vae`` (``train_vae``) and keep it in ``folder`` with its losses; a later call with the same number
    of pictures, steps and seed loads it instead of fitting it again. The VAE is left on the CPU."""
    from diffusers import AutoencoderKL

    folder, recipe = Path(folder), {"pictures": len(pictures), "steps": steps, "seed": seed}
    record = folder / "fit.json"
    kept = json.loads(record.read_text()) if record.is_file() else {}
    if kept.get("recipe") == recipe:
        pipe.register_modules(vae=AutoencoderKL.from_pretrained(folder))
        return kept["losses"]
    losses = train_vae(pipe.vae, pictures, steps, device=device, seed=seed)
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
