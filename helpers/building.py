"""PixArt models built here from configs, offline: the small ``tiny`` ones with seeded random weights, and full-size
folders with random weights in the real checkpoints' shapes (speed and memory do not depend on the weights)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import torch

from .checkpoints import SDXL_VAE_SCALING_FACTOR, scheduler_from_config, store_in_float32
from .folders import atomic_folder
from .settings import ASSETS, LCM_RECIPE, MODEL_INDEX, STANDARD_RECIPE

# The scheduler configurations of the two real checkpoints, so that a small model samples like the one it stands for;
# each one's class is its sampling recipe's.
LCM_SCHEDULER_CONFIG = {
    "_class_name": LCM_RECIPE.scheduler,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
}
DPM_SCHEDULER_CONFIG = {
    "_class_name": STANDARD_RECIPE.scheduler,
    "algorithm_type": "dpmsolver++",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "use_karras_sigmas": False,
}

# A PixArt small enough to build in seconds, with the real checkpoint's code paths: sample size 128 turns on the
# resolution and aspect-ratio conditions and the 1024 aspect-ratio bins; four VAE blocks give the scale factor 8.
TINY_TRANSFORMER_CONFIG = dict(
    sample_size=128,
    num_layers=2,
    patch_size=2,
    attention_head_dim=8,
    num_attention_heads=3,
    in_channels=4,
    out_channels=8,
    caption_channels=32,
    cross_attention_dim=24,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
)
TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=128,
    scaling_factor=0.18215,
)
TINY_T5_CONFIG = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
)
# What makes a PixArt-Σ of the same shapes: no resolution or aspect-ratio conditions, and the SDXL VAE's scaling.
SIGMA_TRANSFORMER = {"use_additional_conditions": False}
SIGMA_VAE = {"scaling_factor": SDXL_VAE_SCALING_FACTOR}
# The small PixArt-Σ (``tiny-sigma``): sample size 256, the 2048 bins (16 384 tokens at 2048²), like PixArt-Sigma-XL-2-2K-MS.
TINY_SIGMA_TRANSFORMER_CONFIG = {**TINY_TRANSFORMER_CONFIG, **SIGMA_TRANSFORMER, "sample_size": 256}
TINY_SIGMA_VAE_CONFIG = {**TINY_VAE_CONFIG, **SIGMA_VAE, "sample_size": 256}
FAMILIES = {"alpha": "PixArtAlphaPipeline", "sigma": "PixArtSigmaPipeline"}
PIPELINE_CLASSES = tuple(FAMILIES.values())
TINY_VOCAB_SIZE = 400
TINY_SEED = 0

# The real checkpoint's configs (PixArt-XL-2-1024-MS transformer, sd-vae-ft-ema VAE, T5-v1.1-XXL encoder), for
# full-size folders with random weights: speed and memory do not depend on the weights' values.
FULL_CONFIGS = ASSETS / "pixart-xl-configs"
RANDOM_PRESETS = ("full", "tiny")
# The tiny VAE (TAESD's architecture, diffusers' ``AutoencoderTiny``) a random model gets in ``tiny_vae/``: TAESD's own
# shapes at full size (madebyollin/taesd, taesdxl), a narrow one for the small models.
TINY_VAE_FOLDER = "tiny_vae"
SMALL_TINY_VAE_CONFIG = {"encoder_block_out_channels": (8,) * 4, "decoder_block_out_channels": (8,) * 4,
                         "num_encoder_blocks": (1,) * 4, "num_decoder_blocks": (1,) * 4}
SCHEDULERS = {"lcm": LCM_SCHEDULER_CONFIG, "dpm": DPM_SCHEDULER_CONFIG}


def full_size_configs() -> dict[str, dict]:
    """The transformer, VAE and T5 configs of PixArt-XL-2-1024-MS, as stored in ``assets/pixart-xl-configs``."""
    return {
        name: {k: v for k, v in json.loads((FULL_CONFIGS / f"{name}.json").read_text()).items() if not k.startswith("_")}
        for name in ("transformer", "vae", "t5")
    }


def build_random(
    folder: Path, preset: str = "full", sample_size: int | None = None, scheduler: str = "lcm", family: str = "alpha"
) -> Path:
    """A diffusers PixArt folder with random weights that loads like a downloaded checkpoint.

    ``preset="full"`` has the real PixArt-XL-2-1024-MS shapes (T5-XXL stored in FP32 like the real checkpoint,
    about 22 GB; built in bf16 to halve building's memory, then upcast on disk); ``"tiny"`` is the small model.
    ``sample_size`` (latent side: 32, 64, 128 or 256) changes the native size and its aspect-ratio bins (64: a
    512² checkpoint without resolution conditions); ``scheduler`` is ``"lcm"`` (4 steps) or ``"dpm"`` (guided);
    ``family="sigma"`` makes a PixArt-Σ (sample size 256: PixArt-Sigma-XL-2-2K-MS's shapes).
    """
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}: choose one of {', '.join(FAMILIES)}.")
    if preset not in RANDOM_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: choose one of {', '.join(RANDOM_PRESETS)}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}.")
    transformer, vae, t5 = random_configs(preset, sample_size, family)
    dtype = torch.bfloat16 if preset == "full" else torch.float32
    tiny_vae = {} if preset == "full" else SMALL_TINY_VAE_CONFIG
    return build_random_pipeline(folder, transformer, vae, t5, SCHEDULERS[scheduler], dtype, FAMILIES[family], tiny_vae)


def random_configs(preset: str = "full", sample_size: int | None = None, family: str = "alpha") -> tuple[dict, dict, dict]:
    """The transformer, VAE and T5 configs :func:`build_random` builds (``preset``, ``sample_size`` and ``family``
    as there): the benchmark builds Σ-2K's parts from the same ones."""
    if preset == "full":
        configs = full_size_configs()
        transformer, vae, t5 = configs["transformer"], configs["vae"], configs["t5"]
    else:
        transformer, vae, t5 = TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, TINY_T5_CONFIG
    if sample_size is not None:
        from .sizes import aspect_ratio_bins

        aspect_ratio_bins(sample_size)  # a clear error for a sample size without bins
        transformer = {**transformer, "sample_size": sample_size}
    if family == "sigma":
        transformer, vae = {**transformer, **SIGMA_TRANSFORMER}, {**vae, **SIGMA_VAE}
    return transformer, vae, t5


def build_tiny_pipeline(folder: Path, model_id: str = "tiny") -> Path:
    """Build a small PixArt diffusers folder from configs with seeded random weights: the same bytes every time.

    ``tiny``: PixArt-α with the LCM scheduler (like the default checkpoint); ``tiny-standard``: the same with
    DPM-Solver (like PixArt-XL-2-1024-MS); ``tiny-sigma``: PixArt-Σ in PixArt-Sigma-XL-2-2K-MS's form, DPM-Solver.
    """
    if model_id == "tiny-sigma":
        return build_random_pipeline(
            folder, TINY_SIGMA_TRANSFORMER_CONFIG, TINY_SIGMA_VAE_CONFIG, TINY_T5_CONFIG, DPM_SCHEDULER_CONFIG,
            pipeline_class="PixArtSigmaPipeline",
        )
    scheduler = DPM_SCHEDULER_CONFIG if model_id == "tiny-standard" else LCM_SCHEDULER_CONFIG
    return build_random_pipeline(folder, TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, TINY_T5_CONFIG, scheduler)


def build_random_pipeline(
    folder: Path,
    transformer_config: dict,
    vae_config: dict,
    t5_config: dict,
    scheduler_config: dict = LCM_SCHEDULER_CONFIG,
    text_encoder_dtype: torch.dtype = torch.float32,
    pipeline_class: str = "PixArtAlphaPipeline",
    tiny_vae_config: dict = SMALL_TINY_VAE_CONFIG,
) -> Path:
    """A PixArt diffusers folder (``pipeline_class``: α or Σ) with seeded random weights in the given configs, the project's
    tokenizer, and a tiny VAE in ``tiny_vae/`` (``tiny_vae_config`` over TAESD's).

    Used for ``tiny`` and, with the real configs, for full-size folders (random weights run as fast as real
    ones). ``text_encoder_dtype=torch.bfloat16`` halves T5-XXL's 19 GB while it is built; it is then stored in FP32,
    one tensor at a time, as the real checkpoint is. Written to a temporary folder and renamed, so a half-built
    folder is never used.
    """
    folder = Path(folder)
    if (folder / MODEL_INDEX).is_file():
        return folder
    import diffusers
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    with atomic_folder(folder) as tmp:
        tokenizer = train_tiny_tokenizer(tmp / "_spm")
        t5_config = {"vocab_size": len(tokenizer), **t5_config}
        torch.manual_seed(TINY_SEED)
        with _default_dtype(text_encoder_dtype):
            text_encoder = T5EncoderModel(T5Config(**t5_config)).eval()
        torch.manual_seed(TINY_SEED + 1)
        transformer = PixArtTransformer2DModel(**transformer_config).eval()
        torch.manual_seed(TINY_SEED + 2)
        vae = AutoencoderKL(**vae_config).eval()
        pipe = getattr(diffusers, pipeline_class)(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
            scheduler=scheduler_from_config(scheduler_config),
        )
        pipe.save_pretrained(tmp)
        save_random_tiny_vae(tmp / TINY_VAE_FOLDER, {**tiny_vae_config, "latent_channels": vae.config.latent_channels})
        del pipe, text_encoder, transformer, vae
        shutil.rmtree(tmp / "_spm")
        if text_encoder_dtype != torch.float32:
            store_in_float32(tmp / "text_encoder")
    return folder


def save_random_tiny_vae(folder: Path, config: dict) -> Path:
    """A seeded random ``AutoencoderTiny`` (``config`` over TAESD's), saved in ``folder``: a model's tiny VAE where the
    speed matters and the pictures do not."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(TINY_SEED + 3)
    AutoencoderTiny(**config).eval().save_pretrained(folder)
    return Path(folder)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def train_tiny_tokenizer(folder: Path):
    """Train a T5-style sentencepiece tokenizer on the text the project ships (pad 0, eos 1, unk 2, like T5)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(ASSETS / "tokenizer_corpus.txt"),
        model_prefix=str(folder / "spiece"),
        vocab_size=TINY_VOCAB_SIZE,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    # from_pretrained, not T5Tokenizer(vocab_file=...): in transformers 5 the latter maps every word to <unk>.
    return T5Tokenizer.from_pretrained(folder)
