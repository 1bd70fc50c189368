"""The OpenVINO model parts: one small class per part of the PixArt pipeline over a shared base that compiles an
IR, calls it and holds its config, each quacking like the torch module diffusers' pipeline calls."""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from .settings import free_memory
from .static_shapes import reshaped
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
from .token_downsampling import TokenDownsampling
from .variants import IR_NAME, DamagedVariantError, how_to_make


class OVModelPart:
    """One compiled IR that quacks like the torch module diffusers expects: ``config``, ``dtype``, ``device``.

    ``config`` is the part's torch config (read from its ``config.json`` when not given). ``compile_now=False``
    compiles the IR at its first call instead. Parts that share a ``low_memory_group`` list are compiled one at a
    time: compiling one frees the others, so only one part's weights are held (the low-memory mode of
    :meth:`~helpers.pipeline.OVPixArtPipeline.from_pretrained`). A part may run as several compiled models cut from its IR
    (the cached transformer's segments): :meth:`_models` names them.
    """

    def __init__(
        self,
        folder: Path,
        core: ov.Core,
        device: str = "AUTO",
        ov_config: dict | None = None,
        compile_now: bool = True,
        low_memory_group: list["OVModelPart"] | None = None,
        config: dict[str, Any] | None = None,
    ):
        from diffusers.configuration_utils import FrozenDict

        self.folder = Path(folder)
        self.config = FrozenDict(config if config is not None else json.loads((self.folder / "config.json").read_text()))
        self.core, self.device_name, self.ov_config = core, device, ov_config or {}
        self.low_memory_group = low_memory_group
        if low_memory_group is not None:
            low_memory_group.append(self)
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
        for other in self.low_memory_group or ():
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

    def move_to(self, device: str) -> None:
        """Compile for ``device`` from now on: the compiled models are freed, and the next call compiles them."""
        self.device_name = device
        self.release()

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

    def move_to(self, device: str) -> None:
        super().move_to(device)
        if self.downsampled is not None:
            self.downsampled.move_to(device)

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
