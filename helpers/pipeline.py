"""The OpenVINO pipeline: diffusers' own ``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline`` with the OpenVINO parts
(``helpers.parts``) in it, loaded from a variant folder; its input checks; one seeded picture (``generate``)."""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from PIL import Image

from .checkpoints import scheduler_from_config
from .conversion import export_variant
from .devices import check_device, fits_in_memory
from .parts import OVModelPart, OVTextEncoder, OVTransformer, OVVaeDecoder
from .settings import SamplingRecipe, recipe_for
from .sizes import ASPECT_RATIO_BINS, aspect_ratio_bins, largest_side
from .static_shapes import (
    CallShape,
    needs_static_shapes,
    shape_mismatch_message,
    static_device_message,
    text_encoder_shapes,
    transformer_shapes,
    vae_decoder_shapes,
)
from .step_cache import DEFAULT_THRESHOLD, StepCacheUnavailableError
from .token_downsampling import TokenDownsampling, check_steps
from .variants import DOWNSAMPLED_PART, Variant, VariantNotReadyError, how_to_make, read_index, save_variant


class OVPixArtPipeline:
    """What the OpenVINO pipelines add to diffusers' PixArt-α and PixArt-Σ pipelines, whose ``__call__``, checks,
    bins and loop they keep: loading and saving in optimum-intel's habits, the device, clear errors for bad input.

    ``OVPixArtPipeline.from_pretrained(folder)`` returns the pipeline of the variant's own kind: an
    :class:`OVPixArtAlphaPipeline` or an :class:`OVPixArtSigmaPipeline`. No torch weights are loaded. Its
    ``variant`` is the :class:`~helpers.variants.Variant` it was loaded from.
    """

    binned_sample_sizes: tuple[int, ...] = ()  # the sample sizes whose bins the diffusers pipeline maps sizes to
    max_sequence_length = 120  # diffusers' default prompt length (tokens) for this pipeline
    static_shape: CallShape | None = None  # the one call's shapes the parts are compiled for (``reshape``)
    reshape_each_call = False  # reshape to every call's shapes (static-only devices): compiles when they change

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path | Variant,
        device: str = "AUTO",
        ov_config: dict | None = None,
        *,
        export: bool = False,
        export_dir: Path | None = None,
        compile: bool = True,
        low_memory: bool | None = None,
        step_cache: float | bool | None = None,
        downsampled_steps: float | None = None,
    ) -> "OVPixArtPipeline":
        """Load a variant folder (or a :class:`~helpers.variants.Variant`) and compile its parts for ``device``, as
        optimum-intel's ``OVDiffusionPipeline.from_pretrained`` does; returns the α or Σ pipeline, as its model is.

        ``export=True`` takes what ``PIXART_MODEL_ID`` takes (a hub id, a diffusers folder, ``tiny``, ``shapes``) and
        converts it first (:func:`~helpers.conversion.export_variant`) into ``export_dir``, by default the FP16 folder
        notebook 1 makes (``model/<model-name>/FP16``); a finished one is loaded as it is.

        ``ov_config``: OpenVINO compile properties (``{"INFERENCE_PRECISION_HINT": "f32"}``, say). ``compile=False``
        compiles each part at its first call instead (after a :meth:`reshape`, say); :meth:`compile` compiles now. A
        device that compiles static shapes only (``NPU``) compiles nothing here: each call reshapes the parts to its
        own shapes (``reshape_each_call``), compiling them again when they change; or call :meth:`reshape` once.

        ``low_memory=True`` keeps one part's weights in memory at a time: each part is compiled when it is called
        and frees the others (T5 once per prompt, the transformer once per picture). On a CPU without bf16,
        OpenVINO holds FP16 weights in f32, and T5-XXL alone then takes 18 GiB. It costs the parts' compile time at
        every picture. ``None`` (the default) turns it on when the variant's weights would not fit in memory
        (:func:`~helpers.devices.fits_in_memory`).

        ``step_cache``: a threshold turns the step cache on (:meth:`enable_step_cache`), ``False`` leaves it off,
        ``None`` does as the folder says (a folder saved from a cached pipeline records its threshold).
        ``downsampled_steps``: for a ``-ToDo`` variant, the fraction of each picture's first steps its downsampled
        transformer runs (default: the folder's; see :meth:`set_downsampled_steps`).
        """
        variant = variant_to_load(model_id_or_path, export, export_dir)
        core = ov.Core()
        device = check_device(device, core)
        if low_memory is None:
            low_memory = not fits_in_memory(variant, device, ov_config, core)
        pipe = OV_PIPELINES[variant.pipeline_name](**pipeline_components(variant, core, device, ov_config, low_memory))
        pipe.variant, pipe.low_memory, pipe.step_cache_counts = variant, low_memory, None
        pipe.reshape_each_call = needs_static_shapes(device)
        pipe.apply_settings(variant.step_cache_threshold if step_cache is None else step_cache, downsampled_steps)
        if compile and not low_memory and not pipe.reshape_each_call:
            pipe.compile()
        return pipe

    def apply_settings(self, step_cache: float | bool | None, downsampled_steps: float | None) -> None:
        """Turn the step cache on at a threshold (off for ``None`` or ``False``), and set the downsampled steps."""
        if downsampled_steps is not None:
            self.set_downsampled_steps(downsampled_steps)
        if step_cache is None or step_cache is False:
            return
        try:
            self.enable_step_cache(step_cache)
        except StepCacheUnavailableError as error:
            warnings.warn(str(error), stacklevel=3)

    def save_pretrained(self, save_directory: str | Path) -> Variant:
        """Write this pipeline as a variant folder that :meth:`from_pretrained` loads back to the same pictures: its
        parts (hard links to the loaded folder's files), its scheduler as it is now, and what was set at run time
        (the step cache's threshold, a ``-ToDo`` variant's downsampled steps), under a temporary name renamed at the
        end. Returns the saved :class:`~helpers.variants.Variant`."""
        return save_variant(self.variant, Path(save_directory), self.run_settings(), self.scheduler.save_pretrained)

    def run_settings(self) -> dict[str, Any]:
        """What was set on this pipeline beside its folder, as a variant index records it."""
        settings: dict[str, Any] = {"step_cache": None}
        if self.transformer.step_cache is not None:
            settings["step_cache"] = {"threshold": self.transformer.step_cache.threshold}
        if self.transformer.downsampled is not None:
            settings["token_downsampling"] = self.transformer.downsampling.record(self.transformer.config.num_layers)
        return settings

    @property
    def parts(self) -> tuple[OVModelPart, ...]:
        return self.text_encoder, self.transformer, self.vae

    def to(self, *args: Any, **kwargs: Any) -> "OVPixArtPipeline":
        """Move the pipeline to another OpenVINO device, compiling its parts for it (now, if they were compiled), as
        optimum-intel's ``to(device)``. ``"cpu"`` and ``torch.device("cpu")`` mean ``CPU``, so diffusers code that
        calls ``pipe.to("cpu")`` keeps working; a torch dtype other than float32 is refused (OpenVINO's precision is
        a compile property). Returns the pipeline."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        if kwargs:
            raise TypeError(f"to() takes a device and a dtype, not {', '.join(kwargs)}.")
        if dtype not in (None, torch.float32):
            raise ValueError(
                f"to({dtype}) is not how an OpenVINO pipeline changes precision: load it with "
                f"ov_config={{'INFERENCE_PRECISION_HINT': 'bf16'}} (or 'f16', 'f32')."
            )
        if device is None:
            return self
        device = check_device(device, self.transformer.core)
        was_compiled = any(part.is_compiled for part in self.parts)
        for part in self.parts:
            part.move_to(device)
        self.reshape_each_call = needs_static_shapes(device)
        if was_compiled and not self.reshape_each_call:
            self.compile()
        return self

    def compile(self) -> None:
        """Compile every part now for its device and shapes, as optimum-intel's ``compile()`` (after
        ``compile=False`` or :meth:`reshape`). A low-memory pipeline compiles each part at its call instead."""
        if self.low_memory:
            return
        device = self.transformer.device_name
        if needs_static_shapes(device) and self.static_shape is None:
            raise ValueError(static_device_message(device, self.call_shape("a prompt", {})))
        for part in self.parts:
            part.compile()

    def reshape(
        self,
        batch_size: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        max_sequence_length: int | None = None,
        use_resolution_binning: bool = True,
    ) -> "OVPixArtPipeline":
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
        if not _is_whole(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is not allowed: reshape for at least 1 prompt per call.")
        check_generation_inputs("a prompt", self.recipe.num_inference_steps, height, width, guidance_scale=guidance_scale,
                                num_images_per_prompt=num_images_per_prompt, **self._check_options(use_resolution_binning))
        call = self.call_shape(["a prompt"] * batch_size, kwargs)
        scale = self.vae_scale_factor
        tile = self.vae.tile_latent_size if self.vae.use_tiling else None
        self.text_encoder.reshape(text_encoder_shapes(call))
        self.transformer.reshape(transformer_shapes(call, self.transformer.config, scale))
        self.vae.reshape(vae_decoder_shapes(call, self.vae.config, scale, tile))
        self.static_shape = call
        self.compile()
        return self

    def reshape_for(self, prompt: str | list[str] | None, **kwargs: Any) -> "OVPixArtPipeline":
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

    def enable_step_cache(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        """Reuse the transformer's blocks between neighbouring steps (First Block Cache, ``helpers.step_cache``).

        ``threshold``: how far the first block's residual may move before the other blocks run again (0: always).
        Raises :class:`~helpers.step_cache.StepCacheUnavailableError` for a folder converted before step caching.
        """
        self.transformer.enable_step_cache(threshold)

    def disable_step_cache(self) -> None:
        self.transformer.disable_step_cache()

    def set_downsampled_steps(self, fraction: float) -> None:
        """How much of each picture's first steps a ``-ToDo`` variant runs with token downsampling: 0 (none: the
        exact pipeline) to 1 (all: fastest, and furthest from the exact picture)."""
        if self.transformer.downsampled is None:
            raise ValueError(
                f"{self.variant.folder} has no transformer with token downsampling: load a -ToDo variant "
                f"(`python -m helpers compress --variant W8A8-ToDo` makes one)."
            )
        self.transformer.downsampling = dataclasses.replace(self.transformer.downsampling, steps=check_steps(fraction))

    @property
    def recipe(self) -> SamplingRecipe:
        """The sampling recipe of this checkpoint (LCM: 4 steps, no guidance; standard: 20 steps, 4.5)."""
        return recipe_for(self.scheduler)

    def __call__(self, *args: Any, **kwargs: Any):
        """diffusers' call, its arguments and defaults, but for steps and guidance, which default to the checkpoint's
        recipe (LCM: 4 steps, no guidance, as its model card gives; standard: diffusers' own 20 and 4.5)."""
        given = dict(inspect.signature(super().__call__).bind(*args, **kwargs).arguments)
        kwargs = self.recipe.defaults() | given | given.pop("kwargs", {})  # diffusers' **kwargs, flattened
        prompt = kwargs.pop("prompt", None)
        self.check_call_inputs(prompt, **kwargs)
        if self.reshape_each_call:
            self.reshape_for(prompt, **kwargs)
        self.transformer.start_picture(kwargs["num_inference_steps"])  # its step count, its step cache
        cache = self.transformer.step_cache
        output = super().__call__(prompt, **kwargs)
        # how many steps ran in full and how many reused the blocks (None with the cache off)
        self.step_cache_counts = cache.counts if cache is not None else None
        if not isinstance(output, tuple):  # return_dict=False gives a bare tuple, as in diffusers
            output.step_cache = self.step_cache_counts
        return output

    def check_call_inputs(self, prompt: str | list[str] | None, **kwargs: Any) -> None:
        """Refuse, with the fix, the inputs diffusers' pipeline or the OpenVINO parts would fail on obscurely."""
        binning = kwargs.get("use_resolution_binning", True)
        check_generation_inputs(
            prompt,
            kwargs["num_inference_steps"],
            kwargs.get("height"),
            kwargs.get("width"),
            guidance_scale=kwargs["guidance_scale"],
            num_images_per_prompt=kwargs.get("num_images_per_prompt", 1),
            **self._check_options(binning),
        )
        self._check_static_shape(prompt, kwargs)

    def _check_options(self, binning: bool) -> dict:
        """The model's facts :func:`check_generation_inputs` checks sizes and steps against; refuses binning at a
        sample size without bins."""
        sample_size = self.transformer.config.sample_size
        if binning and sample_size not in self.binned_sample_sizes:
            raise ValueError(
                f"{type(self).__name__.removeprefix('OV')} has no aspect-ratio bins for sample size {sample_size} (it has them for "
                f"{', '.join(map(str, self.binned_sample_sizes))}): pass use_resolution_binning=False with a height "
                f"and width from pipe.variant.sizes."
            )
        return dict(multiple=self.vae_scale_factor * self.transformer.config.patch_size, binning=binning,
                    max_side=largest_side(sample_size), scheduler=type(self.scheduler).__name__)

    def _check_static_shape(self, prompt: str | list[str] | None, kwargs: dict) -> None:
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


def _diffusers_pipelines():
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

    return PixArtAlphaPipeline, PixArtSigmaPipeline


class OVPixArtAlphaPipeline(OVPixArtPipeline, _diffusers_pipelines()[0]):
    """diffusers' ``PixArtAlphaPipeline`` with OpenVINO parts (prompts of 120 tokens, resolution conditions at 1024²)."""

    binned_sample_sizes = (32, 64, 128)  # 256, the 2048 bins, is PixArt-Σ's


class OVPixArtSigmaPipeline(OVPixArtPipeline, _diffusers_pipelines()[1]):
    """diffusers' ``PixArtSigmaPipeline`` with OpenVINO parts (prompts of 300 tokens, bins up to 2048²)."""

    binned_sample_sizes = tuple(ASPECT_RATIO_BINS)  # every sample size diffusers has bins for
    max_sequence_length = 300


# The OpenVINO pipeline of each diffusers pipeline a variant folder can come from.
OV_PIPELINES = {"PixArtAlphaPipeline": OVPixArtAlphaPipeline, "PixArtSigmaPipeline": OVPixArtSigmaPipeline}


def variant_to_load(model_id_or_path: str | Path | Variant, export: bool = False, export_dir: Path | None = None) -> Variant:
    """The variant :meth:`OVPixArtPipeline.from_pretrained` loads: the folder given (checked), or with ``export`` the
    FP16 folder a model id converts into."""
    if isinstance(model_id_or_path, Variant):
        return model_id_or_path
    if export:
        return export_variant(str(model_id_or_path), export_dir)
    folder = Path(model_id_or_path)
    if not folder.is_dir():
        raise VariantNotReadyError(
            f"No converted model at {folder}: pass export=True to convert a hub id, a diffusers folder, tiny or shapes "
            f"into model/<name>/FP16, or {how_to_make(folder)} first."
        )
    index = read_index(folder)
    if "_class_name" in index and "parts" not in index:  # a diffusers pipeline folder
        raise VariantNotReadyError(
            f"{folder} is a diffusers {index['_class_name']} folder, not an OpenVINO variant folder: pass export=True "
            f"to convert it first (notebook 1 does the same)."
        )
    return Variant.load(folder)


def pipeline_components(variant: Variant, core: ov.Core, device: str, ov_config: dict | None, low_memory: bool) -> dict[str, Any]:
    """diffusers' components of a variant: its OpenVINO parts (compiled at their first call or by ``compile()``),
    its tokenizer and its scheduler."""
    from transformers import AutoTokenizer

    low_memory_group: list[OVModelPart] | None = [] if low_memory else None

    def part(cls: type[OVModelPart], name: str) -> OVModelPart:
        return cls(variant.part_dir(name), core=core, device=device, ov_config=ov_config, compile_now=False,
                   low_memory_group=low_memory_group, config=variant.part_config(name))

    transformer = part(OVTransformer, "transformer")
    if variant.token_downsampling:  # a -ToDo variant: the transformer with token downsampling too, for the first steps
        transformer.use_downsampled(part(OVTransformer, DOWNSAMPLED_PART), TokenDownsampling.from_record(variant.token_downsampling))
    return dict(
        tokenizer=AutoTokenizer.from_pretrained(variant.part_dir("tokenizer")),
        scheduler=scheduler_from_config(variant.scheduler_config),
        text_encoder=part(OVTextEncoder, "text_encoder"),
        transformer=transformer,
        vae=part(OVVaeDecoder, "vae_decoder"),
    )


def check_generation_inputs(
    prompt: str | list[str] | None,
    num_inference_steps: int,
    height: int | None = None,
    width: int | None = None,
    *,
    guidance_scale: float = 0.0,
    num_images_per_prompt: int = 1,
    multiple: int = 16,
    binning: bool = True,
    max_side: int | None = None,
    scheduler: str = "LCMScheduler",
) -> None:
    """Raise a ``ValueError`` naming the problem and the fix for inputs the pipeline can't run.

    ``multiple`` is the pixel multiple the latent tiles into patches at (without binning), ``max_side`` the
    largest side the model's aspect-ratio bins have (larger pictures need memory quadratic in their tokens).
    """
    if isinstance(prompt, list) and not prompt:
        raise ValueError("The prompt list is empty: pass at least one prompt.")
    prompts = [prompt] if isinstance(prompt, str) else prompt or []
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("A prompt is empty: describe the picture you want, e.g. 'a red circle on a blue background'.")
    if not _is_whole(num_inference_steps) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps!r} is not allowed: use at least 1 step (LCM: 4).")
    # diffusers takes a one-step sample from the scheduler's second output, which only LCMScheduler returns
    if num_inference_steps == 1 and scheduler != "LCMScheduler":
        raise ValueError(
            f"num_inference_steps=1 is not allowed with {scheduler}: one step needs the LCM scheduler; use at least "
            f"2 steps (this checkpoint's recipe: 20)."
        )
    if not _is_whole(num_images_per_prompt) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt={num_images_per_prompt!r} is not allowed: ask for at least 1 picture per prompt.")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
        raise ValueError(
            f"guidance_scale={guidance_scale!r} is not allowed: use 0 or more (0: no guidance, the LCM recipe; "
            f"4.5: the standard recipe)."
        )
    # With resolution binning the pipeline maps any size to its nearest bin; without, the latent must tile into patches.
    step = 8 if binning else multiple
    for name, size in (("height", height), ("width", width)):
        if size is not None and (not _is_whole(size) or size < step or size % step):
            hint = f"{max(step, (size or 0) // step * step)}" if _is_whole(size) else "a whole number"
            raise ValueError(f"{name}={size!r} is not allowed: use a positive multiple of {step} (e.g. {hint}).")
        if size is not None and max_side and size > max_side:
            raise ValueError(
                f"{name}={size} is larger than this model draws: at most {max_side}, the largest side of its "
                f"aspect-ratio bins (e.g. {name}={max_side})."
            )


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def generate(pipe: Any, prompt: str, seed: int = 42, recipe: SamplingRecipe | None = None, **kwargs: Any) -> tuple[Image.Image, float]:
    """One image from any PixArt pipeline (PyTorch or OpenVINO) with a seeded generator, sampled by ``recipe`` (default:
    the checkpoint's) where ``kwargs`` do not say otherwise; returns it and its seconds."""
    recipe = recipe or recipe_for(pipe.scheduler)
    start = time.perf_counter()
    image = pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), **recipe.call_arguments(**kwargs)).images[0]
    return image, time.perf_counter() - start
