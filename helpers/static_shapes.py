"""Static shapes: every input of every part fixed to one call's shapes, as optimum-intel's ``pipe.reshape`` does.

OpenVINO then compiles kernels for known sizes (a few percent faster on CPU), and devices that compile static
shapes only (the NPU) can run the pipeline at all. A reshaped pipeline draws that one call's shapes and refuses any
other with an error that names ``reshape``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import openvino as ov


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
