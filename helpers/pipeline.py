"""The OpenVINO pipeline: one small class per part, put into diffusers' own ``PixArtAlphaPipeline``."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch
from PIL import Image

from .settings import F32_CONFIG, Recipe, free_memory, recipe_for
from .sizes import ASPECT_RATIO_BINS, aspect_ratio_bins, largest_side
from .sources import scheduler_from_config
from .static_shapes import (
    CallShape,
    needs_static_shapes,
    reshaped,
    shape_mismatch_message,
    static_device_message,
    text_encoder_shapes,
    transformer_shapes,
    vae_decoder_shapes,
)
from .step_cache import (
    DEFAULT_THRESHOLD,
    FIRST_BLOCK,
    LAST_BLOCK,
    FirstBlockCache,
    StepCacheUnavailableError,
    cache_segments,
    has_cut_points,
    step_cache_missing_message,
    whole_model,
)
from .tiling import TILE_LATENT_SIZE, TILE_OVERLAP, check_tiling, decode_in_tiles
from .token_downsampling import TokenDownsampling, check_steps
from .variants import (
    DOWNSAMPLED_PART,
    IR_NAME,
    DamagedVariantError,
    check_variant,
    how_to_make,
    part_sizes_mb,
    read_index,
    scheduler_config,
    source_pipeline,
)


def available_devices(core: ov.Core | None = None) -> list[str]:
    """The devices OpenVINO sees here, plus ``AUTO`` (its own choice among them)."""
    return [*(core or ov.Core()).available_devices, "AUTO"]


def check_device(device: str, core: ov.Core | None = None) -> str:
    """Return ``device`` if OpenVINO can compile for it, else raise a ``ValueError`` listing the devices."""
    devices = available_devices(core)
    if device not in devices and device.split(":")[0] not in ("AUTO", "MULTI", "HETERO"):
        raise ValueError(f"Unknown device '{device}': choose one of {', '.join(devices)}.")
    return device


def compute_precision(device: str = "CPU", ov_config: dict | None = None, core: ov.Core | None = None) -> str:
    """The floating-point precision the device computes in: the hint in ``ov_config``, else the device's default.

    On CPUs with AMX or AVX512-BF16 the default is bf16; without, f32 (``AUTO`` picks the CPU here).
    """
    hint = (ov_config or {}).get("INFERENCE_PRECISION_HINT")
    if not hint:
        device = "CPU" if device.startswith(("AUTO", "MULTI", "HETERO")) else device
        hint = (core or ov.Core()).get_property(device, "INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if isinstance(hint, ov.Type) else str(hint).lower()  # the plugin answers an ov.Type
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


def weights_in_memory_gib(folder: Path, precision: str) -> float:
    """What a variant's weights take in memory once compiled: compressed parts as stored; FP16 parts in ``precision``.

    OpenVINO holds float weights in the precision it computes in (f32: twice the FP16 file) and keeps INT8/INT4
    weights compressed. Activations come on top.
    """
    compressed = read_index(folder).get("compression", {})
    growth = 2.0 if precision == "f32" else 1.0
    held_mb = sum(mb * (1.0 if part in compressed else growth) for part, mb in part_sizes_mb(folder).items())
    return held_mb * 1e6 / 2**30


def memory_gib() -> float:
    """This machine's memory (``MemTotal``), in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("No MemTotal in /proc/meminfo.")


# The share of memory a variant's weights may take with every part compiled: the rest is for activations
# (1024² attention and VAE decode take GBs), the notebook and the system.
MEMORY_SHARE = 0.7


def fits_in_memory(folder: Path, device: str = "CPU", ov_config: dict | None = None, core: ov.Core | None = None) -> bool:
    """True when the whole variant, compiled, fits in ``MEMORY_SHARE`` of this machine's memory."""
    precision = compute_precision(device, ov_config, core)
    return weights_in_memory_gib(folder, precision) <= MEMORY_SHARE * memory_gib()


def parity_config(folder: Path, device: str = "CPU") -> dict:
    """Compile settings for checking a variant against PyTorch: the f32 hint where the whole variant fits in memory
    in f32 (the check then measures the conversion alone), else the device's default precision (what users run)."""
    return dict(F32_CONFIG) if fits_in_memory(folder, device, F32_CONFIG) else {}


class OVModelPart:
    """One compiled IR that quacks like the torch module diffusers expects: ``config``, ``dtype``, ``device``.

    ``compile_now=False`` compiles the IR at its first call instead. Parts that share a ``turns`` list take turns
    in memory: compiling one frees the others, so only one part's weights are held at a time (the low-memory
    mode of :meth:`OVPixArtAlphaPipeline.from_variant`). A part may run as several compiled models cut from its IR
    (the cached transformer's segments): :meth:`_models` names them.
    """

    def __init__(
        self,
        folder: Path,
        core: ov.Core,
        device: str = "AUTO",
        ov_config: dict | None = None,
        compile_now: bool = True,
        turns: list["OVModelPart"] | None = None,
    ):
        from diffusers.configuration_utils import FrozenDict

        self.folder = Path(folder)
        self.config = FrozenDict(json.loads((self.folder / "config.json").read_text()))
        self.core, self.device_name, self.ov_config = core, device, ov_config or {}
        self.turns = turns
        if turns is not None:
            turns.append(self)
        self._requests: dict[str, ov.InferRequest] = {}
        self.input_shapes: dict[str, list[int]] | None = None  # static shapes (``reshape``); None: dynamic
        self._input_names: dict[str, set[str]] = {}  # filled by the compile
        self.seconds: deque[float] = deque(maxlen=1000)  # duration of each recent call, for latency breakdowns
        if compile_now:
            self._compile()

    dtype = torch.float32
    device = torch.device("cpu")

    @property
    def is_compiled(self) -> bool:
        return bool(self._requests)

    @property
    def requests(self) -> dict[str, ov.InferRequest]:
        """The infer request of each compiled model, compiling them first if they are not compiled."""
        self.compile()
        return self._requests

    def compile(self) -> None:
        """Compile now, if not compiled yet (the first call would otherwise)."""
        if not self._requests:
            self._compile()

    @property
    def request(self) -> ov.InferRequest:
        """The infer request of the part's one model (``"model"``), compiling it first if it is not compiled."""
        return self.requests["model"]

    @property
    def input_names(self) -> set[str]:
        """The inputs the part's compiled models take (known once compiled)."""
        return set().union(*self._input_names.values())

    def reshape(self, input_shapes: dict[str, list[int]] | None) -> None:
        """Fix the inputs to these shapes (``None``: dynamic again); the next call compiles for them."""
        self.input_shapes = input_shapes
        self.release()

    def _read(self) -> ov.Model:
        """The IR, with its inputs fixed to ``input_shapes`` when the part is reshaped."""
        model = self.core.read_model(self.folder / IR_NAME)
        return reshaped(model, self.input_shapes) if self.input_shapes else model

    def _models(self) -> dict[str, Path | ov.Model]:
        """What to compile, by name: the IR itself, from its path when its shapes are left dynamic (OpenVINO then maps
        the weights file instead of copying it; ``read_model`` maps it too)."""
        return {"model": self._read() if self.input_shapes else self.folder / IR_NAME}

    def _compile(self) -> dict[str, ov.InferRequest]:
        for other in self.turns or ():
            if other is not self:
                other.release()
        try:
            models = self._models()
            for name, model in models.items():
                self._requests[name] = self.core.compile_model(model, self.device_name, self.ov_config).create_infer_request()
                # every name of each input: a reshape can merge other tensor names into an input's port
                self._input_names[name] = set().union(*(port.get_names() for port in self._requests[name].model_inputs))
        except RuntimeError as error:
            self._requests.clear()
            damaged = self._unreadable()
            if damaged:
                raise damaged from error
            raise
        return self._requests

    def _unreadable(self) -> DamagedVariantError | None:
        """A damaged-file error naming this part's IR when OpenVINO can't even read it; None when it can (the
        compile failed for another reason, such as memory)."""
        try:
            self.core.read_model(self.folder / IR_NAME)
        except RuntimeError as read_error:  # its message is plainer than the compile's (AUTO wraps that one)
            variant = self.folder.parent
            reason = openvino_reason(read_error)
            return DamagedVariantError(
                f"OpenVINO can't read {self.folder / IR_NAME} or its .bin ({reason}): the file is damaged. "
                f"`python -m helpers verify --folder {variant}` names every damaged file; copy the folder again, "
                f"or {how_to_make(variant)}."
            )
        return None

    def release(self) -> None:
        """Free the compiled models (and their weights); the next call compiles them again."""
        if self._requests:
            self._requests.clear()
            free_memory()

    def run(self, model: str, **inputs: torch.Tensor | np.ndarray | None) -> list[np.ndarray]:
        """Run one compiled model on the named inputs it has (``None`` values and unknown names are left out)."""
        request = self.requests[model]
        names = self._input_names[model]
        feed = {name: _to_numpy(value) for name, value in inputs.items() if value is not None and name in names}
        outputs = request.infer(feed)
        return [outputs[index] for index in range(len(request.model_outputs))]

    def infer(self, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Run the part's model on the named inputs it has; its first output, timed into ``seconds``."""
        start = time.perf_counter()
        output = torch.from_numpy(self.run("model", **inputs)[0])
        self.seconds.append(time.perf_counter() - start)
        return output


def openvino_reason(error: RuntimeError) -> str:
    """The line of an OpenVINO error that says what went wrong, without the source locations it is wrapped in."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (said or lines or [type(error).__name__])[-1][:200]


def _to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value if isinstance(value, np.ndarray) else value.detach().cpu().numpy()


class OVTextEncoder(OVModelPart):
    """The T5 encoder: ``text_encoder(input_ids, attention_mask=mask)[0]`` → hidden states."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return (self.infer(input_ids=input_ids, attention_mask=attention_mask),)


class OVTransformer(OVModelPart):
    """The PixArt transformer, called the way ``PixArtAlphaPipeline`` calls ``PixArtTransformer2DModel``.

    ``enable_step_cache(threshold)`` runs it as three models cut from its IR, skipping the middle one at the steps
    where the first block's residual barely moved (``helpers.step_cache``); ``step_cache.counts`` tells how many steps
    were computed and reused since its last ``reset()``.

    A ``-ToDo`` variant also has the transformer with token downsampling (``helpers.token_downsampling``):
    :meth:`use_downsampled` gives it, and after :meth:`start_picture` it runs the picture's first steps (the
    ``downsampling.steps`` fraction of them); the step cache works on the exact steps that follow.
    """

    step_cache: FirstBlockCache | None = None
    downsampled: "OVTransformer | None" = None
    downsampling: TokenDownsampling | None = None
    _step, _downsampled_steps = 0, 0  # of the picture being drawn

    def use_downsampled(self, downsampled: "OVTransformer", downsampling: TokenDownsampling) -> None:
        self.downsampled, self.downsampling = downsampled, downsampling

    def start_picture(self, num_inference_steps: int) -> None:
        """Count the steps of a new picture from its first: the downsampled ones first, then the exact ones."""
        self._step = 0
        self._downsampled_steps = self.downsampling.steps_of(num_inference_steps) if self.downsampled else 0
        if self.step_cache is not None:
            self.step_cache.reset()

    def compile(self) -> None:
        super().compile()
        if self.downsampled is not None and self.downsampling.steps > 0:
            self.downsampled.compile()

    def reshape(self, input_shapes: dict[str, list[int]] | None) -> None:
        super().reshape(input_shapes)
        if self.downsampled is not None:
            self.downsampled.reshape(input_shapes)

    def release(self) -> None:
        super().release()
        if self.downsampled is not None:
            self.downsampled.release()

    @property
    def has_step_cache(self) -> bool:
        """Whether the IR has the step cache's cut points (folders converted before it have not)."""
        return has_cut_points(self.core.read_model(self.folder / IR_NAME))

    def enable_step_cache(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        cache = FirstBlockCache(threshold)
        if self.step_cache is not None:  # already cut into segments: only the threshold changes
            self.step_cache = cache
            return
        if not self.has_step_cache:
            raise StepCacheUnavailableError(step_cache_missing_message(self.folder.parent))
        self.release()  # compiled again, as segments, at the next call
        self.step_cache = cache

    def disable_step_cache(self) -> None:
        if self.step_cache is not None:
            self.release()
            self.step_cache = None

    def _models(self) -> dict[str, Path | ov.Model]:
        if self.step_cache is not None:
            return cache_segments(self._read)
        model = self._read()
        if has_cut_points(model):
            return {"model": whole_model(model)}
        return {"model": model if self.input_shapes else self.folder / IR_NAME}

    def __call__(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        added_cond_kwargs: dict | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = False,
        **_: Any,
    ):
        step, self._step = self._step, self._step + 1
        if step < self._downsampled_steps:
            start = time.perf_counter()
            output = self.downsampled(hidden_states, encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask)
            self.seconds.append(time.perf_counter() - start)  # one part, whichever model ran the step
            return output
        conditions = added_cond_kwargs or {}
        inputs = dict(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep.float(),
            resolution=conditions.get("resolution"),
            aspect_ratio=conditions.get("aspect_ratio"),
        )
        if self.step_cache is None:
            return (self.infer(**inputs),)
        start = time.perf_counter()
        first_block, embedded = self.run("first", **inputs)
        last_block = self.step_cache(embedded, first_block, lambda first: self.run("blocks", **{FIRST_BLOCK: first}, **inputs)[0])
        sample = self.run("head", **{LAST_BLOCK: last_block}, **inputs)[0]
        self.seconds.append(time.perf_counter() - start)
        return (torch.from_numpy(sample),)


class OVVaeDecoder(OVModelPart):
    """The VAE decoder, behind the ``vae.decode(latents, return_dict=False)[0]`` call of the pipeline.

    ``enable_tiling()`` decodes latents larger than a tile in overlapping tiles (``helpers.tiling``), as diffusers'
    ``AutoencoderKL.enable_tiling`` does: SDXL's VAE takes 17 GiB to decode a 2048² picture whole.
    """

    use_tiling = False
    tile_latent_size, tile_overlap = TILE_LATENT_SIZE, TILE_OVERLAP

    def enable_tiling(self, tile_latent_size: int = TILE_LATENT_SIZE, overlap: int = TILE_OVERLAP) -> None:
        check_tiling(tile_latent_size, overlap)
        if self.input_shapes:
            raise ValueError("The VAE decoder is reshaped for whole latents: call vae.enable_tiling() before pipe.reshape(...).")
        self.use_tiling, self.tile_latent_size, self.tile_overlap = True, tile_latent_size, overlap

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        if self.use_tiling and max(latents.shape[-2:]) > self.tile_latent_size:
            return (decode_in_tiles(lambda tile: self.infer(latent_sample=tile), latents, self.tile_latent_size, self.tile_overlap),)
        return (self.infer(latent_sample=latents),)


class OVPixArtPipeline:
    """What the OpenVINO pipelines add to diffusers' PixArt-α and PixArt-Σ pipelines, whose ``__call__``, checks,
    bins and loop they keep: loading from a variant folder, the checkpoint's recipe, clear errors for bad input.

    ``OVPixArtPipeline.from_variant(folder)`` returns the pipeline of the folder's own kind: an
    :class:`OVPixArtAlphaPipeline` or an :class:`OVPixArtSigmaPipeline`. No torch weights are loaded.
    """

    binned_sample_sizes: tuple[int, ...] = ()  # the sample sizes whose bins the diffusers pipeline maps sizes to
    max_sequence_length = 120  # diffusers' default prompt length (tokens) for this pipeline
    static_shape: CallShape | None = None  # the one call's shapes the parts are compiled for (``reshape``)
    reshape_each_call = False  # reshape to every call's shapes (static-only devices): compiles when they change

    @classmethod
    def from_variant(
        cls,
        folder: Path,
        device: str = "AUTO",
        ov_config: dict | None = None,
        low_memory: bool | None = None,
        step_cache: float | None = None,
        compile: bool = True,
        downsampled_steps: float | None = None,
    ) -> "OVPixArtPipeline":
        """Compile the three IRs of a variant folder for ``device`` and return the pipeline (α or Σ, as the folder's
        model is).

        ``step_cache``: a threshold turns the step cache on (:meth:`enable_step_cache`); ``None`` leaves it off. A
        folder converted before step caching loads without it, with a warning that says how to remake it.

        ``low_memory=True`` keeps one part's weights in memory at a time: each part is compiled when it is called
        and frees the others (T5 once per prompt, the transformer once per picture). On a CPU without bf16,
        OpenVINO holds FP16 weights in f32, and T5-XXL alone then takes 18 GiB. It costs the parts' compile time at
        every picture. ``None`` (the default) turns it on when the variant's weights would not fit in memory
        (:func:`fits_in_memory`).

        ``downsampled_steps``: for a ``-ToDo`` variant, the fraction of each picture's first steps its downsampled
        transformer runs (default: the folder's, as it was made; see :meth:`set_downsampled_steps`).

        ``compile=False`` compiles each part at its first call instead (after a :meth:`reshape`, say, as optimum-intel's
        ``compile=False``). A device that compiles static shapes only (``NPU``) compiles nothing here: each
        call reshapes the parts to its own shapes (``reshape_each_call``), compiling them again when they change; or
        call :meth:`reshape` once.
        """
        from transformers import AutoTokenizer

        folder = check_variant(folder)
        pipeline_class = OV_PIPELINES[source_pipeline(folder)]
        core = ov.Core()
        device = check_device(device, core)
        if low_memory is None:
            low_memory = not fits_in_memory(folder, device, ov_config, core)
        turns: list[OVModelPart] | None = [] if low_memory else None
        compile_now = compile and not low_memory and not needs_static_shapes(device)
        options = dict(core=core, device=device, ov_config=ov_config, compile_now=compile_now, turns=turns)
        parts = {
            "text_encoder": OVTextEncoder(folder / "text_encoder", **options),
            # compiled below, once it is known whether it runs whole or cut for the step cache
            "transformer": OVTransformer(folder / "transformer", **(options | {"compile_now": False})),
            "vae": OVVaeDecoder(folder / "vae_decoder", **options),
        }
        downsampling = read_index(folder).get("token_downsampling")
        if downsampling:  # a -ToDo variant: the transformer with token downsampling too, for the first steps
            downsampled = OVTransformer(folder / DOWNSAMPLED_PART, **(options | {"compile_now": False}))
            parts["transformer"].use_downsampled(downsampled, TokenDownsampling.from_record(downsampling))
        scheduler = scheduler_from_config(scheduler_config(folder))
        pipe = pipeline_class(tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"), scheduler=scheduler, **parts)
        pipe.variant_folder = folder
        pipe.low_memory = low_memory
        pipe.reshape_each_call = needs_static_shapes(device)
        pipe.step_cache_counts = None
        if downsampled_steps is not None:
            pipe.set_downsampled_steps(downsampled_steps)
        if step_cache is not None:
            try:
                pipe.enable_step_cache(step_cache)
            except StepCacheUnavailableError as error:
                warnings.warn(str(error), stacklevel=2)
        if compile_now:
            pipe.transformer.compile()
        return pipe

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
        if not self.low_memory:
            for part in (self.text_encoder, self.transformer, self.vae):
                part.compile()
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
                f"{self.variant_folder} has no transformer with token downsampling: load a -ToDo variant "
                f"(`python -m helpers compress --variant W8A8-ToDo` makes one)."
            )
        self.transformer.downsampling = dataclasses.replace(self.transformer.downsampling, steps=check_steps(fraction))

    @property
    def recipe(self) -> Recipe:
        """The sampling recipe of this checkpoint (LCM: 4 steps, no guidance; standard: 20 steps, 4.5)."""
        return recipe_for(self.scheduler)

    def __call__(self, prompt: str | list[str] | None = None, *args: Any, **kwargs: Any):
        """diffusers' call; steps and guidance default to the checkpoint's recipe instead of 20 and 4.5."""
        kwargs.setdefault("num_inference_steps", self.recipe.num_inference_steps)
        kwargs.setdefault("guidance_scale", self.recipe.guidance_scale)
        self.check_call_inputs(prompt, **kwargs)
        if self.reshape_each_call:
            self.reshape_for(prompt, **kwargs)
        self.transformer.start_picture(kwargs["num_inference_steps"])  # its step count, its step cache
        cache = self.transformer.step_cache
        output = super().__call__(prompt, *args, **kwargs)
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
                f"and width from helpers.sizes.size_choices."
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


def generate(pipe: Any, prompt: str, seed: int = 42, recipe: Recipe | None = None, **kwargs: Any) -> tuple[Image.Image, float]:
    """One image from any PixArt pipeline (PyTorch or OpenVINO) with a seeded generator; returns it and its seconds."""
    recipe = recipe or recipe_for(pipe.scheduler)
    start = time.perf_counter()
    image = pipe(
        prompt,
        negative_prompt=recipe.negative_prompt,
        num_inference_steps=recipe.num_inference_steps,
        guidance_scale=recipe.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        **kwargs,
    ).images[0]
    return image, time.perf_counter() - start


def device_widget(default: str = "AUTO"):
    """A dropdown of the devices OpenVINO sees here, plus AUTO."""
    import ipywidgets as widgets

    devices = available_devices()
    return widgets.Dropdown(options=devices, value=default if default in devices else devices[0], description="Device:")
