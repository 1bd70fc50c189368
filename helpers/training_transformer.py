"""The transformer (notebook 6's "Training the transformer"): PixArt's objective on the cached features, the noise
MSE plus the learned variance's KL (improved DDPM's hybrid loss), and ``TrainingPlan``, how long and how it trains."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# The learning rate at the last step, as a fraction of the peak: the small steps at the end settle the weights,
# which sharpens the samples.
MIN_LEARNING_RATE = 0.1


@dataclass
class TrainingPlan:
    """How long and how the transformer trains (``steps`` is notebook 6's ``TRAINING_STEPS``, the command's ``--steps``)."""

    steps: int = 4000
    batch_size: int = 16
    learning_rate: float = 1e-3  # a 1.8 M-parameter model: 3e-4 learned the captions three times slower
    warmup_steps: int = 100
    caption_dropout: float = 0.1  # captions replaced by an "unconditional" one, so guidance works
    sample_every: int = 500
    device: str = "cpu"
    seed: int = 0


class DiffusionTerms:
    """The noise schedule's terms that the loss needs, from a diffusers scheduler config (betas of the checkpoint):
    the noising is DDPM's own (``DDPMScheduler.add_noise``), the posterior's terms for the variance loss are here."""

    def __init__(self, scheduler_config: Any):
        from diffusers import DDPMScheduler

        ddpm = self.ddpm = DDPMScheduler.from_config(scheduler_config)
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
        """``x0`` noised to timesteps ``t`` (the forward process)."""
        return self.ddpm.add_noise(x0, noise, t)

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


def sample_batch(features: dict[str, torch.Tensor], plan: TrainingPlan, generator: torch.Generator):
    """A random batch of cached features; ``caption_dropout`` of the captions become an unconditional one."""
    index = torch.randint(len(features["latents"]), (plan.batch_size,), generator=generator)
    latents, embeddings, masks = features["latents"][index], features["embeddings"][index].clone(), features["masks"][index].clone()
    dropped = torch.rand(plan.batch_size, generator=generator) < plan.caption_dropout
    if dropped.any():
        which = torch.randint(len(features["null_embeddings"]), (int(dropped.sum()),), generator=generator)
        embeddings[dropped], masks[dropped] = features["null_embeddings"][which], features["null_masks"][which]
    device = plan.device
    return latents.to(device), embeddings.to(device), masks.to(device)


def learning_rate_schedule(optimizer: torch.optim.Optimizer, plan: TrainingPlan) -> torch.optim.lr_scheduler.LambdaLR:
    """A linear warm-up over ``plan.warmup_steps``, then a cosine down to :data:`MIN_LEARNING_RATE` of the peak at
    ``plan.steps`` (transformers' schedule)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, plan.warmup_steps, plan.steps, min_lr_rate=MIN_LEARNING_RATE
    )


def learning_rate_factor(step: int, plan: TrainingPlan) -> float:
    """The learning rate after ``step`` optimizer steps as a fraction of ``plan.learning_rate``: the schedule's
    curve, read on an optimizer that trains nothing."""
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    return learning_rate_schedule(optimizer, plan).lr_lambdas[0](step)


def train_transformer(
    pipe,
    features: dict[str, torch.Tensor],
    plan: TrainingPlan,
    on_sample: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train ``pipe.transformer`` on cached features; every ``plan.sample_every`` steps call ``on_sample(step)``.

    AdamW with a linear warm-up and a cosine decay (``learning_rate_schedule``), gradients clipped at 1. Returns one
    record per step (loss, mse, vlb, seconds).
    """
    generator = torch.Generator().manual_seed(plan.seed)
    transformer = pipe.transformer.to(plan.device).train()
    terms = DiffusionTerms(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=plan.learning_rate, weight_decay=0.0)
    schedule = learning_rate_schedule(optimizer, plan)
    history = []
    bar = tqdm(range(1, plan.steps + 1), desc="transformer")
    for step in bar:
        start = time.perf_counter()
        loss, parts = pixart_loss(transformer, terms, *sample_batch(features, plan, generator), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append({"step": step, "loss": loss.item(), **parts, "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_sample and (step % plan.sample_every == 0 or step == plan.steps):
            transformer.eval()
            on_sample(step)
            transformer.train()
    transformer.eval()
    return history
