"""Watching a picture form: a cheap picture of the latents after each denoising step.

Two previewers, both called with the latents the pipeline's step ``callback`` sees:

- :class:`LatentRGB`, the linear latent-to-RGB projection ComfyUI's previews use: one small matrix and a bias,
  fitted at conversion by least squares against the model's own VAE (:func:`fit_latent_rgb`) and kept in the
  variant's ``vae_decoder/config.json``; a picture at the latents' size (128² for 1024²) in microseconds.
- :class:`TinyPreview`, the tiny VAE decoder (``helpers.tiny_vae``): a full-size picture, close to the final decode.

:func:`preview_callback` turns either into diffusers' step callback; :func:`pictures_as_they_form` runs a call in a
thread and yields its previews, then its result, for the demo, the images API's stream and the notebooks.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from .variants import VariantNotReadyError, how_to_make

LATENT_RGB_KEY = "latent_rgb"  # where the projection is kept in the VAE decoder's config
PREVIEWERS = ("linear", "tiny")


def fit_latent_rgb(vae: Any, pictures: int = 32, side: int = 128, seed: int = 0) -> dict[str, list]:
    """The least-squares projection from a latent pixel (as the denoising loop holds it: the encoder's mean times
    ``scaling_factor``) to the mean colour of the picture patch it covers, fitted on smooth and sharp random colour
    fields encoded by ``vae`` (a diffusers ``AutoencoderKL``). Returns ``{"weight": channels × 3, "bias": 3}``."""
    generator = torch.Generator().manual_seed(seed)
    grids = torch.rand(pictures, 3, 4, 4, generator=generator) * 2 - 1
    half = pictures // 2  # half smooth gradients, half flat blocks with sharp edges
    pixels = torch.cat([torch.nn.functional.interpolate(grids[:half], size=(side, side), mode="bilinear"),
                        torch.nn.functional.interpolate(grids[half:], size=(side, side), mode="nearest")])
    with torch.no_grad():
        latents = torch.cat([vae.encode(one).latent_dist.mode() for one in pixels.split(4)]) * vae.config.scaling_factor
    patches = torch.nn.functional.avg_pool2d(pixels, side // latents.shape[-1])
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).double()
    solution = torch.linalg.lstsq(torch.cat([inputs, torch.ones(len(inputs), 1, dtype=inputs.dtype)], 1),
                                  patches.permute(0, 2, 3, 1).reshape(-1, 3).double()).solution
    return {"weight": solution[:-1].tolist(), "bias": solution[-1].tolist()}


def to_pictures(pixels: torch.Tensor) -> list[Image.Image]:
    """PIL pictures from a batch in [-1, 1] (values outside are clipped)."""
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(np.ascontiguousarray(one)) for one in array]


@dataclass(frozen=True)
class LatentRGB:
    """The linear preview: ``weight`` (latent channels × 3) and ``bias`` (3), from latents to pixels in [-1, 1]."""

    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def of(cls, pipe: Any) -> "LatentRGB":
        """The projection kept in a pipeline's variant folder; a folder converted before previews is refused with the fix."""
        fitted = pipe.full_vae.config.get(LATENT_RGB_KEY)
        if fitted is None:
            folder = pipe.variant.folder
            raise VariantNotReadyError(
                f"The model at {folder} has no latent preview projection (it was converted before previews): delete "
                f"{folder.with_name('FP16') / 'vae_decoder'} and {how_to_make(folder.with_name('FP16'))} again.")
        return cls(torch.tensor(fitted["weight"], dtype=torch.float32), torch.tensor(fitted["bias"], dtype=torch.float32))

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        pixels = torch.einsum("bchw,cr->brhw", latents.float(), self.weight) + self.bias[:, None, None]
        return to_pictures(pixels)


@dataclass(frozen=True)
class TinyPreview:
    """The tiny decoder's preview: a full-size picture of the latents (``pipe.tiny_vae``)."""

    tiny_vae: Any

    @classmethod
    def of(cls, pipe: Any) -> "TinyPreview":
        return cls(pipe.tiny_vae)

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        return to_pictures(self.tiny_vae.decode_scaled(latents))


def previewer(pipe: Any, kind: str = "linear") -> Callable[[torch.Tensor], list[Image.Image]]:
    """The previewer ``kind`` (``"linear"`` or ``"tiny"``) of an OpenVINO pipeline."""
    if kind not in PREVIEWERS:
        raise ValueError(f"preview={kind!r} is not a previewer: choose 'linear' (latent colours) or 'tiny' (the tiny VAE).")
    return (LatentRGB if kind == "linear" else TinyPreview).of(pipe)


def preview_steps(steps: int, count: int | None = None) -> list[int]:
    """The steps (0-based) after which to show a preview: every step but the last (whose picture is the result), or
    ``count`` of them spread evenly, the latest last (fewer when the call has fewer steps)."""
    shown = range(steps - 1)
    if count is None or count >= len(shown):
        return list(shown)
    return sorted({int(round(value)) for value in np.linspace(0, steps - 2, count + 1)[1:]}) if count > 0 else []


@dataclass(frozen=True)
class Preview:
    """One preview: the step it follows (1-based, of ``steps``) and a picture per image of the call."""

    step: int
    steps: int
    images: list[Image.Image]


def preview_callback(show: Callable[[Preview], Any], preview: Callable, steps: int, count: int | None = None,
                     then: Callable | None = None, then_steps: int = 1) -> Callable[[int, int, torch.Tensor], None]:
    """diffusers' PixArt step ``callback(step, timestep, latents)``, to be called every step, that passes ``show`` a
    :class:`Preview` after the steps :func:`preview_steps` picks, then calls ``then`` (the caller's own callback, if
    any) every ``then_steps`` steps, as diffusers would have."""
    chosen = set(preview_steps(steps, count))

    def callback(step: int, timestep: int, latents: torch.Tensor) -> None:
        if step in chosen:
            show(Preview(step + 1, steps, preview(latents)))
        if then is not None and step % then_steps == 0:
            then(step, timestep, latents)

    return callback


def pictures_as_they_form(pipe: Any, *args: Any, previews: int | None = None, preview: str = "linear",
                          **kwargs: Any) -> Iterator[Preview | Any]:
    """Run ``pipe(*args, **kwargs)`` in a thread and yield a :class:`Preview` after each step (or ``previews`` of them),
    then the call's own output. An error in the call is raised here. The steps are those the call runs (an edit runs
    its ``strength``'s share of them); a ``callback`` of the caller's is still called at its ``callback_steps``."""
    from .editing import edit_strength, steps_to_run

    draw = previewer(pipe, preview)
    arguments = pipe.recipe.defaults() | pipe.call_arguments(*args, **kwargs)
    steps = steps_to_run(arguments["num_inference_steps"], edit_strength(arguments))
    found: queue.Queue = queue.Queue()
    then, then_steps = arguments.get("callback"), arguments.get("callback_steps") or 1
    arguments |= {"callback": preview_callback(found.put, draw, steps, previews, then, then_steps), "callback_steps": 1}

    def run() -> None:
        try:
            found.put(pipe(**arguments))
        except BaseException as error:  # handed to the caller's thread
            found.put(error)

    threading.Thread(target=run, daemon=True).start()
    while True:
        item = found.get()
        if isinstance(item, BaseException):
            raise item
        yield item
        if not isinstance(item, Preview):
            return
