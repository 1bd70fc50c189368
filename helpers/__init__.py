"""Shared code of the PixArt-α on OpenVINO notebooks: one module per stage, in the order of the flow.

1. ``settings``     — which model, how each checkpoint is sampled; ``variants`` — the variant folder and its checks.
2. ``sources``      — a hub id, a local diffusers folder, or a PixArt built offline with random weights.
   ``sizes``        — the aspect-ratio bins of each sample size; ``reference`` — the PyTorch reference pipeline.
3. ``conversion``   — the T5 encoder, the transformer and the VAE decoder to OpenVINO IR, part by part.
4. ``pipeline``     — one small class per part, put into diffusers' own ``PixArtAlphaPipeline``.
5. ``compression``  — NNCF weight compression and W8A8 quantization, variant folder to variant folder.
6. ``comparison``   — pictures, latency, sizes and similarity of variants side by side.
7. ``demo``         — the Gradio app (``python -m helpers demo --model shapes``).
8. ``shapes``       — captioned pictures of simple shapes (training data) and a scorer that reads them back.
9. ``training``     — a small PixArt trained here on them (notebook 6, ``python -m helpers train``).

Notebooks, tests and scripts ``import helpers`` and use the names re-exported here; nothing in this package knows
whether the model is real or small. A stage's module is imported at the first use of one of its names, so a script
that trains (``helpers.training``) needs neither OpenVINO nor Gradio installed, and ``import helpers`` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each re-exported name lives, stage by stage in the order of the flow.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "settings": (
        "ASSETS",
        "DEFAULT_MODEL_ID",
        "EXAMPLE_PROMPTS",
        "F32_CONFIG",
        "LCM_RECIPE",
        "MODEL_INDEX",
        "MODEL_ROOT",
        "REPO_ROOT",
        "SHAPES_EXAMPLE_PROMPTS",
        "SHIPPED_MODEL_IDS",
        "STANDARD_MODEL_ID",
        "STANDARD_RECIPE",
        "TINY_MODEL_IDS",
        "Recipe",
        "atomic_folder",
        "baseline_dir",
        "example_prompts",
        "free_memory",
        "model_id_from_env",
        "model_name",
        "recipe_for",
    ),
    "variants": (
        "IR_NAME",
        "PARTS",
        "VARIANTS",
        "DamagedVariantError",
        "VariantNotReadyError",
        "available_variants",
        "check_variant",
        "damage_message",
        "damaged_files",
        "file_records",
        "finish_variant",
        "how_to_make",
        "is_part_converted",
        "is_variant",
        "make_parts",
        "read_index",
        "remove_damaged",
        "variant_dir",
        "variant_recipe",
    ),
    "sources": (
        "DPM_SCHEDULER_CONFIG",
        "LCM_SCHEDULER_CONFIG",
        "TINY_SEED",
        "TINY_T5_CONFIG",
        "TINY_TRANSFORMER_CONFIG",
        "TINY_VAE_CONFIG",
        "TINY_VOCAB_SIZE",
        "ModelSourceError",
        "FULL_CONFIGS",
        "RANDOM_PRESETS",
        "SCHEDULERS",
        "build_random",
        "build_random_pipeline",
        "full_size_configs",
        "build_tiny_pipeline",
        "resolve_model_source",
        "scheduler_from_config",
        "shipped_model",
        "train_tiny_tokenizer",
    ),
    "sizes": (
        "ASPECT_RATIO_BINS",
        "aspect_ratio_bins",
        "bin_sizes",
        "format_size",
        "largest_side",
        "native_size",
        "parse_size",
        "sample_size_of",
        "size_choices",
        "wide_size",
    ),
    "reference": (
        "cpu_flags",
        "encode_prompts",
        "reference_dtype",
        "reference_images",
    ),
    "conversion": (
        "PART_SPECS",
        "T5_ACTIVATIONS_SCALE_FACTOR",
        "PartSpec",
        "convert_part",
        "convert_pipeline",
        "float32_source",
        "load_torch_part",
        "restore_sinusoid_tables",
        "sinusoid_tables",
        "stored_dtypes",
        "text_encoder_example",
        "transformer_example",
        "upcast_checkpoint",
        "vae_decoder_example",
    ),
    "pipeline": (
        "OVModelPart",
        "OVPixArtAlphaPipeline",
        "OVTextEncoder",
        "OVTransformer",
        "OVVaeDecoder",
        "MEMORY_SHARE",
        "available_devices",
        "check_device",
        "compute_precision",
        "fits_in_memory",
        "memory_gib",
        "parity_config",
        "weights_in_memory_gib",
        "check_generation_inputs",
        "device_widget",
        "generate",
    ),
    "compression": (
        "COMPRESSION_RECIPES",
        "INT4_WEIGHTS",
        "INT8_WEIGHTS",
        "W8A8_QUANTIZATION",
        "calibration_prompts",
        "collect_calibration_data",
        "compress_part",
        "compress_variant",
        "compress_weights",
        "needs_calibration",
        "quantize_w8a8",
        "weight_type_table",
        "weight_types",
    ),
    "comparison": (
        "VariantRun",
        "alignment_of_variants",
        "alignment_table",
        "comparison_table",
        "cosine_similarity",
        "evaluate_alignment",
        "folder_size_mb",
        "generate_evaluation",
        "latency_summary",
        "load_baseline",
        "part_sizes_mb",
        "plot_comparison",
        "psnr",
        "run_variant",
        "save_baseline",
        "show_evaluation",
        "show_grid",
        "show_side_by_side",
        "size_table",
        "ssim",
    ),
    "demo": (
        "EXAMPLE_SEEDS",
        "DemoBackend",
        "build_demo",
        "launch_demo",
        "local_theme",
    ),
    "shapes": (
        "ATTRIBUTES",
        "COLORS",
        "POSITIONS",
        "SHAPES",
        "Scene",
        "alignment_score",
        "all_scenes",
        "evaluation_scenes",
        "load_captioned_images",
        "make_dataset",
        "read_scene",
        "render",
        "score_image",
    ),
    "training": (
        "SHAPES_TRANSFORMER_CONFIG",
        "SHAPES_VAE_CONFIG",
        "DiffusionTerms",
        "TrainingSettings",
        "cache_features",
        "encode_captions",
        "encode_pictures",
        "fit_vae_once",
        "pictures_to_tensor",
        "save_pipeline",
        "start_pipeline",
        "train_shapes_model",
        "train_transformer",
        "train_vae",
        "vae_steps_for",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, "ov"])


def __getattr__(name: str) -> Any:
    """Import the stage that defines ``name`` on first use (PEP 562); ``helpers.ov`` is OpenVINO itself."""
    if name == "ov":
        value = importlib.import_module("openvino")  # tests patch ov.save_model through here
    elif name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
