"""Compression: NNCF weight compression, variant folder to variant folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openvino as ov

from .conversion import finish_variant, make_parts
from .pipeline import check_variant
from .settings import IR_NAME, PARTS, atomic_folder

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
    with atomic_folder(Path(out_dir) / part) as tmp:
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
    source, out_dir = check_variant(source), Path(out_dir)
    seconds = make_parts(out_dir, PARTS, lambda part: compress_part(source, out_dir, part, recipe[part]), "compressed", progress)
    finish_variant(source, out_dir, {"variant": out_dir.name, "source": str(source), "compression": recipe})
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
