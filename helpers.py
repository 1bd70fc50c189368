"""Shared code of the PixArt-α on OpenVINO notebooks, in the order of the flow.

1. Settings and paths  — which model, where its variant folders live.
2. Model sources       — a hub id, a local diffusers folder, or a small PixArt built offline (``tiny``).
3. Conversion          — the T5 encoder, the transformer and the VAE decoder to OpenVINO IR, part by part.
4. OpenVINO pipeline   — one small class per part, put into diffusers' own ``PixArtAlphaPipeline``.
5. Compression         — NNCF weight compression, variant folder to variant folder.
6. Comparison          — pictures, latency, sizes and similarity of variants side by side.

Every notebook, test and script imports from here; nothing below knows whether the model is real or small.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import openvino as ov
import torch
from PIL import Image

# ---------------------------------------------------------------------------------------------------------------
# 1. Settings and paths
# ---------------------------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent
MODEL_ROOT = REPO_ROOT / "model"
ASSETS = REPO_ROOT / "assets"

DEFAULT_MODEL_ID = "PixArt-alpha/PixArt-LCM-XL-2-1024-MS"
STANDARD_MODEL_ID = "PixArt-alpha/PixArt-XL-2-1024-MS"
TINY_MODEL_IDS = ("tiny", "tiny-standard")

PARTS = ("text_encoder", "transformer", "vae_decoder")
IR_NAME = "openvino_model.xml"
MODEL_INDEX = "model_index.json"

EXAMPLE_PROMPTS = (
    "A small cactus with a happy face in the Sahara desert.",
    "an astronaut sitting in a diner, eating fries, cinematic, analog film",
    "Pirate ship trapped in a cosmic maelstrom nebula, rendered in cosmic beach whirlpool engine, volumetric "
    "lighting, spectacular, ambient lights, light pollution, cinematic atmosphere, art nouveau style, illustration "
    "art artwork by SenseiJaye, intricate detail.",
    "professional portrait photo of an anthropomorphic cat wearing fancy gentleman hat and jacket walking in autumn "
    "forest.",
)

# Parity tests and checks compile with this: the CPU default on AMX machines is bfloat16 (fast, ~1e-2 error).
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def model_id_from_env(default: str = DEFAULT_MODEL_ID) -> str:
    """The model the notebooks use: ``PIXART_MODEL_ID`` from the environment, else ``default``."""
    return os.environ.get("PIXART_MODEL_ID", default)


def model_name(model_id: str) -> str:
    """A folder name for a model id: the last part of a hub id or a local path (``tiny`` stays ``tiny``)."""
    return Path(str(model_id).rstrip("/")).name


def variant_dir(model_id: str, variant: str = "FP16", root: Path = MODEL_ROOT) -> Path:
    """Where the variant folder of a model lives: ``model/<model-name>/<VARIANT>``."""
    return Path(root) / model_name(model_id) / variant


def baseline_dir(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """Where notebook 1 leaves the PyTorch baseline image and its settings for notebook 2 to compare against."""
    return Path(root) / model_name(model_id) / "baseline"


@dataclass(frozen=True)
class Recipe:
    """How a checkpoint is meant to be sampled."""

    name: str
    num_inference_steps: int
    guidance_scale: float
    negative_prompt: str = ""


LCM_RECIPE = Recipe("LCM", num_inference_steps=4, guidance_scale=0.0)
STANDARD_RECIPE = Recipe("standard", num_inference_steps=20, guidance_scale=4.5, negative_prompt="blurry, low quality")


def recipe_for(scheduler: Any) -> Recipe:
    """The LCM recipe for an ``LCMScheduler``, the standard one (DPM-Solver, guided) for anything else."""
    return LCM_RECIPE if type(scheduler).__name__ == "LCMScheduler" else STANDARD_RECIPE


# ---------------------------------------------------------------------------------------------------------------
# 2. Model sources
# ---------------------------------------------------------------------------------------------------------------


class ModelSourceError(RuntimeError):
    """A model id that can't be resolved to a diffusers folder, with the ways forward in its message."""


# The scheduler configurations of the two real checkpoints, so that a small model samples like the one it stands for.
LCM_SCHEDULER_CONFIG = {
    "_class_name": "LCMScheduler",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "original_inference_steps": 50,
    "prediction_type": "epsilon",
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "thresholding": False,
    "timestep_scaling": 10.0,
    "timestep_spacing": "leading",
}
DPM_SCHEDULER_CONFIG = {
    "_class_name": "DPMSolverMultistepScheduler",
    "algorithm_type": "dpmsolver++",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "use_karras_sigmas": False,
}

# A PixArt small enough to build in seconds, with the real checkpoint's code paths: sample size 128 turns on the
# resolution and aspect-ratio conditions and the 1024 aspect-ratio bins; four VAE blocks give the scale factor 8.
TINY_TRANSFORMER_CONFIG = dict(
    sample_size=128,
    num_layers=2,
    patch_size=2,
    attention_head_dim=8,
    num_attention_heads=3,
    in_channels=4,
    out_channels=8,
    caption_channels=32,
    cross_attention_dim=24,
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
)
TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=128,
    scaling_factor=0.18215,
)
TINY_T5_CONFIG = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    feed_forward_proj="gated-gelu",
    is_encoder_decoder=False,
    use_cache=False,
)
TINY_VOCAB_SIZE = 400
TINY_SEED = 0


def resolve_model_source(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """Turn a model id into a local diffusers folder.

    ``tiny`` and ``tiny-standard`` are built offline (once, cached under ``model/``); a folder with a
    ``model_index.json`` is used as it is; anything else is a hub id, downloaded (or found in the hub cache).
    """
    if model_id in TINY_MODEL_IDS:
        return build_tiny_pipeline(Path(root) / model_id / "diffusers", standard=model_id == "tiny-standard")
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / MODEL_INDEX).is_file():
            raise ModelSourceError(f"{local} has no {MODEL_INDEX}: point PIXART_MODEL_ID at a diffusers pipeline folder.")
        return local
    return _download_from_hub(model_id)


def _download_from_hub(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # The diffusers weights only: the repos also hold the original .pth checkpoints and duplicate .bin files.
    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise ModelSourceError(
            f"Can't get '{model_id}': it is not in the local Hugging Face cache and the hub can't be reached or has "
            f"no such model ({type(error).__name__}). Use PIXART_MODEL_ID=tiny for a small PixArt built offline, or "
            f"PIXART_MODEL_ID=/path/to/a/diffusers/folder for a checkpoint you copied here."
        ) from error


def build_tiny_pipeline(folder: Path, standard: bool = False) -> Path:
    """Build a small PixArt-α diffusers folder from configs with seeded random weights (same bytes every time).

    ``standard=False`` gives the LCM scheduler (like the default checkpoint), ``True`` DPM-Solver (like
    PixArt-XL-2-1024-MS). Written to a temporary folder and renamed, so a half-built folder is never used.
    """
    folder = Path(folder)
    if (folder / MODEL_INDEX).is_file():
        return folder
    from diffusers import AutoencoderKL, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    with _atomic_folder(folder) as tmp:
        tokenizer = train_tiny_tokenizer(tmp / "_spm")
        torch.manual_seed(TINY_SEED)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **TINY_T5_CONFIG)).eval()
        torch.manual_seed(TINY_SEED + 1)
        transformer = PixArtTransformer2DModel(**TINY_TRANSFORMER_CONFIG).eval()
        torch.manual_seed(TINY_SEED + 2)
        vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
        scheduler = _scheduler_from_config(DPM_SCHEDULER_CONFIG if standard else LCM_SCHEDULER_CONFIG)
        pipe = PixArtAlphaPipeline(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        pipe.save_pretrained(tmp)
        shutil.rmtree(tmp / "_spm")
    return folder


def train_tiny_tokenizer(folder: Path):
    """Train a T5-style sentencepiece tokenizer on the text the project ships (pad 0, eos 1, unk 2, like T5)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        input=str(ASSETS / "tokenizer_corpus.txt"),
        model_prefix=str(folder / "spiece"),
        vocab_size=TINY_VOCAB_SIZE,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    # from_pretrained, not T5Tokenizer(vocab_file=...): in transformers 5 the latter maps every word to <unk>.
    return T5Tokenizer.from_pretrained(folder)


def _scheduler_from_config(config: dict):
    import diffusers

    config = dict(config)
    return getattr(diffusers, config.pop("_class_name")).from_config(config)


@contextlib.contextmanager
def _atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` only if the block finishes.

    A process killed half-way leaves a ``.partial`` folder that nothing loads and the next run removes.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# 3. Conversion
# ---------------------------------------------------------------------------------------------------------------

# Applied by OpenVINO's GPU plugin to keep T5's activations inside the FP16 range; the exporters of SD3 and Flux
# set the same value. The CPU runs bf16 or f32 here, whose exponent range needs no scaling.
T5_ACTIVATIONS_SCALE_FACTOR = "8.0"


class _TextEncoderForExport(torch.nn.Module):
    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids, attention_mask=attention_mask)[0]


class _TransformerForExport(torch.nn.Module):
    def __init__(self, transformer: torch.nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask, timestep, resolution=None, aspect_ratio=None):
        added_cond_kwargs = {"resolution": resolution, "aspect_ratio": aspect_ratio}
        return self.transformer(
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )[0]


class _VaeDecoderForExport(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


def text_encoder_example(config: Any, batch: int = 1, length: int = 120) -> dict[str, torch.Tensor]:
    """Example inputs of the T5 encoder: token ids and their attention mask."""
    return {
        "input_ids": torch.ones(batch, length, dtype=torch.long),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }


def transformer_example(config: Any, batch: int = 2, length: int = 120) -> dict[str, torch.Tensor]:
    """Example inputs of the transformer, at a latent size that differs from ``config.sample_size`` on purpose.

    ``PatchEmbed`` returns its stored position embedding when the latent has the native size and recomputes it
    from the input's shape otherwise; tracing at another size records the recomputation, so the IR accepts every
    latent size (with the stored table it would only run at the traced size).
    """
    height, width = config.sample_size // 2, config.sample_size // 2 + 2 * config.patch_size
    example = {
        "hidden_states": torch.randn(batch, config.in_channels, height, width),
        "encoder_hidden_states": torch.randn(batch, length, config.caption_channels),
        "encoder_attention_mask": torch.ones(batch, length, dtype=torch.long),
        "timestep": torch.full((batch,), 999.0),
    }
    if config.sample_size == 128:  # diffusers' rule for the resolution and aspect-ratio micro-conditions
        example["resolution"] = torch.tensor([[height * 8.0, width * 8.0]]).repeat(batch, 1)
        example["aspect_ratio"] = torch.tensor([[height / width]]).repeat(batch, 1)
    return example


def vae_decoder_example(config: Any, batch: int = 1) -> dict[str, torch.Tensor]:
    """Example input of the VAE decoder: one latent of 64² (a 512² image)."""
    return {"latent_sample": torch.randn(batch, config.latent_channels, 64, 64)}


@dataclass(frozen=True)
class PartSpec:
    """How one pipeline part is loaded from a diffusers folder and exported."""

    subfolder: str
    loader: str  # "<module>.<class>" of the torch model
    wrapper: type
    example: Callable[[Any], dict[str, torch.Tensor]]


PART_SPECS = {
    "text_encoder": PartSpec("text_encoder", "transformers.T5EncoderModel", _TextEncoderForExport, text_encoder_example),
    "transformer": PartSpec("transformer", "diffusers.PixArtTransformer2DModel", _TransformerForExport, transformer_example),
    "vae_decoder": PartSpec("vae", "diffusers.AutoencoderKL", _VaeDecoderForExport, vae_decoder_example),
}


def load_torch_part(source: Path, part: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load one part of a diffusers folder (and nothing else) as a torch module in eval mode."""
    import importlib

    spec = PART_SPECS[part]
    module_name, class_name = spec.loader.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_pretrained(source, subfolder=spec.subfolder, dtype=dtype).eval()


def is_part_converted(folder: Path, part: str) -> bool:
    """True when ``folder/part`` holds a finished IR (written by :func:`convert_part`, which renames at the end)."""
    part_dir = Path(folder) / part
    return (part_dir / IR_NAME).is_file() and (part_dir / IR_NAME).with_suffix(".bin").is_file()


def convert_part(model: torch.nn.Module, part: str, out_dir: Path) -> Path:
    """Convert one torch part to an FP16-compressed IR with its config, in a temporary folder renamed at the end."""
    spec = PART_SPECS[part]
    example = spec.example(model.config)
    with torch.no_grad():
        ov_model = ov.convert_model(spec.wrapper(model), example_input=example)
    # Tracing can lose or mangle input names (a scalar-looking timestep came out unnamed): set them explicitly.
    for ov_input, name in zip(ov_model.inputs, example):
        ov_input.get_tensor().set_names({name})
    ov_model.outputs[0].get_tensor().set_names({"sample" if part != "text_encoder" else "last_hidden_state"})
    if part == "text_encoder":
        ov_model.set_rt_info(T5_ACTIVATIONS_SCALE_FACTOR, ["runtime_options", "ACTIVATIONS_SCALE_FACTOR"])
    tables = sinusoid_tables(ov_model)
    with _atomic_folder(Path(out_dir) / part) as tmp:
        ov.save_model(ov_model, tmp / IR_NAME)
        if tables:
            restore_sinusoid_tables(tmp / IR_NAME, tables)
        _save_config(model.config, tmp / "config.json")
    del ov_model
    return Path(out_dir) / part


def _save_config(config: Any, path: Path) -> None:
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    path.write_text(json.dumps(data, indent=2, default=str))


def sinusoid_tables(model: ov.Model, depth: int = 8) -> dict[str, np.ndarray]:
    """The float constants within ``depth`` ops upstream of a Sin or Cos, by name: the frequency tables."""
    tables = {}
    frontier = [op for op in model.get_ops() if op.get_type_name() in ("Sin", "Cos")]
    for _ in range(depth):
        frontier = [value.get_node() for op in frontier for value in op.input_values()]
        for op in frontier:
            if op.get_type_name() == "Constant" and op.get_element_type().is_real():
                tables[op.get_friendly_name()] = op.get_data().copy()
    return tables


def restore_sinusoid_tables(xml_path: Path, tables: dict[str, np.ndarray]) -> int:
    """Put back, in full precision, the sinusoid frequency tables that FP16 compression rounded in a saved IR.

    ``save_model`` stores every float constant as FP16, and a rounded table shifts a sinusoid's argument by up to
    2^-11 of its value: ``t * freqs`` for the timestep (t up to 999) and the resolution condition (up to 2048)
    embeddings, ``pos * omega`` for the patch positions. The error grows with t and the image size. The tables
    have a few hundred values: keeping them costs nothing. (Marking them with OpenVINO's "precise" runtime
    attribute before saving did not survive reliably.) Returns how many tables were restored.
    """
    model = ov.Core().read_model(xml_path)
    restored = 0
    for op in model.get_ops():
        original = tables.get(op.get_friendly_name().removesuffix("_compressed"))
        if original is None or op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f16:
            continue
        for target in op.output(0).get_target_inputs():
            convert = target.get_node()  # the decompression Convert that save_model put after the FP16 constant
            exact = ov.op.Constant(original.astype(convert.get_output_element_type(0).to_dtype()))
            for consumer in list(convert.output(0).get_target_inputs()):
                consumer.replace_source_output(exact.output(0))
        restored += 1
    tmp = xml_path.with_name("restored.xml")
    ov.save_model(model, tmp, compress_to_fp16=False)
    del model
    tmp.replace(xml_path)
    tmp.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
    return restored


def convert_pipeline(
    source: Path, out_dir: Path, parts: tuple[str, ...] = PARTS, progress: Callable[[str], None] = print
) -> dict[str, float]:
    """Convert the parts of a diffusers folder into a variant folder, one torch module in memory at a time.

    Parts already converted are skipped. The tokenizer, the scheduler config and ``model_index.json`` (written
    last: it marks the folder finished) go beside the IRs so the folder is self-contained. Returns seconds per part.
    """
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for part in parts:
        if is_part_converted(out_dir, part):
            progress(f"{part}: already converted, skipped")
            continue
        start = time.perf_counter()
        model = load_torch_part(source, part)
        convert_part(model, part, out_dir)
        del model
        gc.collect()  # free this part's weights before the next part is loaded
        seconds[part] = time.perf_counter() - start
        progress(f"{part}: converted in {seconds[part]:.1f} s")
    _finish_variant(source, out_dir, {"variant": "FP16", "source": str(source)})
    return seconds


def _finish_variant(source: Path, out_dir: Path, index: dict) -> None:
    """Copy the tokenizer and scheduler from ``source``; once every part is in place, write ``model_index.json``."""
    for sub in ("tokenizer", "scheduler"):
        if not (out_dir / sub).is_dir():
            with _atomic_folder(out_dir / sub) as tmp:
                shutil.copytree(source / sub, tmp, dirs_exist_ok=True)
    if all(is_part_converted(out_dir, part) for part in PARTS):
        tmp = out_dir / f".{MODEL_INDEX}.partial"
        tmp.write_text(json.dumps({"_class_name": "OVPixArtAlphaPipeline", "parts": list(PARTS), **index}, indent=2))
        tmp.replace(out_dir / MODEL_INDEX)


# ---------------------------------------------------------------------------------------------------------------
# 4. OpenVINO parts and pipeline
# ---------------------------------------------------------------------------------------------------------------


class VariantNotReadyError(FileNotFoundError):
    """A variant folder that is missing or unfinished; the message says which notebook makes it."""


def available_devices(core: ov.Core | None = None) -> list[str]:
    """The devices OpenVINO sees here, plus ``AUTO`` (its own choice among them)."""
    return [*(core or ov.Core()).available_devices, "AUTO"]


def check_device(device: str, core: ov.Core | None = None) -> str:
    """Return ``device`` if OpenVINO can compile for it, else raise a ``ValueError`` listing the devices."""
    devices = available_devices(core)
    if device not in devices and device.split(":")[0] not in ("AUTO", "MULTI", "HETERO"):
        raise ValueError(f"Unknown device '{device}': choose one of {', '.join(devices)}.")
    return device


def check_variant(folder: Path, make_it: str = "run notebook 1 (01-convert) first") -> Path:
    """Raise :class:`VariantNotReadyError` unless ``folder`` is a finished variant folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VariantNotReadyError(f"No converted model at {folder}: {make_it}.")
    missing = [part for part in PARTS if not is_part_converted(folder, part)]
    if missing or not (folder / MODEL_INDEX).is_file():
        what = f"parts missing: {', '.join(missing)}" if missing else f"no {MODEL_INDEX}"
        raise VariantNotReadyError(f"The model at {folder} is incomplete ({what}): {make_it}.")
    return folder


class OVModelPart:
    """One compiled IR that quacks like the torch module diffusers expects: ``config``, ``dtype``, ``device``."""

    def __init__(self, folder: Path, core: ov.Core, device: str = "AUTO", ov_config: dict | None = None):
        from diffusers.configuration_utils import FrozenDict

        self.folder = Path(folder)
        self.config = FrozenDict(json.loads((self.folder / "config.json").read_text()))
        self.model = core.read_model(self.folder / IR_NAME)
        self.compiled = core.compile_model(self.model, device, ov_config or {})
        self.request = self.compiled.create_infer_request()
        self.input_names = {next(iter(inp.get_names())) for inp in self.model.inputs}
        self.seconds: deque[float] = deque(maxlen=1000)  # duration of each recent call, for latency breakdowns

    dtype = torch.float32
    device = torch.device("cpu")

    def infer(self, **inputs: torch.Tensor | None) -> torch.Tensor:
        """Run the IR on the named inputs it has (``None`` values and unknown names are left out)."""
        feed = {name: _to_numpy(value) for name, value in inputs.items() if value is not None and name in self.input_names}
        start = time.perf_counter()
        output = self.request.infer(feed)[0].copy()
        self.seconds.append(time.perf_counter() - start)
        return torch.from_numpy(output)


def _to_numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


class OVTextEncoder(OVModelPart):
    """The T5 encoder: ``text_encoder(input_ids, attention_mask=mask)[0]`` → hidden states."""

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return (self.infer(input_ids=input_ids, attention_mask=attention_mask),)


class OVTransformer(OVModelPart):
    """The PixArt transformer, called the way ``PixArtAlphaPipeline`` calls ``PixArtTransformer2DModel``."""

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
        conditions = added_cond_kwargs or {}
        sample = self.infer(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep.float(),
            resolution=conditions.get("resolution"),
            aspect_ratio=conditions.get("aspect_ratio"),
        )
        return (sample,)


class OVVaeDecoder(OVModelPart):
    """The VAE decoder, behind the ``vae.decode(latents, return_dict=False)[0]`` call of the pipeline."""

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        return (self.infer(latent_sample=latents),)


def _pixart_pipeline_class():
    from diffusers import PixArtAlphaPipeline

    return PixArtAlphaPipeline


class OVPixArtAlphaPipeline(_pixart_pipeline_class()):
    """diffusers' ``PixArtAlphaPipeline`` with OpenVINO parts: the same ``__call__``, its checks, bins and loop.

    Build it with :meth:`from_variant`; no torch weights are loaded. The call adds clear errors for the inputs
    the OpenVINO parts would otherwise fail on obscurely.
    """

    @classmethod
    def from_variant(cls, folder: Path, device: str = "AUTO", ov_config: dict | None = None) -> "OVPixArtAlphaPipeline":
        """Compile the three IRs of a variant folder for ``device`` and return the pipeline."""
        from transformers import AutoTokenizer

        folder = check_variant(folder)
        core = ov.Core()
        device = check_device(device, core)
        parts = {
            "text_encoder": OVTextEncoder(folder / "text_encoder", core, device, ov_config),
            "transformer": OVTransformer(folder / "transformer", core, device, ov_config),
            "vae": OVVaeDecoder(folder / "vae_decoder", core, device, ov_config),
        }
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        pipe = cls(tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"), scheduler=_scheduler_from_config(scheduler_config), **parts)
        pipe.variant_folder = folder
        return pipe

    @property
    def recipe(self) -> Recipe:
        """The sampling recipe of this checkpoint (LCM: 4 steps, no guidance; standard: 20 steps, 4.5)."""
        return recipe_for(self.scheduler)

    def __call__(self, prompt: str | list[str] | None = None, *args: Any, **kwargs: Any):
        """diffusers' call; steps and guidance default to the checkpoint's recipe instead of 20 and 4.5."""
        kwargs.setdefault("num_inference_steps", self.recipe.num_inference_steps)
        kwargs.setdefault("guidance_scale", self.recipe.guidance_scale)
        check_generation_inputs(
            prompt,
            kwargs["num_inference_steps"],
            kwargs.get("height"),
            kwargs.get("width"),
            multiple=self.vae_scale_factor * self.transformer.config.patch_size,
            binning=kwargs.get("use_resolution_binning", True),
        )
        return super().__call__(prompt, *args, **kwargs)


def check_generation_inputs(
    prompt: str | list[str] | None,
    num_inference_steps: int,
    height: int | None,
    width: int | None,
    multiple: int = 16,
    binning: bool = True,
) -> None:
    """Raise a ``ValueError`` naming the problem and the fix for inputs the pipeline can't run."""
    if isinstance(prompt, list) and not prompt:
        raise ValueError("The prompt list is empty: pass at least one prompt.")
    prompts = [prompt] if isinstance(prompt, str) else prompt or []
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("A prompt is empty: describe the picture you want, e.g. 'a red circle on a blue background'.")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps!r} is not allowed: use at least 1 step (LCM: 4).")
    # With resolution binning the pipeline maps any size to its nearest bin; without, the latent must tile into patches.
    step = 8 if binning else multiple
    for name, size in (("height", height), ("width", width)):
        if size is not None and (not isinstance(size, int) or size < step or size % step):
            hint = f"{max(step, (size or 0) // step * step)}" if isinstance(size, int) else "a whole number"
            raise ValueError(f"{name}={size!r} is not allowed: use a positive multiple of {step} (e.g. {hint}).")


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


# ---------------------------------------------------------------------------------------------------------------
# 5. Compression
# ---------------------------------------------------------------------------------------------------------------

# nncf.compress_weights arguments per part. INT8: asymmetric per-channel weights, about half of FP16. INT4 (T5 only,
# about 80 % of the real pipeline's weights): symmetric groups of 128; layers too small for 128 fall back to the
# largest power-of-two group that fits (the small model's 32-wide layers), instead of failing.
INT8_WEIGHTS = {"mode": "int8_asym"}
INT4_WEIGHTS = {"mode": "int4_sym", "group_size": 128, "group_size_fallback": "adjust"}
COMPRESSION_RECIPES: dict[str, dict[str, dict]] = {
    "INT8": {"text_encoder": INT8_WEIGHTS, "transformer": INT8_WEIGHTS, "vae_decoder": INT8_WEIGHTS},
    "INT4-T5": {"text_encoder": INT4_WEIGHTS, "transformer": INT8_WEIGHTS, "vae_decoder": INT8_WEIGHTS},
}


def compress_part(source: Path, out_dir: Path, part: str, settings: dict) -> Path:
    """Compress the weights of one part's IR with NNCF into ``out_dir/part`` (temporary folder, renamed at the end)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    settings = dict(settings)
    kwargs: dict[str, Any] = {"mode": nncf.CompressWeightsMode(settings.pop("mode"))}
    if "group_size_fallback" in settings:
        fallback = GroupSizeFallbackMode(settings.pop("group_size_fallback"))
        kwargs["advanced_parameters"] = AdvancedCompressionParameters(group_size_fallback_mode=fallback)
    model = nncf.compress_weights(ov.Core().read_model(Path(source) / part / IR_NAME), **kwargs, **settings)
    with _atomic_folder(Path(out_dir) / part) as tmp:
        # compress_to_fp16=False: the FP16 IR's constants are already FP16, and its FP32 sinusoid tables stay FP32.
        ov.save_model(model, tmp / IR_NAME, compress_to_fp16=False)
        shutil.copy(Path(source) / part / "config.json", tmp / "config.json")
    del model
    return Path(out_dir) / part


def compress_variant(
    source: Path, out_dir: Path, recipe: dict[str, dict], progress: Callable[[str], None] = print
) -> dict[str, float]:
    """Make a compressed variant folder from a finished FP16 one, part by part (one part's weights in memory).

    Parts already compressed are skipped; ``model_index.json`` is written last. Returns seconds per part.
    """
    source = check_variant(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for part in PARTS:
        if is_part_converted(out_dir, part):
            progress(f"{part}: already compressed, skipped")
            continue
        start = time.perf_counter()
        compress_part(source, out_dir, part, recipe[part])
        gc.collect()
        seconds[part] = time.perf_counter() - start
        progress(f"{part}: {recipe[part]['mode']} in {seconds[part]:.1f} s")
    _finish_variant(source, out_dir, {"variant": out_dir.name, "source": str(source), "compression": recipe})
    return seconds


def weight_types(xml_path: Path) -> dict[str, int]:
    """Number of weight values (elements of constants) per element type in an IR, e.g. ``{"u8": …, "f16": …}``."""
    counts: dict[str, int] = {}
    for op in ov.Core().read_model(xml_path).get_ops():
        if op.get_type_name() == "Constant":
            name = op.get_element_type().get_type_name()
            counts[name] = counts.get(name, 0) + int(np.prod(list(op.get_output_shape(0))))
    return counts


def weight_type_table(folder: Path):
    """Percent of each part's weight values stored as int4, int8, FP16 and FP32 (a pandas DataFrame)."""
    import pandas as pd

    groups = {"int4": ("i4", "u4"), "int8": ("i8", "u8"), "FP16": ("f16",), "FP32": ("f32", "f64")}
    rows = {}
    for part in PARTS:
        counts = weight_types(Path(folder) / part / IR_NAME)
        values = {group: sum(counts.get(t, 0) for t in types) for group, types in groups.items()}
        rows[part] = {group: 100 * n / sum(values.values()) for group, n in values.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(1)


# ---------------------------------------------------------------------------------------------------------------
# 6. Comparison
# ---------------------------------------------------------------------------------------------------------------


def save_baseline(image: Image.Image, settings: dict, folder: Path) -> Path:
    """Keep the PyTorch baseline image and the settings that made it, for later notebooks to compare against."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "image.png")
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    return folder


def load_baseline(folder: Path) -> tuple[Image.Image, dict]:
    """The baseline image and its settings, or a clear error if notebook 1 has not made them."""
    folder = Path(folder)
    if not (folder / "settings.json").is_file():
        raise VariantNotReadyError(f"No PyTorch baseline at {folder}: run notebook 1 (01-convert) first.")
    return Image.open(folder / "image.png").convert("RGB"), json.loads((folder / "settings.json").read_text())


def psnr(reference: Image.Image | np.ndarray, image: Image.Image | np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (pixel values in 0–255 or 0–1)."""
    a, b = _as_unit_array(reference), _as_unit_array(image)
    if a.shape != b.shape:
        raise ValueError(f"Images differ in shape: {a.shape} vs {b.shape}.")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _as_unit_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    array = np.asarray(image, dtype=np.float64)
    return array / 255.0 if array.max() > 1.0 else array


def folder_size_mb(folder: Path) -> float:
    """Size on disk of everything under ``folder``, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6


def part_sizes_mb(folder: Path) -> dict[str, float]:
    """Weights size (the IR's ``.bin``) of each part of a variant folder, in MB."""
    return {part: (Path(folder) / part / IR_NAME).with_suffix(".bin").stat().st_size / 1e6 for part in PARTS}


def size_table(before: Path, after: Path):
    """MB of weights per part and in total, before and after compression, and their ratio (a pandas DataFrame)."""
    import pandas as pd

    rows = pd.DataFrame({"MB before": part_sizes_mb(before), "MB after": part_sizes_mb(after)})
    rows.loc["total"] = rows.sum()
    rows["ratio"] = rows["MB before"] / rows["MB after"]
    return rows.round(3)


def ssim(reference: Image.Image | np.ndarray, image: Image.Image | np.ndarray) -> float:
    """Structural similarity (1 = identical) of two RGB images, computed per channel by scikit-image."""
    from skimage.metrics import structural_similarity

    a, b = _as_unit_array(reference), _as_unit_array(image)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def cosine_similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Cosine of the angle between two tensors taken as flat vectors (1 = same direction)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def latency_summary(seconds: Iterable[float]) -> dict[str, float]:
    """Median and spread (min, max) of repeated timings, in seconds."""
    samples = np.asarray(list(seconds), dtype=np.float64)
    if samples.size == 0:
        raise ValueError("No timings to summarize: run the pipeline at least once after the warm-up.")
    return {"median": float(np.median(samples)), "min": float(samples.min()), "max": float(samples.max()), "runs": int(samples.size)}


@dataclass
class VariantRun:
    """What one variant produced on the comparison prompts, and how long it took."""

    variant: str
    images: list[Image.Image]
    latents: list[np.ndarray]
    text_embeddings: list[np.ndarray]
    pipeline_seconds: list[float]
    part_seconds: dict[str, list[float]]
    sizes_mb: dict[str, float]


def run_variant(
    folder: Path,
    prompts: Iterable[str],
    seeds: Iterable[int],
    device: str = "AUTO",
    ov_config: dict | None = None,
    runs: int = 3,
    warmup: int = 1,
    **kwargs: Any,
) -> VariantRun:
    """Compile one variant, make a picture per prompt and seed, then time ``runs`` generations after ``warmup``.

    One variant is compiled at a time and freed at the end, so comparing the real pipeline's variants never holds
    two in memory. The final latents come from the pipeline's step callback, the text embeddings from its
    ``encode_prompt``.
    """
    pipe = OVPixArtAlphaPipeline.from_variant(folder, device, ov_config)
    pipe.set_progress_bar_config(disable=True)
    images, latents, embeddings = [], [], []
    prompts, seeds = list(prompts), list(seeds)
    for prompt, seed in zip(prompts, seeds):
        last = {}
        image, _ = generate(pipe, prompt, seed, callback=lambda step, t, x: last.update(latents=x), **kwargs)
        images.append(image)
        latents.append(last["latents"].numpy())
        embeddings.append(pipe.encode_prompt(prompt, do_classifier_free_guidance=False)[0].numpy())
    for _ in range(warmup):
        generate(pipe, prompts[0], seeds[0], **kwargs)
    parts = {"text encoder": pipe.text_encoder, "transformer step": pipe.transformer, "VAE decode": pipe.vae}
    for part in parts.values():
        part.seconds.clear()
    pipeline_seconds = [generate(pipe, prompts[0], seeds[0], **kwargs)[1] for _ in range(runs)]
    run = VariantRun(
        variant=Path(folder).name,
        images=images,
        latents=latents,
        text_embeddings=embeddings,
        pipeline_seconds=pipeline_seconds,
        part_seconds={name: list(part.seconds) for name, part in parts.items()},
        sizes_mb=part_sizes_mb(folder),
    )
    del pipe
    gc.collect()
    return run


def comparison_table(runs: list[VariantRun], reference: str = "FP16"):
    """One row per variant: size, latency (median and spread), and similarity to the reference variant."""
    import pandas as pd

    base = next(run for run in runs if run.variant == reference)
    rows = {}
    for run in runs:
        total = latency_summary(run.pipeline_seconds)
        rows[run.variant] = {
            "weights MB": sum(run.sizes_mb.values()),
            "size ratio": sum(base.sizes_mb.values()) / sum(run.sizes_mb.values()),
            "pipeline s (median)": total["median"],
            "pipeline s (min–max)": f"{total['min']:.2f}–{total['max']:.2f}",
            **{f"{name} ms": 1000 * latency_summary(seconds)["median"] for name, seconds in run.part_seconds.items()},
            "PSNR dB": float(np.mean([psnr(a, b) for a, b in zip(base.images, run.images)])),
            "SSIM": float(np.mean([ssim(a, b) for a, b in zip(base.images, run.images)])),
            "text cosine": float(np.mean([cosine_similarity(a, b) for a, b in zip(base.text_embeddings, run.text_embeddings)])),
            "latent cosine": float(np.mean([cosine_similarity(a, b) for a, b in zip(base.latents, run.latents)])),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    return table.round({"SSIM": 4, "text cosine": 6, "latent cosine": 6})


def show_grid(runs: list[VariantRun], prompts: Iterable[str], size: float = 3.0):
    """Pictures in a grid: one row per prompt, one column per variant."""
    import matplotlib.pyplot as plt

    prompts = list(prompts)
    fig, axes = plt.subplots(len(prompts), len(runs), figsize=(size * len(runs), size * len(prompts)), squeeze=False)
    for row, prompt in enumerate(prompts):
        for col, run in enumerate(runs):
            ax = axes[row][col]
            ax.imshow(run.images[row])
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(run.variant)
            if col == 0:
                ax.set_ylabel(prompt[:40] + ("…" if len(prompt) > 40 else ""), fontsize=8)
    fig.tight_layout()
    return fig


def plot_comparison(table, columns: Iterable[str] = ("weights MB", "pipeline s (median)", "PSNR dB")):
    """One bar chart per column of the comparison table, variants side by side."""
    import matplotlib.pyplot as plt

    columns = list(columns)
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        values = table[column].replace(np.inf, np.nan)
        ax.bar(table.index, values, color=["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(values)])
        ax.set_title(column)
    fig.tight_layout()
    return fig


def show_side_by_side(images: Iterable[Image.Image], titles: Iterable[str], size: float = 4.0):
    """A row of pictures with their titles (matplotlib figure)."""
    import matplotlib.pyplot as plt

    images, titles = list(images), list(titles)
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig
