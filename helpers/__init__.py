"""Shared code of the PixArt-α on OpenVINO notebooks: one module per stage, in the order of the flow.

1. ``settings``     — which model, where its variant folders live, how each checkpoint is sampled.
2. ``sources``      — a hub id, a local diffusers folder, or a small PixArt built offline (``tiny``).
3. ``conversion``   — the T5 encoder, the transformer and the VAE decoder to OpenVINO IR, part by part.
4. ``pipeline``     — one small class per part, put into diffusers' own ``PixArtAlphaPipeline``.
5. ``compression``  — NNCF weight compression, variant folder to variant folder.
6. ``comparison``   — pictures, latency, sizes and similarity of variants side by side.
7. ``demo``         — the Gradio app and the command line (``python -m helpers demo --model tiny``).

Notebooks, tests and scripts ``import helpers`` and use the names re-exported here; nothing in this package knows
whether the model is real or small.
"""

import openvino as ov  # noqa: F401  (tests patch ov.save_model through here)

from .settings import (  # noqa: F401
    REPO_ROOT,
    MODEL_ROOT,
    ASSETS,
    DEFAULT_MODEL_ID,
    STANDARD_MODEL_ID,
    TINY_MODEL_IDS,
    PARTS,
    IR_NAME,
    MODEL_INDEX,
    EXAMPLE_PROMPTS,
    F32_CONFIG,
    model_id_from_env,
    model_name,
    variant_dir,
    baseline_dir,
    Recipe,
    LCM_RECIPE,
    STANDARD_RECIPE,
    recipe_for,
    VariantNotReadyError,
    atomic_folder,
)
from .sources import (  # noqa: F401
    ModelSourceError,
    LCM_SCHEDULER_CONFIG,
    DPM_SCHEDULER_CONFIG,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    TINY_T5_CONFIG,
    TINY_VOCAB_SIZE,
    TINY_SEED,
    resolve_model_source,
    build_tiny_pipeline,
    train_tiny_tokenizer,
    scheduler_from_config,
)
from .conversion import (  # noqa: F401
    T5_ACTIVATIONS_SCALE_FACTOR,
    text_encoder_example,
    transformer_example,
    vae_decoder_example,
    PartSpec,
    PART_SPECS,
    load_torch_part,
    is_part_converted,
    convert_part,
    sinusoid_tables,
    restore_sinusoid_tables,
    convert_pipeline,
    finish_variant,
)
from .pipeline import (  # noqa: F401
    available_devices,
    check_device,
    check_variant,
    OVModelPart,
    OVTextEncoder,
    OVTransformer,
    OVVaeDecoder,
    OVPixArtAlphaPipeline,
    check_generation_inputs,
    generate,
    device_widget,
)
from .compression import (  # noqa: F401
    INT8_WEIGHTS,
    INT4_WEIGHTS,
    COMPRESSION_RECIPES,
    compress_part,
    compress_variant,
    weight_types,
    weight_type_table,
)
from .comparison import (  # noqa: F401
    save_baseline,
    load_baseline,
    psnr,
    folder_size_mb,
    part_sizes_mb,
    size_table,
    ssim,
    cosine_similarity,
    latency_summary,
    VariantRun,
    run_variant,
    comparison_table,
    show_grid,
    plot_comparison,
    show_side_by_side,
)
from .demo import (  # noqa: F401
    VARIANT_ORDER,
    EXAMPLE_SEEDS,
    available_variants,
    size_choices,
    parse_size,
    DemoBackend,
    build_demo,
    local_theme,
    launch_demo,
    main,
)
