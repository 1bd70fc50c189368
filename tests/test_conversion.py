"""Conversion: four IRs, skipping, interruption, and the IR measures (dynamic sizes, FP32 timestep table, T5)."""

import json

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.checkpoints import stored_dtypes, upcast_checkpoint
from helpers.conversion import convert_pipeline, float32_source, load_torch_part, sinusoid_tables
from helpers.parts import OVTextEncoder, OVTransformer, OVVaeDecoder, OVVaeEncoder
from helpers.settings import F32_CONFIG, MODEL_INDEX
from helpers.variants import IR_NAME, MADE_PARTS, VariantNotReadyError, check_variant, is_part_converted


def test_conversion_writes_a_self_contained_variant(tiny_variant):
    for part in MADE_PARTS:
        assert is_part_converted(tiny_variant, part)
        assert (tiny_variant / part / "config.json").is_file()
    assert (tiny_variant / "tokenizer" / "tokenizer_config.json").is_file()
    assert (tiny_variant / "scheduler" / "scheduler_config.json").is_file()
    assert (tiny_variant / MODEL_INDEX).is_file()
    assert check_variant(tiny_variant) == tiny_variant
    assert not list(tiny_variant.glob(".*partial"))


def test_converted_parts_are_skipped(tiny_source, tiny_variant):
    before = {p: (tiny_variant / p / IR_NAME).stat().st_mtime_ns for p in MADE_PARTS}
    messages = []
    assert convert_pipeline(tiny_source, tiny_variant, report=messages.append) == {}
    assert all("skipped" in m for m in messages) and len(messages) == len(MADE_PARTS)
    assert before == {p: (tiny_variant / p / IR_NAME).stat().st_mtime_ns for p in MADE_PARTS}


def test_interrupted_conversion_is_not_taken_as_done(tiny_source, tmp_path, monkeypatch):
    real_save = ov.save_model

    def killed_while_writing(model, path, *args, **kwargs):
        real_save(model, path, *args, **kwargs)  # the files exist, as after a kill during the rename's prelude
        raise KeyboardInterrupt

    monkeypatch.setattr(ov, "save_model", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        convert_pipeline(tiny_source, tmp_path, parts=("text_encoder",))
    assert not is_part_converted(tmp_path, "text_encoder")
    with pytest.raises(VariantNotReadyError, match="run notebook 1"):
        check_variant(tmp_path)

    monkeypatch.setattr(ov, "save_model", real_save)
    assert set(convert_pipeline(tiny_source, tmp_path)) == set(MADE_PARTS)  # the next run finishes it
    check_variant(tmp_path)


def test_sinusoid_tables_are_not_rounded_to_fp16(tiny_variant):
    model = ov.Core().read_model(tiny_variant / "transformer" / IR_NAME)
    tables = sinusoid_tables(model)
    assert tables and all(table.dtype != np.float16 for table in tables.values())
    # diffusers' get_timestep_embedding frequencies for 256 channels (shared by timestep, resolution, aspect ratio)
    expected = np.exp(-np.log(10000.0) * np.arange(128, dtype=np.float32) / 128).astype(np.float32)
    timestep = [table for table in tables.values() if table.size == 128]
    assert len(timestep) == 1
    np.testing.assert_allclose(timestep[0].ravel(), expected, rtol=1e-6)  # FP16 would be ~5e-4 off
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16]
    assert sum(int(np.prod(list(op.get_output_shape(0)))) for op in weights) > 10_000  # the weights stay FP16


def test_text_encoder_carries_the_activations_scale_factor(tiny_variant):
    model = ov.Core().read_model(tiny_variant / "text_encoder" / IR_NAME)
    assert model.get_rt_info(["runtime_options", "ACTIVATIONS_SCALE_FACTOR"]).astype(str) == "8.0"


@pytest.mark.parametrize("part", ["vae_decoder", "vae_encoder"])
def test_the_alpha_vae_needs_no_activation_scaling(tiny_variant, part):
    """Only SDXL's VAE (PixArt-Σ) gets one (tests/test_sigma.py); α's sd-vae-ft-ema runs FP16 as it is."""
    model = ov.Core().read_model(tiny_variant / part / IR_NAME)
    assert not model.has_rt_info(["runtime_options", "ACTIVATIONS_SCALE_FACTOR"])


# Latent sizes: the traced size, native 128² (1024² images), 1024 bins 96x168 and 168x96, odd shapes; batch 1 and 2.
@pytest.mark.parametrize("batch,height,width", [(2, 32, 36), (1, 128, 128), (2, 96, 168), (1, 168, 96), (2, 16, 40)])
def test_transformer_ir_matches_torch_at_every_size(tiny_source, tiny_variant, batch, height, width):
    torch_model = load_torch_part(tiny_source, "transformer")
    ov_model = OVTransformer(tiny_variant / "transformer", ov.Core(), "CPU", F32_CONFIG)
    torch.manual_seed(0)
    length = 120
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, 17:] = 0  # padded prompt
    inputs = dict(
        hidden_states=torch.randn(batch, 4, height, width),
        encoder_hidden_states=torch.randn(batch, length, 32),
        encoder_attention_mask=mask,
        timestep=torch.tensor([999, 3] if batch == 2 else [999]),  # large t: where FP16 frequencies hurt most
        added_cond_kwargs={
            "resolution": torch.tensor([[height * 8.0, width * 8.0]]).repeat(batch, 1),
            "aspect_ratio": torch.tensor([[height / width]]).repeat(batch, 1),
        },
    )
    with torch.no_grad():
        expected = torch_model(**inputs, return_dict=False)[0]
    actual = ov_model(**inputs)[0]
    assert actual.shape == expected.shape == (batch, 8, height, width)
    # FP16 weights against fp32 torch: ~3e-4 of the output's scale measured at every size. Rounded sinusoid
    # tables give 7e-3 at 1024² (the resolution condition), a baked position embedding far more.
    assert torch.allclose(actual, expected, atol=1e-3 * expected.abs().max(), rtol=0)


def test_text_encoder_ir_matches_torch(tiny_source, tiny_variant):
    torch_model = load_torch_part(tiny_source, "text_encoder")
    ov_model = OVTextEncoder(tiny_variant / "text_encoder", ov.Core(), "CPU", F32_CONFIG)
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (2, 37))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    with torch.no_grad():
        expected = torch_model(ids, attention_mask=mask)[0]
    actual = ov_model(ids, attention_mask=mask)[0]
    assert torch.allclose(actual, expected, atol=2e-3 * expected.abs().max(), rtol=0)


def test_vae_decoder_ir_matches_torch_non_square(tiny_source, tiny_variant):
    torch_model = load_torch_part(tiny_source, "vae_decoder")
    ov_model = OVVaeDecoder(tiny_variant / "vae_decoder", ov.Core(), "CPU", F32_CONFIG)
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 24, 40)
    with torch.no_grad():
        expected = torch_model.decode(latents, return_dict=False)[0]
    actual = ov_model.decode(latents)[0]
    assert actual.shape == (1, 3, 192, 320)
    # FP16 weights through convolutions and group norms: ~2e-3 of the output's scale measured.
    assert torch.allclose(actual, expected, atol=5e-3 * expected.abs().max(), rtol=0)


def test_vae_encoder_ir_gives_diffusers_latent_distribution_non_square(tiny_source, tiny_variant):
    torch_model = load_torch_part(tiny_source, "vae_encoder")
    ov_model = OVVaeEncoder(tiny_variant / "vae_encoder", ov.Core(), "CPU", F32_CONFIG)
    torch.manual_seed(0)
    pictures = torch.rand(2, 3, 192, 320) * 2 - 1
    with torch.no_grad():
        expected = torch_model.encode(pictures).latent_dist
    actual = ov_model.encode(pictures).latent_dist
    assert actual.mean.shape == (2, 4, 24, 40)
    # FP16 weights through convolutions and group norms, as the decoder (measured ~1e-3 of the scale)
    for ours, theirs in ((actual.mean, expected.mean), (actual.logvar, expected.logvar), (actual.mode(), expected.mode())):
        assert torch.allclose(ours, theirs, atol=5e-3 * theirs.abs().max(), rtol=0)


def test_half_precision_checkpoint_is_upcast_on_disk_not_in_memory(tiny_source, tmp_path):
    """A bf16-stored T5 (like the benchmark's T5-XXL) loads for conversion from a temporary FP32 copy, in shards."""
    bf16_source = tmp_path / "source"
    load_torch_part(tiny_source, "text_encoder", dtype=torch.bfloat16).save_pretrained(bf16_source / "text_encoder")
    assert stored_dtypes(bf16_source / "text_encoder") == {"BF16"}
    with float32_source(bf16_source, "text_encoder", scratch=tmp_path) as folder:
        assert folder != bf16_source
        assert stored_dtypes(folder / "text_encoder") == {"F32"}
        upcast = load_torch_part(folder, "text_encoder")
        expected = load_torch_part(bf16_source, "text_encoder")  # cast in memory: the same numbers
        for (name, a), (_, b) in zip(upcast.state_dict().items(), expected.state_dict().items()):
            assert a.dtype == torch.float32 and torch.equal(a, b), name
    assert not any(path.name.startswith(".text_encoder-fp32") for path in tmp_path.iterdir())  # removed afterwards
    with float32_source(tiny_source, "transformer", scratch=tmp_path) as folder:
        assert folder == tiny_source  # FP32 already: used in place, memory-mapped


def test_upcast_checkpoint_writes_shards_and_an_index(tiny_source, tmp_path):
    out = upcast_checkpoint(tiny_source / "text_encoder", tmp_path / "te", shard_bytes=50_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and (out / "config.json").is_file()
