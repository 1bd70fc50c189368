"""Static shapes: every input of every part fixed to one call's shapes, as optimum-intel's ``pipe.reshape`` does.

OpenVINO then compiles kernels for known sizes (a few percent faster on CPU), and devices that compile static
shapes only (the NPU) can run the pipeline at all. A reshaped pipeline draws that one call's shapes and refuses any
other with an error that names ``reshape``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import openvino as ov

from .call_checks import check_generation_inputs, is_whole
from .sizes import aspect_ratio_bins


@dataclass(frozen=True)
class CallShape:
    """The shapes one pipeline call gives its parts: prompts, pictures per prompt, guidance, size, prompt length."""

    batch_size: int  # prompts per call
    num_images_per_prompt: int
    guided: bool  # classifier-free guidance doubles the transformer's batch
    height: int  # the picture's size once the pipeline has mapped it to its aspect-ratio bin
    width: int
    prompt_length: int  # tokens: the pipeline pads every prompt to max_sequence_length
    guidance_scale: float = field(default=0.0, compare=False)  # only whether it guides changes a shape

    @property
    def pictures(self) -> int:
        return self.batch_size * self.num_images_per_prompt

    def describe(self) -> str:
        prompts = f"{self.batch_size} prompt{'s' * (self.batch_size > 1)}"
        pictures = f"{self.num_images_per_prompt} picture{'s' * (self.num_images_per_prompt > 1)} each"
        guidance = "with guidance" if self.guided else "without guidance"
        return f"{prompts} × {pictures} at {self.width}×{self.height}, {guidance}, {self.prompt_length} tokens"


def text_encoder_shapes(call: CallShape) -> dict[str, list[int]]:
    """T5 encodes the prompts, then (with guidance) as many negative prompts, one batch at a time."""
    tokens = [call.batch_size, call.prompt_length]
    return {"input_ids": tokens, "attention_mask": tokens}


def transformer_shapes(call: CallShape, config: dict, vae_scale_factor: int) -> dict[str, list[int]]:
    """The transformer sees every picture's latent, twice with guidance (conditioned and not)."""
    batch = call.pictures * (2 if call.guided else 1)
    latent = [call.height // vae_scale_factor, call.width // vae_scale_factor]
    return {
        "hidden_states": [batch, config["in_channels"], *latent],
        "encoder_hidden_states": [batch, call.prompt_length, config["caption_channels"]],
        "encoder_attention_mask": [batch, call.prompt_length],
        "timestep": [batch],
        "resolution": [batch, 2],  # PixArt-α's micro-conditions at 1024² (absent from the other IRs)
        "aspect_ratio": [batch, 1],
    }


def vae_decoder_shapes(call: CallShape, config: dict, vae_scale_factor: int, tile: int | None = None) -> dict[str, list[int]]:
    """The decoder takes every picture's latent at once, or one tile of it at a time (``tile``: the tile's side)."""
    latent = [call.height // vae_scale_factor, call.width // vae_scale_factor]
    if tile is not None:
        latent = [min(side, tile) for side in latent]
    return {"latent_sample": [call.pictures, config["latent_channels"], *latent]}


def vae_encoder_shapes(call: CallShape, config: dict) -> dict[str, list[int]]:
    """An edit encodes its pictures one at a time, at the size the call draws."""
    return {"sample": [1, config["in_channels"], call.height, call.width]}


def reshaped(model: ov.Model, shapes: dict[str, list[int]]) -> ov.Model:
    """``model`` with its inputs fixed to ``shapes`` (inputs it lacks are skipped); a ``ValueError`` names any input
    left dynamic."""
    names = {port.get_any_name() for port in model.inputs}
    model.reshape({name: ov.PartialShape(shape) for name, shape in shapes.items() if name in names})
    dynamic = [port.get_any_name() for port in model.inputs if port.get_partial_shape().is_dynamic]
    if dynamic:
        raise ValueError(f"Static shapes leave input(s) {', '.join(dynamic)} of {model.friendly_name} dynamic: give them a shape.")
    return model


def needs_static_shapes(device: str) -> bool:
    """Whether ``device`` compiles static shapes only (the NPU, also inside HETERO/MULTI/AUTO lists)."""
    return "NPU" in device.upper()


def reshape_call(call: CallShape) -> str:
    """The ``pipe.reshape(...)`` call that fixes the shapes of ``call``, as an error message shows it."""
    return (
        f"pipe.reshape(batch_size={call.batch_size}, height={call.height}, width={call.width}, "
        f"num_images_per_prompt={call.num_images_per_prompt}, guidance_scale={call.guidance_scale})"
    )


def shape_mismatch_message(fixed: CallShape, asked: CallShape) -> str:
    return (
        f"This pipeline is reshaped to static shapes for {fixed.describe()}; this call asks for {asked.describe()}. "
        f"Call {reshape_call(asked)} first (it compiles again), or load the variant again for dynamic shapes."
    )


def static_device_message(device: str, asked: CallShape) -> str:
    return (
        f"{device} compiles static shapes only: fix the shapes of your pictures with {reshape_call(asked)} "
        f"before drawing, or set pipe.reshape_each_call = True."
    )


class StaticShapesMixin:
    """``reshape`` and its checks for :class:`~helpers.pipeline.OVPixArtPipeline` (its parts, recipe and bins)."""

    static_shape: CallShape | None = None  # the one call's shapes the parts are compiled for (``reshape``)

    def reshape(
        self,
        batch_size: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        max_sequence_length: int | None = None,
        use_resolution_binning: bool = True,
    ) -> "StaticShapesMixin":
        """Fix every part's input shapes to one call's, and compile them for it (low-memory: at their first call).

        As optimum-intel's ``reshape(batch_size, height, width, num_images_per_prompt)``: ``batch_size`` prompts,
        ``num_images_per_prompt`` pictures each at ``height`` × ``width`` (mapped to its aspect-ratio bin as the call
        will; default: the model's native size). ``guidance_scale`` (default: the recipe's) matters only through
        whether it guides (> 1), which doubles the transformer's batch. Calls with other shapes are refused. Returns
        the pipeline.
        """
        guidance_scale = self.recipe.guidance_scale if guidance_scale is None else guidance_scale
        kwargs = dict(height=height, width=width, num_images_per_prompt=num_images_per_prompt, guidance_scale=guidance_scale,
                      max_sequence_length=max_sequence_length, use_resolution_binning=use_resolution_binning)
        if not is_whole(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: reshape for at least 1 prompt per call.")
        check_generation_inputs("a prompt", self.recipe.num_inference_steps, height, width, guidance_scale=guidance_scale,
                                num_images_per_prompt=num_images_per_prompt, **self.check_options(use_resolution_binning))
        call = self.call_shape(["a prompt"] * batch_size, kwargs)
        scale = self.vae_scale_factor
        vae = self.full_vae  # the model's own VAE, whichever decoder is set
        tile = vae.tile_latent_size if vae.use_tiling else None
        self.text_encoder.reshape(text_encoder_shapes(call))
        self.transformer.reshape(transformer_shapes(call, self.transformer.config, scale))
        vae.reshape(vae_decoder_shapes(call, vae.config, scale, tile))
        if self._tiny_vae is not None:  # the tiny decoder, once made: it decodes whole latents
            self._tiny_vae.reshape(vae_decoder_shapes(call, vae.config, scale))
        if vae.encoder is not None:
            vae.encoder.reshape(vae_encoder_shapes(call, vae.encoder.config))
        self.static_shape = call
        self.compile()
        return self

    def reshape_for(self, prompt: str | list[str] | None, **kwargs: Any) -> "StaticShapesMixin":
        """Reshape to the shapes of the call ``pipe(prompt, **kwargs)`` unless the parts have them already: what each
        call does on a device that compiles static shapes only (``reshape_each_call``). Returns the pipeline."""
        kwargs = {"guidance_scale": self.recipe.guidance_scale, **kwargs}
        call = self.call_shape(prompt, kwargs)
        if call != self.static_shape:
            self.reshape(call.batch_size, call.height, call.width, call.num_images_per_prompt, call.guidance_scale,
                         call.prompt_length, use_resolution_binning=False)  # its size is binned already
        return self

    def call_shape(self, prompt: str | list[str] | None, kwargs: dict) -> CallShape:
        """The shapes a call with these arguments gives the parts (its size mapped to its bin, as diffusers does)."""
        embeds = kwargs.get("prompt_embeds")
        batch_size = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else embeds.shape[0]
        height = kwargs.get("height") or self.transformer.config.sample_size * self.vae_scale_factor
        width = kwargs.get("width") or self.transformer.config.sample_size * self.vae_scale_factor
        if kwargs.get("use_resolution_binning", True):
            bins = aspect_ratio_bins(self.transformer.config.sample_size)
            height, width = self.image_processor.classify_height_width_bin(height, width, ratios=bins)
        length = embeds.shape[1] if embeds is not None else kwargs.get("max_sequence_length") or self.max_sequence_length
        guidance = kwargs.get("guidance_scale", self.recipe.guidance_scale)
        return CallShape(batch_size, kwargs.get("num_images_per_prompt") or 1, guidance > 1, height, width, length, guidance)

    def check_static_shape(self, prompt: str | list[str] | None, kwargs: dict) -> None:
        """Refuse a call whose shapes the static parts were not compiled for, or, on a static-only device that does not
        reshape at each call, any call before :meth:`reshape`."""
        device = self.transformer.device_name
        if self.reshape_each_call or (self.static_shape is None and not needs_static_shapes(device)):
            return
        asked = self.call_shape(prompt, kwargs)
        if self.static_shape is None:
            raise ValueError(static_device_message(device, asked))
        if asked != self.static_shape:
            raise ValueError(shape_mismatch_message(self.static_shape, asked))
