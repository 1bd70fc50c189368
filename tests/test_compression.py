"""NNCF weight compression: the weight types in the compressed IRs, folder rules, and the compressed pipeline."""

import numpy as np
import openvino as ov
import pytest

from helpers.comparison import psnr, size_table, ssim
from helpers.compression import collect_calibration_data, compress_variant, weight_types
from helpers.conversion import sinusoid_tables
from helpers.pipeline import OVPixArtPipeline, generate
from helpers.schemes import COMPRESSION_SCHEMES
from helpers.settings import EXAMPLE_PROMPTS, F32_CONFIG, LCM_RECIPE
from helpers.variants import (
    IR_NAME,
    MADE_PARTS,
    TINY_VAE_DECODER,
    VariantNotReadyError,
    check_variant,
    is_part_converted,
)


def _read(folder, part):
    return ov.Core().read_model(folder / part / IR_NAME)


def fp16_weight_matrices(model) -> int:
    """Weight matrices (2+ dims > 1) still stored as FP16 at a MatMul, Convolution or Gather (embedding) input."""
    found = 0
    for op in model.get_ops():
        if op.get_type_name() in ("MatMul", "Convolution", "Gather"):
            for value in op.input_values():
                source = value.get_node()
                if source.get_type_name() == "Convert":  # FP16 weights are decompressed by a Convert
                    source = source.input_value(0).get_node()
                if source.get_type_name() == "Constant" and source.get_element_type() == ov.Type.f16:
                    found += sum(d > 1 for d in source.get_output_shape(0)) >= 2
    return found


@pytest.mark.parametrize("part", COMPRESSION_SCHEMES["INT8"])
def test_int8_compresses_every_weight_matrix(tiny_variant, tiny_compressed, part):
    assert fp16_weight_matrices(_read(tiny_variant, part)) >= 16  # T5: 16 linear layers; others 31
    assert fp16_weight_matrices(_read(tiny_compressed["INT8"], part)) == 0
    types = weight_types(tiny_compressed["INT8"] / part / IR_NAME)
    int8 = types.get("u8", 0) + types.get("i8", 0)
    assert int8 > 0.9 * (int8 + types.get("f16", 0) + types.get("f32", 0))  # the rest: scales, norms, biases
    assert "i4" not in types and "u4" not in types


def test_int4_t5_variant_has_int4_text_encoder_and_int8_rest(tiny_compressed):
    folder = tiny_compressed["INT4-T5"]
    t5 = weight_types(folder / "text_encoder" / IR_NAME)
    # the token embedding stays INT8 (NNCF's backup precision for embeddings); every other linear layer is int4
    assert t5.get("i4", 0) > 0.45 * sum(t5.values())
    assert fp16_weight_matrices(_read(folder, "text_encoder")) == 0
    for part in ("transformer", "vae_decoder", "vae_encoder"):
        types = weight_types(folder / part / IR_NAME)
        assert "i4" not in types and types.get("u8", 0) > 0.9 * sum(types.values())


def fake_quantized_activations(model) -> list[str]:
    """Names of the FakeQuantize nodes on activations (not on a constant weight)."""
    return [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() not in ("Constant", "Convert")
    ]


def matmul_weight_types(model) -> dict[str, str]:
    """For each MatMul with a constant weight, the element type that weight is stored in (through its decompression)."""
    found = {}
    for op in model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        node = op.input_value(1).get_node()
        while node.get_type_name() in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose"):
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant":
            found[op.get_friendly_name()] = node.get_element_type().get_type_name()
    return found


def test_w8a8_quantizes_the_transformers_block_activations_only(tiny_compressed):
    folder = tiny_compressed["W8A8"]
    transformer = _read(folder, "transformer")
    activations = fake_quantized_activations(transformer)
    # per block: the inputs of q/k/v, out, the cross-attention's q and out, and both MLP layers
    assert len(activations) >= 2 * 6 and all("transformer_blocks" in name for name in activations)
    attention_inputs = [
        value.get_node().get_type_name()
        for op in transformer.get_ops() if op.get_type_name() == "ScaledDotProductAttention"
        for value in op.input_values()
    ]
    assert attention_inputs and "FakeQuantize" not in attention_inputs  # the attention stays float (fused kernel)
    assert fake_quantized_activations(_read(tiny_compressed["INT8"], "transformer")) == []
    weights = matmul_weight_types(transformer)
    in_blocks = {name: kind for name, kind in weights.items() if "transformer_blocks" in name}
    float_in_blocks = {name for name, kind in in_blocks.items() if kind != "i8"}
    assert len(in_blocks) == 2 * 10 and all(".attn2.to_k" in n or ".attn2.to_v" in n for n in float_in_blocks)
    assert len(float_in_blocks) == 2 * 2  # the cross-attention's keys and values (120 caption tokens) stay float
    assert all(kind != "i8" for name, kind in weights.items() if "transformer_blocks" not in name)  # embeddings
    for part in ("text_encoder", "vae_decoder", "vae_encoder"):  # weight-only INT8, as in the INT8 variant
        assert fake_quantized_activations(_read(folder, part)) == []
        assert fp16_weight_matrices(_read(folder, part)) == 0


def test_calibration_records_every_transformer_call(tiny_variant):
    calibration = collect_calibration_data(tiny_variant, ["a red circle", "a blue square"], height=256, width=256)
    assert len(calibration) == 2 * LCM_RECIPE.num_inference_steps  # the tiny model is an LCM: 4 steps a prompt
    assert {"hidden_states", "encoder_hidden_states", "timestep"} <= set(calibration[0])
    assert calibration[0]["hidden_states"].shape == (1, 4, 32, 32)
    assert not np.array_equal(calibration[0]["timestep"], calibration[1]["timestep"])


def test_w8a8_without_calibration_says_how_to_make_it(tiny_variant, tmp_path):
    with pytest.raises(ValueError, match="collect_calibration_data"):
        compress_variant(tiny_variant, tmp_path / "W8A8", COMPRESSION_SCHEMES["W8A8"])


def test_compressed_weights_are_smaller(tiny_variant, tiny_compressed):
    table = size_table(tiny_variant, tiny_compressed["INT8"])
    assert table.loc["total", "ratio"] > 1.7  # INT8 + per-channel scales: a bit under 2x of FP16
    for part in COMPRESSION_SCHEMES["INT8"]:
        assert table.loc[part, "MB after"] < table.loc[part, "MB before"]
    assert table.loc[TINY_VAE_DECODER, "MB after"] == table.loc[TINY_VAE_DECODER, "MB before"]  # linked, not compressed
    int4 = size_table(tiny_variant, tiny_compressed["INT4-T5"])
    assert int4.loc["text_encoder", "MB after"] < table.loc["text_encoder", "MB after"]


def test_sinusoid_tables_survive_compression(tiny_compressed):
    tables = sinusoid_tables(_read(tiny_compressed["INT8"], "transformer"))
    assert tables and all(table.dtype != np.float16 for table in tables.values())


def test_compressed_variant_is_complete_and_skipped_when_done(tiny_variant, tiny_compressed):
    folder = tiny_compressed["INT8"]
    check_variant(folder)
    assert (folder / "tokenizer").is_dir() and (folder / "scheduler").is_dir()
    messages = []
    assert compress_variant(tiny_variant, folder, COMPRESSION_SCHEMES["INT8"], report=messages.append) == {}
    assert len(messages) == len(MADE_PARTS) and all("skipped" in m for m in messages)


def test_interrupted_compression_is_not_taken_as_done(tiny_variant, tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ov, "save_model", killed)
    with pytest.raises(KeyboardInterrupt):
        compress_variant(tiny_variant, tmp_path / "INT8", COMPRESSION_SCHEMES["INT8"])
    assert not is_part_converted(tmp_path / "INT8", "text_encoder")
    with pytest.raises(VariantNotReadyError):
        check_variant(tmp_path / "INT8")


def test_compressing_without_fp16_says_run_notebook_1(tmp_path):
    with pytest.raises(VariantNotReadyError, match="run notebook 1"):
        compress_variant(tmp_path / "FP16", tmp_path / "INT8", COMPRESSION_SCHEMES["INT8"])


def test_compressed_pipeline_stays_close_to_fp16(tiny_variant, tiny_compressed):
    prompt = EXAMPLE_PROMPTS[0]
    kwargs = dict(height=256, width=384, use_resolution_binning=False)
    fp16 = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)
    expected, _ = generate(fp16, prompt, **kwargs)
    for name, folder in tiny_compressed.items():
        pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG)
        actual, _ = generate(pipe, prompt, **kwargs)
        assert actual.size == (384, 256)
        # measured ~53 dB and SSIM 0.9998 on the tiny model; a broken compression gives noise-vs-noise (~10 dB)
        assert psnr(expected, actual) > 35 and ssim(expected, actual) > 0.95, name
