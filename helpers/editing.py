"""Editing a picture: image-to-image (SDEdit) and inpainting on diffusers' PixArt pipelines, with the names and meaning
of diffusers' ``StableDiffusion(XL)Img2ImgPipeline`` and ``...InpaintPipeline``: ``image``, ``mask_image`` (white is
repainted), ``strength`` (the share of the scheduler's ``num_inference_steps`` that runs), ``mask_blur``,
``padding_mask_crop``.

:class:`EditingMixin` adds them to diffusers' own ``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline`` call, so the same
code runs on the OpenVINO pipeline (``helpers.pipeline``) and on PyTorch (``helpers.reference``, the tests' reference).
An edit checks its inputs, encodes the picture with the VAE, takes the scheduler's last steps, noises the encoding to
the first of them, and gives diffusers' own ``__call__`` those ``latents`` and ``timesteps``. Inpainting adds a
``callback`` that puts the picture's own latents back outside the mask after every step, as diffusers does for
4-channel denoisers (PixArt has no inpainting checkpoint).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageFilter

from .sizes import aspect_ratio_bins

EDIT_ARGUMENTS = ("image", "mask_image", "strength", "mask_blur", "padding_mask_crop")
IMAGE_TO_IMAGE_STRENGTH, INPAINTING_STRENGTH = 0.8, 1.0  # diffusers' StableDiffusionImg2Img and Inpaint defaults
# The scheduler whose step also returns the denoised sample, which diffusers' PixArt call takes when one step runs.
ONE_STEP_SCHEDULER = "LCMScheduler"
STARTING_LATENTS = ("latents", "timesteps", "sigmas")  # what an edit sets itself


@dataclass
class Edit:
    """What a call asks to edit: its pictures and masks (PIL images), how much of them to redraw, the mask's edge."""

    images: list[Image.Image]
    masks: list[Image.Image] | None
    strength: float
    mask_blur: float = 0.0
    padding_mask_crop: int | None = None

    @property
    def inpainting(self) -> bool:
        return self.masks is not None


def pictures_of(value: Any, name: str) -> list[Image.Image]:
    """The pictures an ``image`` or ``mask_image`` argument holds, as PIL images: one or a list (or a batch) of PIL
    images, NumPy arrays or torch tensors, read as diffusers' ``VaeImageProcessor`` reads them."""
    from diffusers.image_processor import VaeImageProcessor, is_valid_image

    values = list(value) if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) == 4 else [value]
    if not values or not all(is_valid_image(one) for one in values):
        raise ValueError(not_a_picture_message(value, name))
    processor = VaeImageProcessor(do_resize=False)
    return [as_pil(one, processor) for one in values]


def as_pil(picture: Any, processor: Any) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture
    if isinstance(picture, np.ndarray) and picture.dtype == np.uint8:  # PIL's own arrays: diffusers reads only floats
        return Image.fromarray(picture)
    return processor.postprocess(processor.preprocess(picture))[0]


def not_a_picture_message(value: Any, name: str) -> str:
    if isinstance(value, (str, Path)):
        return f"{name}={str(value)!r} is a path, not a picture: pass PIL.Image.open({str(value)!r})."
    return (f"{name} is not a picture (it is {type(value).__name__}): pass a PIL image, a NumPy array (height × width "
            f"× 3, values in [0, 1]) or a torch tensor (3 × height × width), or a list of them.")


def split_edit(arguments: dict[str, Any]) -> tuple[Edit | None, dict[str, Any]]:
    """The edit a call's arguments ask for (None: text-to-image), and the arguments left for diffusers' call."""
    rest = {name: value for name, value in arguments.items() if name not in EDIT_ARGUMENTS}
    if arguments.get("image") is None:
        if stray := [name for name in EDIT_ARGUMENTS if arguments.get(name) is not None]:
            one = len(stray) == 1
            raise ValueError(f"{', '.join(stray)} edit{'s' * one} a picture: pass image= (the picture to edit) too, or leave "
                             f"{'it' if one else 'them'} out.")
        return None, rest
    mask = arguments.get("mask_image")
    masks = None if mask is None else pictures_of(mask, "mask_image")
    images = pictures_of(arguments["image"], "image")
    return Edit(images, masks, edit_strength(arguments), arguments.get("mask_blur") or 0, arguments.get("padding_mask_crop")), rest


def edit_strength(arguments: dict[str, Any]) -> float | None:
    """The strength a call edits at: as given, else diffusers' default for its kind; None without an image."""
    if arguments.get("image") is None:
        return None
    strength = arguments.get("strength")
    default = IMAGE_TO_IMAGE_STRENGTH if arguments.get("mask_image") is None else INPAINTING_STRENGTH
    return default if strength is None else strength


def steps_to_run(num_inference_steps: int, strength: float | None) -> int:
    """How many of the scheduler's steps a call runs: all, or an edit's share, counted as diffusers' img2img does."""
    if strength is None:
        return num_inference_steps
    return min(int(num_inference_steps * strength), num_inference_steps)


def check_strength(strength: Any, num_inference_steps: int, scheduler: str) -> None:
    """Refuse, with the fix, a strength outside (0, 1] or one that leaves too few steps to run."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"strength={strength!r} is not allowed: use a number in (0, 1] (0.3: small changes; 0.8: "
                         f"keeps the layout; 1: from noise).")
    needed = 1 if scheduler == ONE_STEP_SCHEDULER else 2
    runs = steps_to_run(num_inference_steps, strength)
    if runs < needed:
        lowest = min(1.0, math.ceil(needed / num_inference_steps * 1000) / 1000)  # rounded up: it must run them
        raise ValueError(
            f"strength={strength} runs {runs} of the {num_inference_steps} steps, and {scheduler} needs at least "
            f"{needed}: use strength={lowest:g} or more, or more num_inference_steps."
        )


def check_masks(images: list[Image.Image], masks: list[Image.Image], count: int) -> None:
    """Refuse masks that do not fit the pictures or mark nothing to repaint."""
    check_count(masks, count, "mask_image")
    for index in range(max(len(images), len(masks))):  # each mask against each picture it is used with
        image, mask = images[index % len(images)], masks[index % len(masks)]
        if mask.size != image.size:
            raise ValueError(f"mask_image is {mask.width}×{mask.height} but image is {image.width}×{image.height}: "
                             f"make the mask the picture's size (mask_image.resize(image.size)).")
        if np.asarray(mask.convert("L")).max() < 128:
            raise ValueError("mask_image marks nothing to repaint (no pixel is white, or lighter than mid-grey): white "
                             "marks what to repaint, as in diffusers; to change the whole picture leave mask_image out.")


def check_count(pictures: list[Image.Image], count: int, name: str) -> None:
    if len(pictures) not in (1, count):
        prompts = f"{count} prompt{'s' * (count != 1)}"
        raise ValueError(f"{name} holds {len(pictures)} pictures for {prompts}: pass one for all, or one per prompt.")


def check_edit(edit: Edit, arguments: dict[str, Any], scheduler: str) -> None:
    """Refuse, with the fix, an edit diffusers' call or the parts would fail on obscurely, or run silently wrong."""
    prompts = prompt_count(arguments)
    check_count(edit.images, prompts, "image")
    if edit.inpainting:
        check_masks(edit.images, edit.masks, prompts)
    check_strength(edit.strength, arguments["num_inference_steps"], scheduler)
    if isinstance(edit.mask_blur, bool) or not isinstance(edit.mask_blur, (int, float)) or edit.mask_blur < 0:
        raise ValueError(f"mask_blur={edit.mask_blur!r} is not allowed: a blur radius in pixels, 0 or more (e.g. 8).")
    if edit.padding_mask_crop is not None and not (edit.inpainting and len(edit.masks) == len(edit.images) == 1):
        raise ValueError("padding_mask_crop crops around a mask: pass one image and one mask_image with it.")
    if edit.padding_mask_crop is not None and arguments.get("output_type", "pil") != "pil":
        raise ValueError("padding_mask_crop pastes the result into the picture: use output_type='pil' with it.")
    if set_here := [name for name in STARTING_LATENTS if arguments.get(name) is not None]:
        raise ValueError(f"An edit starts from its picture: leave {', '.join(set_here)} out (strength picks the steps).")


def prompt_count(arguments: dict[str, Any]) -> int:
    """How many prompts a call draws (its prompt list, or its prompt embeddings' batch)."""
    prompt, embeds = arguments.get("prompt"), arguments.get("prompt_embeds")
    if isinstance(prompt, list):
        return len(prompt)
    return len(embeds) if prompt is None and embeds is not None else 1


def repeated(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """One row per picture drawn: each picture's (or the one picture's) rows repeated, in the order of the prompts."""
    return tensor.repeat_interleave(count // tensor.shape[0], dim=0)


@contextlib.contextmanager
def quiet_custom_timesteps() -> Iterator[None]:
    """LCMScheduler warns that a custom schedule does not start at its last timestep: an edit's never does, by design."""
    logger = logging.getLogger("diffusers.schedulers.scheduling_lcm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class KnownLatents:
    """diffusers' inpainting with a 4-channel denoiser, as the step callback diffusers' PixArt call takes: after each
    step the latents outside the mask become the picture's own again, noised to the timestep the loop has reached
    (clean after the last step); then the caller's own ``callback``, every ``callback_steps`` steps."""

    def __init__(self, scheduler: Any, image_latents: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                 timesteps: list[int], callback: Callable | None = None, callback_steps: int = 1):
        self.scheduler, self.image_latents, self.noise, self.mask, self.timesteps = scheduler, image_latents, noise, mask, timesteps
        self.callback, self.callback_steps = callback, callback_steps

    def __call__(self, step: int, timestep: Any, latents: torch.Tensor) -> None:
        known = self.image_latents
        if step + 1 < len(self.timesteps):
            known = self.scheduler.add_noise(known, self.noise, torch.tensor(self.timesteps[step + 1 : step + 2]))
        latents.copy_((1 - self.mask) * known + self.mask * latents)  # in place: the loop goes on with this tensor
        if self.callback is not None and step % self.callback_steps == 0:
            self.callback(step, timestep, latents)


class EditingMixin:
    """Image-to-image and inpainting on a diffusers PixArt pipeline: put it before the pipeline in a class's bases."""

    @torch.no_grad()
    def __call__(self, *args: Any, **kwargs: Any):
        """diffusers' call; with ``image``, an edit of that picture (``strength``, default 0.8); with ``mask_image`` too,
        an inpainting of the mask's white (``strength`` default 1; ``mask_blur``: its edge blurred by that many pixels;
        ``padding_mask_crop``: only the mask's surroundings redrawn, at full size, and pasted back)."""
        edit, arguments = split_edit(self.call_arguments(*args, **kwargs))
        if edit is None:
            return super().__call__(**arguments)
        arguments = self.diffusers_defaults() | arguments
        check_edit(edit, arguments, type(self.scheduler).__name__)
        edit = blurred(edit)
        (height, width), crop = self.drawing_size(arguments), self.crop_region(edit, arguments)
        pictures = prompt_count(arguments) * (arguments["num_images_per_prompt"] or 1)
        image_latents = self.encode_pictures(edit.images, height, width, crop, pictures)
        timesteps = self.edit_timesteps(arguments["num_inference_steps"], edit.strength)
        latents, noise = self.noised(image_latents, timesteps, arguments["generator"])
        if edit.inpainting:  # the known latents blended back after every step, then the caller's callback at its pace
            mask = self.latent_masks(edit, height, width, crop, pictures)
            known = KnownLatents(self.scheduler, image_latents, noise, mask, timesteps, arguments["callback"], arguments["callback_steps"])
            arguments |= {"callback": known, "callback_steps": 1}
        # diffusers' call scales the latents it is given by init_noise_sigma, as it does its own noise
        starting = {"latents": latents / self.scheduler.init_noise_sigma, "timesteps": timesteps}
        with quiet_custom_timesteps():
            output = super().__call__(**arguments | starting)
        return self.pasted(output, edit, crop) if crop else output

    def check_edit_inputs(self, arguments: dict[str, Any]) -> None:
        """Refuse, with the fix, an edit that can't run as asked (nothing to check for text-to-image)."""
        edit, rest = split_edit(arguments)
        if edit is not None:
            check_edit(edit, self.diffusers_defaults() | rest, type(self.scheduler).__name__)

    def call_arguments(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A call's arguments by name: diffusers' (positional ones named, its ``**kwargs`` flattened) and the edit's. An
        edit's height and width default to its picture's size, which the result is drawn back to."""
        edit = {name: kwargs.pop(name) for name in EDIT_ARGUMENTS if name in kwargs}
        arguments = dict(inspect.signature(super().__call__).bind(*args, **kwargs).arguments)
        arguments |= arguments.pop("kwargs", {}) | edit
        if arguments.get("image") is not None:
            width, height = pictures_of(arguments["image"], "image")[0].size
            arguments["height"], arguments["width"] = arguments.get("height") or height, arguments.get("width") or width
        return arguments

    def diffusers_defaults(self) -> dict[str, Any]:
        """The defaults of diffusers' call (20 steps, guidance 4.5, ...)."""
        parameters = inspect.signature(super().__call__).parameters.values()
        return {parameter.name: parameter.default for parameter in parameters if parameter.default is not inspect.Parameter.empty}

    def drawing_size(self, arguments: dict[str, Any]) -> tuple[int, int]:
        """The size the pictures are drawn at: the asked size's aspect-ratio bin, as diffusers' call picks it, or the
        asked size without binning."""
        height, width = arguments["height"], arguments["width"]
        if not arguments["use_resolution_binning"]:
            return height, width
        bins = aspect_ratio_bins(self.transformer.config.sample_size)
        return self.image_processor.classify_height_width_bin(height, width, ratios=bins)

    def crop_region(self, edit: Edit, arguments: dict[str, Any]) -> tuple[int, int, int, int] | None:
        """``padding_mask_crop``'s region: the mask's surroundings, padded, at the asked size's aspect ratio."""
        if edit.padding_mask_crop is None:
            return None
        return self.image_processor.get_crop_region(edit.masks[0], arguments["width"], arguments["height"], pad=edit.padding_mask_crop)

    def encode_pictures(self, images: list[Image.Image], height: int, width: int, crop: Any, pictures: int) -> torch.Tensor:
        """The pictures' latents as the transformer sees them (the VAE's means, scaled), one row per picture drawn.

        Each picture fills height × width with its aspect ratio kept: the margins a bin adds are filled from its edges,
        and cropped off the result again. Each is encoded alone, so the encoder's input keeps one shape (static shapes)."""
        pixels = self.image_processor.preprocess(images, height=height, width=width, resize_mode="fill", crops_coords=crop)
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype)
        # the mean (retrieve_latents' "argmax"), not a sample: a picture's latents do not depend on the seed
        means = torch.cat([self.vae.encode(one).latent_dist.mode() for one in pixels.split(1)])
        return repeated(means.to(self.transformer.dtype) * self.vae.config.scaling_factor, pictures)

    def edit_timesteps(self, num_inference_steps: int, strength: float) -> list[int]:
        """The schedule's last timesteps, as many as ``strength`` keeps (diffusers' img2img ``get_timesteps``). The
        scheduler is left set to the whole schedule, where :meth:`noised` finds the first of them."""
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        start = (num_inference_steps - steps_to_run(num_inference_steps, strength)) * self.scheduler.order
        return self.scheduler.timesteps[start:].tolist()

    def noised(self, image_latents: torch.Tensor, timesteps: list[int], generator: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting latents (the picture's, noised to the first timestep) and the noise, which inpainting adds again."""
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(image_latents.shape, generator=generator, device=self.device, dtype=image_latents.dtype)
        return self.scheduler.add_noise(image_latents, noise, torch.tensor(timesteps[:1])), noise

    def latent_masks(self, edit: Edit, height: int, width: int, crop: Any, pictures: int) -> torch.Tensor:
        """The masks at the latents' size, 1 where to repaint, one row per picture drawn. An unblurred mask is binarized,
        as diffusers does; a blurred one keeps its soft edge, a gradual blend."""
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False, do_convert_grayscale=True)
        mask = processor.preprocess(edit.masks, height=height, width=width, resize_mode="fill", crops_coords=crop)
        mask = mask if edit.mask_blur else processor.binarize(mask)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        return repeated(torch.nn.functional.interpolate(mask, size=latent_size), pictures).to(self.transformer.dtype)

    def pasted(self, output: Any, edit: Edit, crop: tuple[int, int, int, int]) -> Any:
        """The results pasted into the picture at the crop region, the picture kept outside the mask, as diffusers'
        inpainting gives them back with ``padding_mask_crop``."""
        images = [self.image_processor.apply_overlay(edit.masks[0], edit.images[0], image, crop) for image in output[0]]
        if isinstance(output, tuple):
            return (images,)
        output.images = images
        return output


def blurred(edit: Edit) -> Edit:
    """The edit with its masks blurred by ``mask_blur`` pixels (diffusers' ``VaeImageProcessor.blur``)."""
    from diffusers.image_processor import VaeImageProcessor

    if not edit.inpainting or not edit.mask_blur:
        return edit
    return replace(edit, masks=[VaeImageProcessor.blur(mask, edit.mask_blur) for mask in edit.masks])


# ---------------------------------------------------------------- masks, and what an edit kept (notebook 10, benchmarks)

QUARTERS = ("top left", "top right", "bottom left", "bottom right")  # named as the shapes scorer names corners


def quarter_box(width: int, height: int, quarter: str) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of one quarter of a ``width`` × ``height`` picture (``QUARTERS`` names them)."""
    if quarter not in QUARTERS:
        raise ValueError(f"Unknown quarter {quarter!r}: choose one of {', '.join(QUARTERS)}.")
    vertical, horizontal = quarter.split()
    left, right = (width // 2, width) if horizontal == "right" else (0, width // 2)
    top, bottom = (height // 2, height) if vertical == "bottom" else (0, height // 2)
    return left, top, right, bottom


def quarter_mask(width: int, height: int, quarter: str) -> Image.Image:
    """An inpainting ``mask_image``: white (repaint, diffusers' convention) over one quarter, black (keep) elsewhere."""
    mask = Image.new("L", (width, height))
    mask.paste(255, quarter_box(width, height, quarter))
    return mask


def kept_pixels(mask: Image.Image, margin: int = 0) -> np.ndarray:
    """Where an inpainting gives the picture back: the pixels the mask keeps (darker than mid-grey, as the pipeline
    binarizes it) at least ``margin`` pixels from any it repaints, as a height × width bool array. The margin is the
    VAE decoder's reach: each latent is decoded from its neighbours too, so a repainted one bleeds a few pixels out."""
    repaint = mask.convert("L").point(lambda value: 255 if value >= 128 else 0)
    if margin:
        repaint = repaint.filter(ImageFilter.MaxFilter(2 * margin + 1))
    return np.asarray(repaint) == 0


@torch.no_grad()
def vae_round_trip(pipe: Any, image: Image.Image) -> Image.Image:
    """The picture encoded by the pipeline's VAE (its mean, as an edit encodes it) and decoded again: the most any edit
    can keep of it, so what the kept pixels are measured against. The OpenVINO pipeline or diffusers' alike."""
    pixels = pipe.image_processor.preprocess(image).to(device=pipe.device, dtype=pipe.vae.dtype)
    latents = pipe.vae.encode(pixels).latent_dist.mode()
    return pipe.image_processor.postprocess(pipe.vae.decode(latents, return_dict=False)[0])[0]
