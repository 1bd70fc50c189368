"""The PyTorch reference: diffusers' own pipeline in the precision this CPU runs fastest, one stage in memory at a time.

The real checkpoint's T5-XXL encoder is 19 GB in FP32: with the transformer and the VAE beside it, the whole
pipeline does not fit a 24 GiB machine. The reference therefore runs in two stages, each loaded from the folder
and freed before the next: T5 encodes every prompt, then the transformer and the VAE make the pictures from the
stored embeddings. The pictures are those of the diffusers pipeline's ``__call__`` (α or Σ): same caption cleaning, same noise.
The edits' reference (:func:`editing_reference`) is that pipeline whole, with ``helpers.editing`` mixed in.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .editing import EditingMixin
from .machine import bf16_instructions, free_memory
from .settings import SamplingRecipe
from .sources import diffusers_pipeline_class


def reference_dtype() -> torch.dtype:
    """bfloat16 on CPUs with bf16 instructions (AVX512-BF16, AMX): half the memory, several times faster; else fp32.

    Without them PyTorch emulates bf16 matrix multiplies, hundreds of times slower than fp32.
    """
    return torch.bfloat16 if bf16_instructions() else torch.float32


def encode_prompts(
    source: Path, prompts: Sequence[str], recipe: SamplingRecipe, dtype: torch.dtype, batch_size: int = 16
) -> tuple[list[dict[str, torch.Tensor]], float]:
    """The T5 embeddings of ``prompts`` (and of diffusers' default negative prompt, none, when the recipe guides), in
    batches, and the seconds spent encoding (loading not counted).

    Only the tokenizer and the text encoder are loaded, and freed before returning.
    """
    pipe = diffusers_pipeline_class(source).from_pretrained(source, transformer=None, vae=None, dtype=dtype)
    guided = recipe.guidance_scale > 1
    batches = []
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(prompts), batch_size):
            chunk = list(prompts[first : first + batch_size])
            embeds, mask, negative, negative_mask = pipe.encode_prompt(
                chunk, do_classifier_free_guidance=guided, clean_caption=True
            )
            batch = {"prompt_embeds": embeds, "prompt_attention_mask": mask}
            if guided:
                batch |= {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}
            batches.append(batch)
    seconds = time.perf_counter() - start
    del pipe
    free_memory()
    return batches, seconds


def reference_images(
    source: Path,
    prompts: Sequence[str],
    seeds: Sequence[int],
    recipe: SamplingRecipe,
    dtype: torch.dtype | None = None,
    batch_size: int = 16,
    **kwargs,
) -> tuple[list[Image.Image], float]:
    """The PyTorch pipeline's pictures of ``prompts`` (one seed each), and the seconds spent computing them.

    Loading is not counted. ``dtype`` defaults to :func:`reference_dtype`; ``kwargs`` go to the pipeline's call
    (``height``, ``width``, ``use_resolution_binning``, ...).
    """
    dtype = dtype or reference_dtype()
    batches, seconds = encode_prompts(source, prompts, recipe, dtype, batch_size)
    pipe = diffusers_pipeline_class(source).from_pretrained(source, text_encoder=None, tokenizer=None, dtype=dtype)
    pipe.set_progress_bar_config(disable=len(prompts) > 1)
    images = []
    start = time.perf_counter()
    with torch.no_grad():
        for index, batch in enumerate(batches):
            chunk = seeds[index * batch_size : (index + 1) * batch_size]
            generators = [torch.Generator().manual_seed(seed) for seed in chunk]
            # the negative prompt's embeddings are given: diffusers refuses its default negative prompt beside them
            images += pipe(generator=generators, negative_prompt=None, **recipe.call_arguments(**batch, **kwargs)).images
    seconds += time.perf_counter() - start
    del pipe
    free_memory()
    return images, seconds


def editing_reference(source: Path, dtype: torch.dtype = torch.float32):
    """diffusers' own pipeline of a folder (α or Σ), loaded whole, with image-to-image and inpainting mixed in: the
    same code as the OpenVINO pipeline's edits (``helpers.editing``) on diffusers' PyTorch modules."""
    return editing_pipeline_class(diffusers_pipeline_class(source)).from_pretrained(source, dtype=dtype)


@functools.cache
def editing_pipeline_class(pipeline_class: type) -> type:
    """``PixArtAlphaPipeline`` (or Σ's) with :class:`~helpers.editing.EditingMixin` before it."""
    return type(f"{pipeline_class.__name__}WithEdits", (EditingMixin, pipeline_class), {})


def add_torch_adapters(transformer: torch.nn.Module, adapters: dict[str, tuple[Path, float]]):
    """PixArt users' PyTorch route to LoRA, the reference for the OpenVINO one: peft's LoRA layers put into a diffusers
    transformer in place (``PeftModel.from_pretrained``, as PixArt's training scripts run inference), each adapter
    ``name: (PEFT folder, strength)``, all active. Returns the ``PeftModel``."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    (first, (folder, _)), *others = adapters.items()
    model = PeftModel.from_pretrained(transformer, folder, adapter_name=first)
    for name, (folder, _) in others:
        model.load_adapter(folder, adapter_name=name)
    model.base_model.set_adapter(list(adapters))
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            for name, (_, strength) in adapters.items():
                module.set_scale(name, strength)
    return model
