"""The OpenVINO model parts: one small class per part of the PixArt pipeline over a shared base that compiles an
IR, calls it and holds its config, each quacking like the torch module diffusers' pipeline calls."""

from __future__ import annotations

import json
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from .machine import free_memory
from .record import Recorder
from .static_shapes import reshaped
from .tiling import TILE_LATENT_SIZE, TILE_OVERLAP, check_tiling, decode_in_tiles
from .variants import IR_NAME, VAE_ENCODER, DamagedVariantError, Variant, VariantNotReadyError, how_to_make


class OVModelPart:
    """One compiled IR that quacks like the torch module diffusers expects: ``config``, ``dtype``, ``device``.

    ``config`` is the part's torch config (read from its ``config.json`` when not given). ``compile_now=False``
    compiles the IR at its first call instead. Parts that share a ``low_memory_group`` set are compiled one at a
    time: compiling one frees the others, so only one part's weights are held (the low-memory mode of
    :meth:`~helpers.pipeline.OVPixArtPipeline.from_pretrained`). Each call is timed into ``recorder``'s record of the
    call in progress, under the part's ``part_name``. A part may run as several compiled models cut from its IR (the
    step cache's segments): :meth:`models_to_compile` names them. ``adapters`` (LoRA, set by ``load_lora_weights``)
    edit the IR as it is read and add their matrices to each call's inputs.
    """

    part_name = "part"

    def __init__(
        self,
        folder: Path,
        core: ov.Core,
        device: str = "AUTO",
        ov_config: dict | None = None,
        compile_now: bool = True,
        low_memory_group: weakref.WeakSet | None = None,
        config: dict[str, Any] | None = None,
        recorder: Recorder | None = None,
        adapters: Any = None,
    ):
        from diffusers.configuration_utils import FrozenDict

        self.folder = Path(folder)
        self.config = FrozenDict(config if config is not None else json.loads((self.folder / "config.json").read_text()))
        self.core, self.device_name, self.ov_config = core, device, ov_config or {}
        self.low_memory_group = low_memory_group
        if low_memory_group is not None:
            low_memory_group.add(self)
        self.recorder = recorder or Recorder()
        self._requests: dict[str, ov.InferRequest] = {}
        self.input_shapes: dict[str, list[int]] | None = None  # static shapes (``reshape``); None: dynamic
        self._input_names: dict[str, set[str]] = {}  # filled by the compile
        self.compile_count = 0  # models compiled so far: what a run-time switch (LoRA strengths, say) must not add to
        self.adapters = adapters  # LoRA adapters (``helpers.lora.Adapters``): they edit the IR and feed its branches
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

    def read_ir(self) -> ov.Model:
        """The IR, its inputs fixed to ``input_shapes`` when the part is reshaped, with the adapters' edits."""
        model = self.core.read_model(self.folder / IR_NAME)
        model = reshaped(model, self.input_shapes) if self.input_shapes else model
        return self.adapters.edit(model, self.part_name) if self.adapted else model  # the branches' ranks stay dynamic

    @property
    def adapted(self) -> bool:
        """Whether LoRA adapters change this part's IR."""
        return self.adapters is not None and self.adapters.changes(self.part_name)

    def models_to_compile(self) -> dict[str, Path | ov.Model]:
        """What to compile, by name: the IR itself, from its path when nothing changes it (OpenVINO then maps the
        weights file instead of copying it; ``read_model`` maps it too)."""
        return {"model": self.read_ir() if self.input_shapes or self.adapted else self.folder / IR_NAME}

    def _compile(self) -> dict[str, ov.InferRequest]:
        for other in list(self.low_memory_group or ()):
            if other is not self:
                other.release()
        try:
            models = self.models_to_compile()
            for name, model in models.items():
                self._requests[name] = self.core.compile_model(model, self.device_name, self.ov_config).create_infer_request()
                self.compile_count += 1
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
        """Run one compiled model on the named inputs it has (``None`` values and unknown names are left out), and the
        adapters' matrices for the branches it has."""
        request = self.requests[model]
        names = self._input_names[model]
        if self.adapters is not None:  # the feed is cached until the adapters change; {} for a part with no branch
            inputs = self.adapters.feed(self.part_name) | inputs
        feed = {name: _to_numpy(value) for name, value in inputs.items() if value is not None and name in names}
        outputs = request.infer(feed)
        return [outputs[index] for index in range(len(request.model_outputs))]

    def infer(self, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Run the part's model on the named inputs it has; its first output, timed into the call's record."""
        start = time.perf_counter()
        output = torch.from_numpy(self.run("model", **inputs)[0])
        self.recorder.record.add(self.part_name, time.perf_counter() - start)
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

    part_name = "text_encoder"

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return (self.infer(input_ids=input_ids, attention_mask=attention_mask),)


class OVTransformer(OVModelPart):
    """The PixArt transformer, called the way ``PixArtAlphaPipeline`` calls ``PixArtTransformer2DModel``: one IR, run
    whole. The step cache (``helpers.step_cache``) and token downsampling (``helpers.token_downsampling``) are pieces
    the loader composes around it."""

    part_name = "transformer"

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
        inputs = transformer_inputs(hidden_states, encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask)
        return (self.infer(**inputs),)

    def models_to_compile(self) -> dict[str, Path | ov.Model]:
        return {"model": sample_only(self.read_ir())}


def sample_only(transformer: ov.Model) -> ov.Model:
    """The transformer IR with its first output only, the sample: the others it carries (the step cache's cut
    points) would be copied out at every step. Edits ``transformer`` in place and returns it."""
    for result in transformer.get_results()[1:]:
        transformer.remove_result(result)
    return transformer


def transformer_inputs(hidden_states, encoder_hidden_states, timestep, added_cond_kwargs=None, encoder_attention_mask=None) -> dict:
    """The transformer IR's inputs by name, from diffusers' call (the resolution conditions only at 1024²)."""
    conditions = added_cond_kwargs or {}
    return dict(
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
        timestep=timestep.float(),
        resolution=conditions.get("resolution"),
        aspect_ratio=conditions.get("aspect_ratio"),
    )


class OVVaeDecoder(OVModelPart):
    """The VAE decoder, behind the ``vae.decode(latents, return_dict=False)[0]`` call of the pipeline, and the VAE
    encoder beside it (``encoder``, where the folder has one) behind ``vae.encode(images)``, as diffusers' one VAE.

    ``enable_tiling()`` decodes latents larger than a tile in overlapping tiles (``helpers.tiling``), as diffusers'
    ``AutoencoderKL.enable_tiling`` does: SDXL's VAE takes 17 GiB to decode a 2048² picture whole.
    """

    part_name = "vae_decoder"
    use_tiling = False
    encoder: OVVaeEncoder | None = None
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

    def encode(self, sample: torch.Tensor, return_dict: bool = True):
        """The encoder's ``encode``; a folder without one is refused with the commands that add it."""
        if self.encoder is None:
            raise VariantNotReadyError(missing_encoder_message(self.folder.parent))
        return self.encoder.encode(sample, return_dict)


def missing_encoder_message(folder: Path) -> str:
    """One line: the folder has no VAE encoder, and what adds it (FP16's conversion, then the folder's own command)."""
    steps = dict.fromkeys([how_to_make(folder.with_name("FP16")), how_to_make(folder)])
    return (f"The model at {folder} has no VAE encoder ({VAE_ENCODER}/), which image-to-image and inpainting need "
            f"(it was made before the encoder was): {', then '.join(steps)} to add it.")


class OVVaeEncoder(OVModelPart):
    """The VAE encoder, called as diffusers' ``vae.encode(images).latent_dist``: its IR gives the latent distribution's
    parameters, which diffusers' own ``DiagonalGaussianDistribution`` reads (``mode()``, ``sample(generator)``)."""

    part_name = VAE_ENCODER

    def encode(self, sample: torch.Tensor, return_dict: bool = True):
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
        from diffusers.models.modeling_outputs import AutoencoderKLOutput

        latent_dist = DiagonalGaussianDistribution(self.infer(sample=sample))
        return AutoencoderKLOutput(latent_dist=latent_dist) if return_dict else (latent_dist,)


class PartMaker:
    """Makes a variant's OpenVINO parts, all alike: one OpenVINO core and device, one record of the call in progress,
    and in low-memory mode one group that holds one part's weights at a time."""

    def __init__(self, variant: Variant, core: ov.Core, device: str, ov_config: dict | None, low_memory: bool):
        self.variant, self.core, self.device, self.ov_config = variant, core, device, ov_config
        self.low_memory_group = weakref.WeakSet() if low_memory else None
        self.recorder = Recorder()
        self.adapters = None  # LoRA adapters, once loaded (``helpers.lora``)

    def make(self, cls: type[OVModelPart], name: str, **kwargs: Any) -> OVModelPart:
        """Part ``name`` of the variant as a ``cls``, compiled at its first call or by ``compile()``."""
        return cls(self.variant.part_dir(name), core=self.core, device=self.device, ov_config=self.ov_config, compile_now=False,
                   low_memory_group=self.low_memory_group, config=self.variant.part_config(name), recorder=self.recorder, adapters=self.adapters, **kwargs)
