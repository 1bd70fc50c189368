"""Compression: NNCF weight compression and W8A8 quantization, variant folder to variant folder."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import openvino as ov
import torch
from tqdm.auto import tqdm

from .part_writing import make_parts, prepare_folder, save_part
from .parts import OVModelPart
from .pipeline import OVPixArtPipeline
from .schemes import CALIBRATION_PROMPTS, COMPRESSION_SCHEMES, W8A8_QUANTIZATION, needs_calibration
from .settings import ASSETS, model_name
from .token_downsampling import TokenDownsampling
from .variants import (
    DOWNSAMPLED_PART,
    DOWNSAMPLED_SUFFIX,
    Variant,
    as_variant,
    base_variant,
    finish_variant,
    ir_path,
    is_part_converted,
    is_variant,
    link_part,
    present_parts,
)

Calibration = Sequence[dict[str, np.ndarray]]  # transformer inputs by name, one dict per call
NO_CALIBRATION = "W8A8 quantizes activations: pass calibration=collect_calibration_data(fp16_dir, prompts) (helpers.compression)."


def compress_part(source: Path, out_dir: Path, part: str, method: dict, calibration: Calibration | None = None) -> Path:
    """Compress one part's IR with NNCF into ``out_dir/part`` (temporary folder, renamed at the end).

    ``method`` is one part's entry of a compression scheme: weight compression, or W8A8 quantization (which needs
    ``calibration``, the part's recorded inputs: ``collect_calibration_data``).
    """
    model = ov.Core().read_model(ir_path(source, part))
    if method["mode"] == "w8a8":
        model = quantize_w8a8(model, calibration, method)
    else:
        model = compress_weights(model, method)
    config = json.loads((Path(source) / part / "config.json").read_text())
    # compress_to_fp16=False: the FP16 IR's constants are already FP16, and its FP32 sinusoid tables stay FP32.
    return save_part(out_dir, part, model, config, compress_to_fp16=False)


def compress_weights(model: ov.Model, method: dict) -> ov.Model:
    """Weight-only compression (``nncf.compress_weights``): INT8 or INT4 weights, float activations."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

    options = dict(method)
    kwargs: dict[str, Any] = {"mode": nncf.CompressWeightsMode(options.pop("mode"))}
    if "group_size_fallback" in options:
        fallback = GroupSizeFallbackMode(options.pop("group_size_fallback"))
        kwargs["advanced_parameters"] = AdvancedCompressionParameters(group_size_fallback_mode=fallback)
    return nncf.compress_weights(model, **kwargs, **options)


def quantize_w8a8(model: ov.Model, calibration: Calibration | None, method: dict = W8A8_QUANTIZATION) -> ov.Model:
    """INT8 weights and activations (``nncf.quantize``, transformer model type) calibrated on ``calibration``.

    Bias correction is off: it needs further passes over the model, and with it the full-size transformer ran out of
    24 GiB (without it: 9.1 GiB).
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    if not calibration:
        raise ValueError(NO_CALIBRATION)
    return nncf.quantize(
        model,
        nncf.Dataset(list(calibration)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=list(method["ignored_patterns"]), types=list(method["ignored_types"]), validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            disable_bias_correction=True,
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=method["smooth_quant_alpha"]),
        ),
    )


def calibration_prompts(model_id: str, count: int = CALIBRATION_PROMPTS) -> list[str]:
    """Prompts to calibrate on: captions of the shapes data for the shapes model, else the shipped prompt list."""
    if model_name(model_id) == "shapes":
        from .shapes import all_scenes

        scenes = all_scenes()
        return [scene.caption for scene in scenes[:: max(1, len(scenes) // count)][:count]]
    lines = (ASSETS / "calibration_prompts.txt").read_text().splitlines()
    return [line for line in lines if line.strip()][:count]


def collect_calibration_data(
    variant: Variant | Path, prompts: Sequence[str], height: int | None = None, width: int | None = None, device: str = "CPU", seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """The transformer's inputs at every denoising step of the FP16 pipeline, over ``prompts`` (its own recipe).

    The VAE decoder is not run (latents out). ``height``/``width`` default to the model's size; calibrating
    smaller is cheaper, and the statistics are per channel, so they carry over to other sizes.
    """
    pipe = OVPixArtPipeline.from_pretrained(variant, device)  # low memory where the weights need it
    pipe.set_progress_bar_config(disable=True)
    with recorded_inputs(pipe.transformer) as calls:
        for index, prompt in enumerate(tqdm(prompts, desc="calibration")):
            generator = torch.Generator().manual_seed(seed + index)
            # no resolution binning: the size asked is the size calibrated (binning would round 256² up to a 1024² bin)
            pipe(prompt, height=height, width=width, use_resolution_binning=False, output_type="latent", generator=generator)
    return calls


@contextlib.contextmanager
def recorded_inputs(part: OVModelPart) -> Iterator[list[dict[str, np.ndarray]]]:
    """While the block runs, keep a copy of the inputs of every call of ``part`` (the names its IR takes)."""
    calls: list[dict[str, np.ndarray]] = []
    infer = part.infer

    def recording(**inputs: Any) -> Any:
        output = infer(**inputs)  # first: a part compiled at its first call knows its input names after it
        calls.append({name: value.detach().cpu().numpy().copy() for name, value in inputs.items() if value is not None and name in part.input_names})
        return output

    part.infer = recording
    try:
        yield calls
    finally:
        del part.infer  # the class's own method again


def compress_variant(
    source: Variant | Path,
    out_dir: Path,
    scheme: dict[str, dict],
    report: Callable[[str], None] = tqdm.write,
    calibration: Calibration | Callable[[Variant], Calibration] | None = None,
) -> dict[str, float]:
    """Make a compressed variant folder from the FP16 variant (or its folder), part by part (one part's weights in memory).

    ``scheme``: the NNCF method of each part (:data:`~helpers.schemes.COMPRESSION_SCHEMES`). A W8A8 scheme needs
    ``calibration``: the set (``collect_calibration_data``), or a function of the FP16 variant that records it, called
    only when a part still to make needs it. Parts already compressed are skipped; ``model_index.json`` is written
    last. ``report`` gets a line per part. Returns seconds per part.
    """
    fp16 = as_variant(source)
    source, out_dir = fp16.folder, prepare_folder(out_dir, report)
    pending = missing_parts(source, out_dir, scheme)
    if callable(calibration):  # a finished variant is not calibrated again (an hour at full size)
        calibration = calibration(fp16) if needs_calibration(pending) else None
    if needs_calibration(pending) and not calibration:  # said before T5 is compressed, not after
        raise ValueError(NO_CALIBRATION)
    seconds = make_parts(out_dir, present_parts(source), lambda part: compress_or_link(source, out_dir, part, scheme, calibration), "compressed", report)
    finish_variant(source, out_dir, {"variant": out_dir.name, "source": str(source), "compression": scheme})
    return seconds


def missing_parts(source: Path, out_dir: Path, scheme: dict[str, dict]) -> dict[str, dict]:
    """The method of each part ``source`` has and ``out_dir`` does not have yet (a VAE encoder added later, say)."""
    return {part: scheme[part] for part in present_parts(source) if part in scheme and not is_part_converted(out_dir, part)}


def compress_or_link(source: Path, out_dir: Path, part: str, scheme: dict[str, dict], calibration: Calibration | None = None) -> Path:
    """A part compressed by its scheme's method, or linked as it is where the scheme has none (the tiny decoder: a
    few MB, where INT8 would cost pictures and save nothing)."""
    if part not in scheme:
        return link_part(source, out_dir, part)
    return compress_part(source, out_dir, part, scheme[part], calibration)


def make_downsampled_variant(
    model_source: Path,
    fp16: Variant | Path,
    out_dir: Path,
    downsampling: TokenDownsampling,
    calibration: Calibration | Callable[[Variant], Calibration] | None = None,
    report: Callable[[str], None] = tqdm.write,
) -> dict[str, float]:
    """Make ``<VARIANT>-ToDo``: the ``<VARIANT>`` folder (its parts linked) plus its transformer with token
    downsampling (``downsampled_transformer/``), which the pipeline runs for each picture's first steps.

    ``FP16-ToDo`` comes first, beside the FP16 variant ``fp16`` (or its folder): the transformer converted again from ``model_source`` with the
    downsampling processor. For another variant, its own folder is made first when it is not there, then FP16-ToDo's
    downsampled transformer is compressed with that variant's transformer method. A W8A8 scheme calibrates both on
    the FP16 pipeline's transformer inputs: ``calibration`` is the set, or a function of the FP16 variant that
    records it (called only when something needs it). Returns seconds per part made.
    """
    from .conversion import convert_downsampled

    out_dir, fp16 = prepare_folder(out_dir, report), as_variant(fp16)
    fp16_todo = fp16.folder.with_name("FP16" + DOWNSAMPLED_SUFFIX)
    seconds = convert_downsampled(model_source, fp16, fp16_todo, downsampling, report)
    if out_dir == fp16_todo:
        return seconds
    base = out_dir.with_name(base_variant(out_dir.name))
    scheme = COMPRESSION_SCHEMES[base.name]
    pending = missing_parts(fp16.folder, base, scheme)
    if not is_part_converted(out_dir, DOWNSAMPLED_PART):
        pending[DOWNSAMPLED_PART] = scheme["transformer"]
    if callable(calibration):
        calibration = calibration(fp16) if needs_calibration(pending) else None
    if not is_variant(base) or missing_parts(fp16.folder, base, scheme):
        seconds |= compress_variant(fp16, base, scheme, report, calibration)
    for part in present_parts(base):
        link_part(base, out_dir, part)
    make = lambda part: compress_part(fp16_todo, out_dir, part, scheme["transformer"], calibration)  # noqa: E731
    seconds |= make_parts(out_dir, [DOWNSAMPLED_PART], make, "compressed", report)
    record = Variant.load(fp16_todo).token_downsampling
    finish_variant(base, out_dir, {"variant": out_dir.name, "source": str(base), "compression": scheme, "token_downsampling": record})
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
    for part in present_parts(folder):
        counts = weight_types(ir_path(folder, part))
        values = {group: sum(counts.get(t, 0) for t in types) for group, types in groups.items()}
        rows[part] = {group: 100 * n / sum(values.values()) for group, n in values.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(1)


def save_calibration(calls: Iterable[dict[str, Any]], path: Path) -> Path:
    """Keep a calibration set (one dict of named arrays per recorded call) in one ``.npz`` file, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")  # a name of its own: two writers never mix
    np.savez(tmp, **{f"{index}/{name}": value for index, call in enumerate(calls) for name, value in call.items()})
    tmp.replace(path)
    return path


def load_calibration(path: Path) -> list[dict[str, Any]]:
    """The calibration set :func:`save_calibration` kept, in the order it was recorded."""
    calls: dict[int, dict[str, Any]] = {}
    with np.load(path) as stored:
        for key in stored.files:
            index, name = key.split("/", 1)
            calls.setdefault(int(index), {})[name] = stored[key]
    return [calls[index] for index in sorted(calls)]
