"""The compression schemes: the NNCF method each compressed variant applies to each part, and how many prompts
W8A8's calibration records (``helpers.compression`` applies them; "recipe" is kept for the sampling recipe)."""

from __future__ import annotations

# INT8: nncf's asymmetric per-channel weights. INT4 (T5 only, 80 % of the real pipeline's weights): symmetric groups
# of 128, smaller groups where a layer is narrower. W8A8 (the transformer, where the time goes): INT8 weights and
# activations, calibrated; what carries the conditioning and costs little stays float, and so does the attention,
# which OpenVINO then keeps fused (docs/amx.md, "What the W8A8 figures say").
INT8_WEIGHTS = {"mode": "int8_asym"}
INT4_WEIGHTS = {"mode": "int4_sym", "group_size": 128, "group_size_fallback": "adjust"}
W8A8_QUANTIZATION = {
    "mode": "w8a8",
    "smooth_quant_alpha": 0.95,
    "ignored_patterns": (
        r".*transformer\.(adaln_single|caption_projection|pos_embed|proj_out)[./].*",
        r".*\.attn2\.to_[kv]/.*",
    ),
    "ignored_types": ("ScaledDotProductAttention",),
}
# The VAE encoder (edits only) is compressed as the decoder is.
VAE_WEIGHTS = {"vae_decoder": INT8_WEIGHTS, "vae_encoder": INT8_WEIGHTS}
COMPRESSION_SCHEMES: dict[str, dict[str, dict]] = {
    "INT8": {"text_encoder": INT8_WEIGHTS, "transformer": INT8_WEIGHTS, **VAE_WEIGHTS},
    "INT4-T5": {"text_encoder": INT4_WEIGHTS, "transformer": INT8_WEIGHTS, **VAE_WEIGHTS},
    "W8A8": {"text_encoder": INT8_WEIGHTS, "transformer": W8A8_QUANTIZATION, **VAE_WEIGHTS},
}

# Prompts whose transformer inputs W8A8 is calibrated on, by default (notebook 3, ``compress --calibration-prompts``).
CALIBRATION_PROMPTS = 8


def needs_calibration(scheme: dict[str, dict]) -> bool:
    """True when a compression scheme quantizes activations (W8A8), which needs a calibration set."""
    return any(method["mode"] == "w8a8" for method in scheme.values())
