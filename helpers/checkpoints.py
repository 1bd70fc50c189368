"""Diffusers checkpoints on disk, below the stages that read them: the tensor types a part is stored in, an FP32
copy written one tensor at a time, the scheduler a saved config describes (or a sampling recipe's, with that config's
noise schedule), and the facts of the checkpoints' kinds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .settings import SamplingRecipe

SDXL_VAE_SCALING_FACTOR = 0.13025  # PixArt-Σ decodes with SDXL's VAE, whose latents are scaled by this


def stored_dtypes(part_dir: Path) -> set[str]:
    """The tensor types (``"F32"``, ``"BF16"``, …) of the safetensors files in one part's folder (headers only)."""
    from safetensors import safe_open

    types = set()
    for file in sorted(Path(part_dir).glob("*.safetensors")):
        with safe_open(file, "pt") as reader:
            types |= {reader.get_slice(name).get_dtype() for name in reader.keys()}
    return types


def upcast_checkpoint(part_dir: Path, out_dir: Path, shard_bytes: int = 2**30) -> Path:
    """Write an FP32 copy of a half-precision safetensors checkpoint, one tensor at a time, in shards.

    Loading a bf16 T5-XXL "in fp32" makes 19 GB of anonymous memory; an FP32 file on disk is instead
    memory-mapped by ``from_pretrained`` (file-backed pages the kernel can drop), so the conversion stays lean.
    Only one shard of ``shard_bytes`` is ever in memory.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for extra in Path(part_dir).glob("*.json"):
        if not extra.name.endswith(".index.json"):
            shutil.copy(extra, out_dir / extra.name)
    weight_map, shard, size, total = {}, {}, 0, 0

    def flush() -> None:
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, out_dir / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard.clear()

    for file in sorted(Path(part_dir).glob("*.safetensors")):
        with safe_open(file, "pt") as reader:
            for key in reader.keys():
                tensor = reader.get_tensor(key)
                shard[key] = tensor.float() if tensor.is_floating_point() else tensor
                size += shard[key].nbytes
                total += shard[key].nbytes
                if size >= shard_bytes:
                    flush()
                    size = 0
    if shard:
        flush()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return out_dir


def store_in_float32(part_dir: Path) -> None:
    """Replace a half-precision part checkpoint with its FP32 copy (as the real T5 checkpoint is stored)."""
    upcast = part_dir.with_name(f"{part_dir.name}.fp32")
    upcast_checkpoint(part_dir, upcast)
    shutil.rmtree(part_dir)
    upcast.rename(part_dir)


def scheduler_from_config(config: dict):
    """The diffusers scheduler a saved ``scheduler_config.json`` describes."""
    import diffusers

    config = dict(config)
    return getattr(diffusers, config.pop("_class_name")).from_config(config)


def recipe_scheduler(recipe: SamplingRecipe, config: dict):
    """The scheduler ``recipe`` samples with, with the noise schedule (betas, training steps) of ``config``, a
    checkpoint's scheduler config: how one checkpoint is sampled with either recipe."""
    return scheduler_from_config({**config, "_class_name": recipe.scheduler})
