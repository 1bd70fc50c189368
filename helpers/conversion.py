"""Conversion: the T5 encoder, the transformer, the VAE decoder and encoder, and the tiny VAE's decoder where the model
has one, to OpenVINO IR, one part at a time."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import openvino as ov
import torch
from tqdm.auto import tqdm

from .checkpoints import SDXL_VAE_SCALING_FACTOR, stored_dtypes, upcast_checkpoint
from .part_writing import make_parts, prepare_folder, save_part
from .previews import LATENT_RGB_KEY, fit_latent_rgb
from .sources import resolve_model_source, tiny_vae_source
from .step_cache import CUT_POINTS, captured_cut_points
from .token_downsampling import TokenDownsampling, enable_token_downsampling
from .variants import (
    DOWNSAMPLED_PART,
    MADE_PARTS,
    TINY_VAE_DECODER,
    Variant,
    as_variant,
    finish_variant,
    is_variant,
    link_part,
    present_parts,
    variant_dir,
)

# Applied by OpenVINO's GPU plugin to keep T5's activations inside the FP16 range; the exporters of SD3 and Flux
# set the same value. The CPU runs bf16 or f32 here, whose exponent range needs no scaling.
T5_ACTIVATIONS_SCALE_FACTOR = "8.0"
# optimum-intel gives SDXL's VAE this factor when diffusers upcasts it (``force_upcast``): its activations overflow
# FP16. PixArt-Σ decodes with that VAE.
SDXL_VAE_ACTIVATIONS_SCALE_FACTOR = "128.0"


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


class _TransformerWithCutPoints(_TransformerForExport):
    """What the transformer IR computes: the sample, then the step cache's cut points (``helpers.step_cache``)."""

    def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask, timestep, resolution=None, aspect_ratio=None):
        # the arguments spelled out: tracing matches the example inputs to them by name
        with captured_cut_points(self.transformer) as cut_points:
            sample = super().forward(hidden_states, encoder_hidden_states, encoder_attention_mask, timestep, resolution, aspect_ratio)
        return (sample, *cut_points)


class _VaeDecoderForExport(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class _TinyVaeDecoderForExport(_VaeDecoderForExport):
    """TAESD's decoder: the latents as the denoising loop holds them to pictures in [-1, 1]."""


class _VaeEncoderForExport(torch.nn.Module):
    """The latent distribution's parameters (means, then log-variances), which diffusers' ``DiagonalGaussianDistribution``
    reads: the IR computes no sample, so the pipeline picks the mean or a sample as diffusers' ``retrieve_latents`` does."""

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample).latent_dist.parameters


def text_encoder_example(config: Any, batch: int = 1, length: int = 120) -> dict[str, torch.Tensor]:
    """Example inputs of the T5 encoder: token ids and their attention mask."""
    return {
        "input_ids": torch.ones(batch, length, dtype=torch.long),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }


def transformer_example(config: Any, batch: int = 2, length: int = 120, side: int | None = None) -> dict[str, torch.Tensor]:
    """Example inputs of the transformer, at a latent size that differs from ``config.sample_size`` on purpose.

    ``PatchEmbed`` returns its stored position embedding when the latent has the native size and recomputes it
    from the input's shape otherwise; tracing at another size records the recomputation, so the IR accepts every
    latent size (with the stored table it would only run at the traced size). ``side`` asks for a square latent of
    that side instead (the benchmark times the picture sizes people make).
    """
    if side is None:
        height, width = config.sample_size // 4, config.sample_size // 4 + 2 * config.patch_size  # small: fast to trace
    else:
        height = width = side
    example = {
        "hidden_states": torch.randn(batch, config.in_channels, height, width),
        "encoder_hidden_states": torch.randn(batch, length, config.caption_channels),
        "encoder_attention_mask": torch.ones(batch, length, dtype=torch.long),
        "timestep": torch.full((batch,), 999.0),
    }
    if _uses_micro_conditions(config):
        example["resolution"] = torch.tensor([[height * 8.0, width * 8.0]]).repeat(batch, 1)
        example["aspect_ratio"] = torch.tensor([[height / width]]).repeat(batch, 1)
    return example


def _uses_micro_conditions(config: Any) -> bool:
    """Whether the transformer takes resolution and aspect-ratio conditions: as its config says (PixArt-Σ: no), else
    diffusers' rule (sample size 128, PixArt-α-1024)."""
    stated = getattr(config, "use_additional_conditions", None)
    return config.sample_size == 128 if stated is None else bool(stated)


def vae_decoder_example(config: Any, batch: int = 1, side: int = 64) -> dict[str, torch.Tensor]:
    """Example input of the VAE decoder: latents of ``side``² (64²: a 512² image)."""
    return {"latent_sample": torch.randn(batch, config.latent_channels, side, side)}


def vae_encoder_example(config: Any, batch: int = 1, side: int = 128) -> dict[str, torch.Tensor]:
    """Example input of the VAE encoder: pictures of ``side``² in [-1, 1]."""
    return {"sample": torch.rand(batch, config.in_channels, side, side) * 2 - 1}


@dataclass(frozen=True)
class PartSpec:
    """How one pipeline part is loaded from a diffusers folder and exported."""

    subfolder: str
    loader: str  # "<module>.<class>" of the torch model
    wrapper: type  # called with the IR's named inputs, as the pipeline calls the part: its first output
    example: Callable[[Any], dict[str, torch.Tensor]]
    outputs: tuple[str, ...] = ("sample",)  # the IR's outputs, by name
    exporter: type | None = None  # what is converted, when the IR has more outputs than the call (else ``wrapper``)


PART_SPECS = {
    "text_encoder": PartSpec("text_encoder", "transformers.T5EncoderModel", _TextEncoderForExport, text_encoder_example, ("last_hidden_state",)),
    "transformer": PartSpec(
        "transformer", "diffusers.PixArtTransformer2DModel", _TransformerForExport, transformer_example, ("sample", *CUT_POINTS),
        _TransformerWithCutPoints,
    ),
    "vae_decoder": PartSpec("vae", "diffusers.AutoencoderKL", _VaeDecoderForExport, vae_decoder_example),
    "vae_encoder": PartSpec("vae", "diffusers.AutoencoderKL", _VaeEncoderForExport, vae_encoder_example, ("latent_parameters",)),
    # from the tiny VAE's own folder (``tiny_vae_source``), not a subfolder of the pipeline's
    TINY_VAE_DECODER: PartSpec("", "diffusers.AutoencoderTiny", _TinyVaeDecoderForExport, vae_decoder_example),
}


def load_torch_part(source: Path, part: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load one part of a diffusers folder (and nothing else) as a torch module in eval mode."""
    import importlib

    spec = PART_SPECS[part]
    module_name, class_name = spec.loader.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_pretrained(source, subfolder=spec.subfolder or None, dtype=dtype).eval()


@contextlib.contextmanager
def float32_source(source: Path, part: str, scratch: Path) -> Iterator[Path]:
    """A diffusers folder from which ``part`` loads in FP32 without copying its weights into memory.

    FP32 checkpoints are used as they are (``from_pretrained`` memory-maps them). Half-precision ones are first
    upcast to a temporary FP32 copy on disk, in ``scratch``, and removed afterwards.
    """
    subfolder = PART_SPECS[part].subfolder
    if stored_dtypes(Path(source) / subfolder) <= {"F32", "I64", "I32"}:
        yield Path(source)
        return
    with tempfile.TemporaryDirectory(prefix=f".{part}-fp32-", dir=scratch) as tmp:
        upcast_checkpoint(Path(source) / subfolder, Path(tmp) / subfolder)
        yield Path(tmp)


def convert_part(model: torch.nn.Module, part: str, out_dir: Path, folder_name: str | None = None, extra_config: dict | None = None) -> Path:
    """Convert one torch part to an FP16-compressed IR with its config (and ``extra_config``), in a temporary folder
    renamed at the end, into ``out_dir/<folder_name>`` (default: the part's name)."""
    spec = PART_SPECS[part]
    example = spec.example(model.config)
    with torch.no_grad():
        ov_model = ov.convert_model((spec.exporter or spec.wrapper)(model), example_input=example)
    # Tracing can lose or mangle input names (a scalar-looking timestep came out unnamed): set them explicitly.
    for ov_input, name in zip(ov_model.inputs, example):
        ov_input.get_tensor().set_names({name})
    for ov_output, name in zip(ov_model.outputs, spec.outputs, strict=True):
        ov_output.get_tensor().set_names({name})
    scale = activations_scale_factor(part, model.config)
    if scale:
        ov_model.set_rt_info(scale, ["runtime_options", "ACTIVATIONS_SCALE_FACTOR"])
    tables = sinusoid_tables(ov_model)
    config = (model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)) | (extra_config or {})
    finish = (lambda xml: restore_sinusoid_tables(xml, tables)) if tables else None
    return save_part(out_dir, folder_name or part, ov_model, config, finish=finish)


def activations_scale_factor(part: str, config: Any) -> str | None:
    """The FP16 activation scaling an IR carries for Intel GPUs: T5's always, the VAE's (decoder and encoder) when it is
    SDXL's."""
    if part == "text_encoder":
        return T5_ACTIVATIONS_SCALE_FACTOR
    if part in ("vae_decoder", "vae_encoder") and config.get("scaling_factor") == SDXL_VAE_SCALING_FACTOR and config.get("force_upcast", True):
        return SDXL_VAE_ACTIVATIONS_SCALE_FACTOR
    return None


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
    source: Path, out_dir: Path, parts: tuple[str, ...] = MADE_PARTS, report: Callable[[str], None] = tqdm.write
) -> dict[str, float]:
    """Convert the parts of a diffusers folder into a variant folder, one torch module in memory at a time.

    Parts already converted are skipped. The tokenizer, the scheduler config and ``model_index.json`` (written
    last: it marks the folder finished) go beside the IRs so the folder is self-contained. ``report`` gets a line per
    part. Returns seconds per part.
    """
    source, out_dir = Path(source), Path(out_dir)
    sources = part_sources(source, parts, report)
    seconds = make_parts(out_dir, sources, lambda part: _convert_from(sources[part], part, out_dir), "converted", report)
    finish_variant(source, out_dir, {"variant": "FP16", "source": str(source)})
    return seconds


def part_sources(source: Path, parts: tuple[str, ...], report: Callable[[str], None] = tqdm.write) -> dict[str, Path]:
    """The folder each part converts from: the diffusers folder, and for the tiny decoder the tiny VAE's own
    (:func:`~helpers.sources.tiny_vae_source`); a model without one converts without it, said in a line."""
    sources = {part: source for part in parts}
    if TINY_VAE_DECODER in sources:
        tiny = tiny_vae_source(source)
        if tiny is None:
            del sources[TINY_VAE_DECODER]
            report(f"{TINY_VAE_DECODER}: no tiny VAE for {source} (its tiny_vae/ or the hub's TAESD): draft decoding off")
        else:
            sources[TINY_VAE_DECODER] = tiny
    return sources


def export_variant(model_id: str, out_dir: Path | None = None, report: Callable[[str], None] = tqdm.write) -> Variant:
    """The FP16 variant of a model id (what ``PIXART_MODEL_ID`` takes), converted into ``out_dir`` (default
    ``model/<model-name>/FP16``, notebook 1's) unless a finished one is there: optimum-intel's ``export=True``."""
    out_dir = Path(out_dir) if out_dir is not None else variant_dir(model_id, "FP16")
    if not is_variant(out_dir):
        convert_pipeline(resolve_model_source(model_id), out_dir, report=report)
    return Variant.load(out_dir)


def convert_downsampled(
    source: Path, fp16: Variant | Path, out_dir: Path, downsampling: TokenDownsampling, report: Callable[[str], None] = tqdm.write
) -> dict[str, float]:
    """Make ``FP16-ToDo``: the FP16 variant (or its folder) plus its transformer converted again with token downsampling.

    The FP16 variant's parts are linked (copied where links cannot be made); the downsampled transformer
    (``helpers.token_downsampling``) is converted from ``source`` into ``downsampled_transformer/``. The index records
    the factor, the blocks and the fraction of steps. Returns seconds per part converted.
    """
    source, fp16, out_dir = Path(source), as_variant(fp16), prepare_folder(out_dir, report)
    for part in present_parts(fp16.folder):
        link_part(fp16.folder, out_dir, part)
    make = lambda name: _convert_from(source, "transformer", out_dir, downsampling, name)  # noqa: E731
    seconds = make_parts(out_dir, [DOWNSAMPLED_PART], make, "converted", report)
    num_blocks = fp16.part_config("transformer")["num_layers"]
    index = {"variant": out_dir.name, "source": str(source), "token_downsampling": downsampling.record(num_blocks)}
    finish_variant(source, out_dir, index)
    return seconds


def _convert_from(
    source: Path, part: str, out_dir: Path, downsampling: TokenDownsampling | None = None, folder_name: str | None = None
) -> Path:
    # the torch module lives only for this call: it is freed before the next part is loaded
    with float32_source(source, part, scratch=out_dir) as folder:
        model = load_torch_part(folder, part)
        if downsampling is not None:
            enable_token_downsampling(model, downsampling)
        extra = {LATENT_RGB_KEY: fit_latent_rgb(model)} if part == "vae_decoder" else None  # the previews' projection
        return convert_part(model, part, out_dir, folder_name, extra)
