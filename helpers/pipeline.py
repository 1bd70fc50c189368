"""The OpenVINO pipeline: diffusers' own ``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline`` with the OpenVINO parts
(``helpers.parts``) in it, loaded from a variant folder; its input checks; one seeded picture (``generate``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from diffusers import ImagePipelineOutput
from PIL import Image

from .call_checks import check_generation_inputs
from .checkpoints import scheduler_from_config
from .devices import check_device, fits_in_memory
from .editing import EditingMixin, edit_strength, steps_to_run
from .lora import OVLoraMixin
from .parts import OVModelPart, OVTextEncoder, OVTransformer, OVVaeDecoder, OVVaeEncoder, PartMaker
from .record import CallRecord
from .settings import STEP_CACHE_THRESHOLD, SamplingRecipe, recipe_for
from .sizes import ASPECT_RATIO_BINS, largest_side
from .static_shapes import StaticShapesMixin, needs_static_shapes, static_device_message
from .tiny_vae import TinyVaeMixin
from .variants import (
    DOWNSAMPLED_PART,
    VAE_ENCODER,
    Variant,
    VariantNotReadyError,
    how_to_make,
    read_index,
    save_variant,
)


class OVPixArtPipeline(OVLoraMixin, StaticShapesMixin, EditingMixin, TinyVaeMixin):
    """What the OpenVINO pipelines add to diffusers' PixArt-α and PixArt-Σ pipelines, whose ``__call__``, checks,
    bins and loop they keep: loading and saving in optimum-intel's habits, the device, clear errors for bad input,
    edits (``image=``, ``mask_image=``: ``helpers.editing``) where the folder has a VAE encoder, and a draft decoder
    (``set_decoder("tiny")``: ``helpers.tiny_vae``) where it has a tiny VAE.

    ``OVPixArtPipeline.from_pretrained(folder)`` returns the pipeline of the variant's own kind: an
    :class:`OVPixArtAlphaPipeline` or an :class:`OVPixArtSigmaPipeline`. No torch weights are loaded. Its
    ``variant`` is the :class:`~helpers.variants.Variant` it was loaded from.
    """

    binned_sample_sizes: tuple[int, ...] = ()  # the sample sizes whose bins the diffusers pipeline maps sizes to
    max_sequence_length = 120  # diffusers' default prompt length (tokens) for this pipeline
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
        decoder: str = "full",
    ) -> "OVPixArtPipeline":
        """Load a variant folder (or a :class:`~helpers.variants.Variant`) and compile its parts for ``device``, as
        optimum-intel's ``OVDiffusionPipeline.from_pretrained`` does; returns the α or Σ pipeline, as its model is.

        ``export=True`` converts what ``PIXART_MODEL_ID`` takes (:func:`~helpers.conversion.export_variant`) into
        ``export_dir``, by default notebook 1's ``model/<model-name>/FP16``; a finished one is loaded as it is.

        ``ov_config``: OpenVINO compile properties. ``compile=False`` compiles each part at its first call instead
        (after a :meth:`reshape`, say); :meth:`compile` compiles now. A device that compiles static shapes only (``NPU``)
        compiles nothing here: each call reshapes the parts to its own shapes (``reshape_each_call``), or call :meth:`reshape`.

        ``low_memory=True`` keeps one part's weights in memory at a time: each part is compiled when it is called
        and frees the others (T5 once per prompt, the transformer once per picture). On a CPU without bf16,
        OpenVINO holds FP16 weights in f32, and T5-XXL alone then takes 18 GiB. It costs the parts' compile time at
        every picture. ``None`` (the default) turns it on when the variant's weights would not fit in memory
        (:func:`~helpers.devices.fits_in_memory`).

        ``step_cache``: a threshold turns the step cache on (:meth:`enable_step_cache`), ``False`` leaves it off,
        ``None`` does as the folder says (as a cached pipeline's ``save_pretrained`` recorded).
        ``downsampled_steps``: for a ``-ToDo`` variant, the fraction of each picture's first steps its downsampled
        transformer runs (default: the folder's). ``decoder="tiny"``: drafts (:meth:`set_decoder`).
        """
        variant, core = variant_to_load(model_id_or_path, export, export_dir), ov.Core()
        device = check_device(device, core)
        low_memory = not fits_in_memory(variant, device, ov_config, core) if low_memory is None else low_memory
        maker = PartMaker(variant, core, device, ov_config, low_memory)
        pipe = OV_PIPELINES[variant.pipeline_name](**pipeline_components(variant, maker))
        pipe.variant, pipe.part_maker, pipe.low_memory, pipe.full_vae = variant, maker, low_memory, pipe.vae
        pipe.set_decoder(decoder)
        pipe.reshape_each_call = needs_static_shapes(device)
        threshold = {None: variant.step_cache_threshold, False: None, True: STEP_CACHE_THRESHOLD}.get(step_cache, step_cache)
        pipe.compose_transformer(threshold)
        if downsampled_steps is not None:
            pipe.set_downsampled_steps(downsampled_steps)
        if compile and not low_memory and not pipe.reshape_each_call:
            pipe.compile()
        return pipe

    def compose_transformer(self, step_cache: float | None) -> None:
        """Put the transformer together from its pieces: the plain one, or the step cache's at threshold
        ``step_cache``; for a ``-ToDo`` variant, inside the piece that runs its downsampled transformer for each
        picture's first steps (the fraction set, else the folder's). Pieces are imported only when asked: the core
        draws without them. The new transformer keeps the static shapes; it compiles at its first call."""
        if step_cache is None:
            transformer = self.part_maker.make(OVTransformer, "transformer")
        else:
            from .step_cache import CachedTransformer

            transformer = self.part_maker.make(CachedTransformer, "transformer", threshold=step_cache)
        if self.variant.token_downsampling:
            from .token_downsampling import DEFAULT_STEPS, DownsampledSteps

            steps = self.downsampled_steps
            steps = self.variant.token_downsampling.get("steps", DEFAULT_STEPS) if steps is None else steps
            transformer = DownsampledSteps(transformer, self.part_maker.make(OVTransformer, DOWNSAMPLED_PART), steps)
        self.transformer.release()
        if self.transformer.input_shapes:
            transformer.reshape(self.transformer.input_shapes)
        self.transformer = transformer

    def save_pretrained(self, save_directory: str | Path) -> Variant:
        """Write this pipeline as a variant folder that :meth:`from_pretrained` loads back to the same pictures: its
        parts (hard links to the loaded folder's files), its scheduler as it is now, and what was set at run time
        (the step cache's threshold, a ``-ToDo`` variant's downsampled steps), under a temporary name renamed at the
        end. Returns the saved :class:`~helpers.variants.Variant`."""
        return save_variant(self.variant, Path(save_directory), self.run_settings(), self.scheduler.save_pretrained)

    def run_settings(self) -> dict[str, Any]:
        """What was set on this pipeline beside its folder, as a variant index records it."""
        threshold = self.step_cache_threshold
        settings: dict[str, Any] = {"step_cache": None if threshold is None else {"threshold": threshold}}
        if self.downsampled_steps is not None:
            settings["token_downsampling"] = self.variant.token_downsampling | {"steps": self.downsampled_steps}
        return settings

    @property
    def exact_transformer(self) -> OVTransformer:
        """The transformer that runs the exact steps: the plain one or the step cache's."""
        return getattr(self.transformer, "exact", self.transformer)

    @property
    def step_cache_threshold(self) -> float | None:
        """The step cache's threshold, or ``None`` with the cache off."""
        return getattr(self.exact_transformer, "threshold", None)

    @property
    def downsampled_steps(self) -> float | None:
        """The fraction of each picture's first steps a ``-ToDo`` variant runs downsampled; ``None`` for others."""
        return getattr(self.transformer, "steps", None) if self.variant.token_downsampling else None

    @property
    def vae_encoder(self) -> OVVaeEncoder | None:
        """The VAE encoder edits need (optimum-intel's name for it); None for a folder made without it."""
        return self.vae.encoder

    @property
    def parts(self) -> tuple[OVModelPart, ...]:
        optional = (self.vae_encoder, self._tiny_vae)  # the tiny decoder once made (``tiny_vae``)
        return (self.text_encoder, self.transformer, self.full_vae, *(part for part in optional if part is not None))

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
        device = check_device(device, self.part_maker.core)
        was_compiled = any(part.is_compiled for part in self.parts)
        self.part_maker.device = device
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

    def enable_step_cache(self, threshold: float = STEP_CACHE_THRESHOLD) -> None:
        """Reuse the transformer's blocks between neighbouring steps (First Block Cache, ``helpers.step_cache``).

        ``threshold``: how far the first block's residual may move before the other blocks run again (0: always).
        Changing the threshold of a cache already on compiles nothing."""
        if self.step_cache_threshold is None:
            self.compose_transformer(threshold)
        else:
            self.exact_transformer.set_threshold(threshold)

    def disable_step_cache(self) -> None:
        if self.step_cache_threshold is not None:
            self.compose_transformer(None)

    def set_downsampled_steps(self, fraction: float) -> None:
        """How much of each picture's first steps a ``-ToDo`` variant runs with token downsampling: 0 (none: the
        exact pipeline) to 1 (all: fastest, and furthest from the exact picture)."""
        if self.downsampled_steps is None:
            raise ValueError(
                f"{self.variant.folder} has no transformer with token downsampling: load a -ToDo variant "
                f"(`python -m helpers compress --variant W8A8-ToDo` makes one)."
            )
        self.transformer.steps = fraction  # checked by the piece

    @property
    def recipe(self) -> SamplingRecipe:
        """The sampling recipe of this checkpoint (LCM: 4 steps, no guidance; standard: 20 steps, 4.5)."""
        return recipe_for(self.scheduler)

    def __call__(self, *args: Any, **kwargs: Any):
        """diffusers' call, its arguments and defaults, but for steps and guidance, which default to the checkpoint's
        recipe (LCM: 4 steps, no guidance, as its model card gives; standard: diffusers' own 20 and 4.5); with
        ``image`` (and ``mask_image``), an edit of that picture (:class:`~helpers.editing.EditingMixin`)."""
        kwargs = self.recipe.defaults() | self.call_arguments(*args, **kwargs)
        prompt = kwargs.pop("prompt", None)
        self.check_call_inputs(prompt, **kwargs)
        if self.reshape_each_call:
            self.reshape_for(prompt, **kwargs)
        steps = steps_to_run(kwargs["num_inference_steps"], edit_strength(kwargs))  # an edit runs its share of them
        record = self.part_maker.recorder.start(steps, step_cache=self.step_cache_threshold is not None)
        output = super().__call__(prompt, **kwargs)
        if isinstance(output, tuple):  # return_dict=False gives a bare tuple, as in diffusers
            return output
        return OVPixArtPipelineOutput(images=output.images, record=record)

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
            **self.check_options(binning),
        )
        self.check_edit_inputs(kwargs | {"prompt": prompt})
        self.check_static_shape(prompt, kwargs)

    def check_options(self, binning: bool) -> dict:
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
                    max_side=largest_side(sample_size), scheduler=type(self.scheduler).__name__,
                    max_steps=getattr(self.scheduler.config, "original_inference_steps", None))


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
        from .conversion import export_variant  # tracing and NNCF's imports: only when converting

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


def pipeline_components(variant: Variant, maker: PartMaker) -> dict[str, Any]:
    """diffusers' components of a variant: its OpenVINO parts (the transformer plain, see
    :meth:`OVPixArtPipeline.compose_transformer`), its tokenizer and its scheduler."""
    from transformers import AutoTokenizer

    vae = maker.make(OVVaeDecoder, "vae_decoder")
    if VAE_ENCODER in variant.index["parts"]:
        vae.encoder = maker.make(OVVaeEncoder, VAE_ENCODER)
    return dict(
        tokenizer=AutoTokenizer.from_pretrained(variant.part_dir("tokenizer")),
        scheduler=scheduler_from_config(variant.scheduler_config),
        text_encoder=maker.make(OVTextEncoder, "text_encoder"),
        transformer=maker.make(OVTransformer, "transformer"),
        vae=vae,
    )


@dataclass
class OVPixArtPipelineOutput(ImagePipelineOutput):
    """diffusers' output (``images``) and the call's :class:`~helpers.record.CallRecord`: steps computed, reused and
    downsampled, seconds per part."""

    record: CallRecord | None = None


def generate(pipe: Any, prompt: str, seed: int = 42, recipe: SamplingRecipe | None = None, **kwargs: Any) -> tuple[Image.Image, float]:
    """One image from any PixArt pipeline (PyTorch or OpenVINO) with a seeded generator, sampled by ``recipe`` (default:
    the checkpoint's) where ``kwargs`` do not say otherwise; returns it and its seconds."""
    output, seconds = timed_call(pipe, prompt, seed, recipe, **kwargs)
    return output.images[0], seconds


def timed_call(pipe: Any, prompt: str, seed: int = 42, recipe: SamplingRecipe | None = None, **kwargs: Any) -> tuple[Any, float]:
    """:func:`generate`'s call: the pipeline's whole output (an OpenVINO pipeline's carries its record) and its seconds."""
    recipe = recipe or recipe_for(pipe.scheduler)
    start = time.perf_counter()
    output = pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), **recipe.call_arguments(**kwargs))
    return output, time.perf_counter() - start
