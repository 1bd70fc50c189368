"""The tiny VAE decoder: converted beside the other parts (α and Σ latents), linked into compressed variants, as
diffusers' AutoencoderTiny decodes, swapped in by set_decoder, and refused clearly where a folder has none."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny

from helpers.building import TINY_VAE_FOLDER
from helpers.conversion import part_sources
from helpers.pipeline import OVPixArtPipeline
from helpers.variants import PARTS, TINY_VAE_DECODER, VariantNotReadyError, finish_variant, link_part

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def tiny_pipe(tiny_variant):
    return OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)


@pytest.fixture(scope="module")
def without_tiny_vae(tiny_variant, tmp_path_factory) -> Path:
    """The tiny FP16 variant as a model without a tiny VAE converts: every part but the tiny decoder."""
    folder = tmp_path_factory.mktemp("no-tiny") / "FP16"
    for part in (*PARTS, "vae_encoder"):
        link_part(tiny_variant, folder, part)
    finish_variant(tiny_variant, folder, {"variant": "FP16"}, show_progress=False)
    return folder


@pytest.mark.parametrize("variant, source", [("tiny_variant", "tiny_source"), ("sigma_variant", "sigma_source")])
def test_the_tiny_decoder_decodes_as_diffusers_autoencoder_tiny(variant, source, request):
    folder, source = request.getfixturevalue(variant), request.getfixturevalue(source)
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG, compile=False)
    reference = AutoencoderTiny.from_pretrained(source / TINY_VAE_FOLDER).eval()
    channels = pipe.full_vae.config["latent_channels"]
    assert TINY_VAE_DECODER in pipe.variant.index["parts"] and reference.config.latent_channels == channels
    latents = torch.randn(1, channels, 24, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.decode(latents).sample
    found = pipe.tiny_vae.decode_scaled(latents)
    assert found.shape == expected.shape == (1, 3, 192, 128)
    assert torch.allclose(found, expected, atol=2e-3)  # the IR holds FP16 weights


def test_set_decoder_decodes_the_same_latents_with_the_tiny_vae(tiny_pipe, tiny_source):
    call = dict(prompt="a red circle", height=256, width=256, num_inference_steps=2, use_resolution_binning=False)
    latents = tiny_pipe(**call, generator=torch.Generator().manual_seed(3), output_type="latent").images
    tiny_pipe.set_decoder("tiny")
    try:
        assert tiny_pipe.decoder == "tiny" and tiny_pipe.vae is tiny_pipe.tiny_vae
        drawn = tiny_pipe(**call, generator=torch.Generator().manual_seed(3), output_type="pt").images
        record = tiny_pipe(**call, generator=torch.Generator().manual_seed(3)).record
    finally:
        tiny_pipe.set_decoder("full")
    assert tiny_pipe.decoder == "full" and tiny_pipe.vae is tiny_pipe.full_vae
    with torch.no_grad():
        expected = AutoencoderTiny.from_pretrained(tiny_source / TINY_VAE_FOLDER).decode(latents).sample
    assert drawn.shape == (1, 3, 256, 256) and (drawn - (expected / 2 + 0.5).clamp(0, 1)).abs().max() < 2e-3
    assert TINY_VAE_DECODER in record.seconds and "vae_decoder" not in record.seconds


def test_edits_encode_with_the_full_vae_while_the_tiny_one_decodes(tiny_pipe):
    from PIL import Image

    picture = Image.new("RGB", (256, 256), (200, 30, 30))
    tiny_pipe.set_decoder("tiny")
    try:
        output = tiny_pipe("a red circle", image=picture, strength=0.5, num_inference_steps=4)
    finally:
        tiny_pipe.set_decoder("full")
    assert output.images[0].size == (256, 256) and output.record.steps == 2


def test_compressed_variants_link_the_tiny_decoder_as_it_is(tiny_variant, tiny_compressed):
    for folder in tiny_compressed.values():
        for file in (tiny_variant / TINY_VAE_DECODER).iterdir():
            assert (folder / TINY_VAE_DECODER / file.name).read_bytes() == file.read_bytes()


def test_a_folder_without_a_tiny_decoder_draws_and_refuses_drafts_with_the_fix(without_tiny_vae):
    pipe = OVPixArtPipeline.from_pretrained(without_tiny_vae, "CPU", F32_CONFIG, compile=False)
    assert pipe.decoder == "full" and np.asarray(pipe("a cat", num_inference_steps=1, height=256, width=256).images[0]).std() > 0
    with pytest.raises(VariantNotReadyError, match=r"no tiny VAE decoder \(vae_tiny_decoder/\).*tiny_vae/.*convert"):
        pipe.set_decoder("tiny")
    with pytest.raises(VariantNotReadyError, match="no tiny VAE decoder"):
        OVPixArtPipeline.from_pretrained(without_tiny_vae, "CPU", compile=False, decoder="tiny")
    with pytest.raises(ValueError, match="decoder='draft' is not a decoder: choose 'full'.*or 'tiny'"):
        pipe.set_decoder("draft")


def test_a_model_without_a_tiny_vae_converts_without_one_and_says_so(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # the hub's TAESD is not cached: none anywhere
    source = tmp_path / "diffusers"
    source.mkdir()
    for item in tiny_source.iterdir():
        if item.name != TINY_VAE_FOLDER:
            (source / item.name).symlink_to(item)
    said = []
    assert set(part_sources(source, ("vae_decoder", TINY_VAE_DECODER), said.append)) == {"vae_decoder"}
    assert said == [f"{TINY_VAE_DECODER}: no tiny VAE for {source} (its tiny_vae/ or the hub's TAESD): draft decoding off"]
    assert part_sources(tiny_source, (TINY_VAE_DECODER,), said.append) == {TINY_VAE_DECODER: tiny_source / TINY_VAE_FOLDER}


@pytest.mark.parametrize("draft_first", [True, False])
def test_static_shapes_hold_the_tiny_decoder_whether_set_before_or_after_reshape(tiny_variant, draft_first):
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG, compile=False)
    call = dict(height=256, width=256, num_inference_steps=2, generator=torch.Generator().manual_seed(2))
    dynamic = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG, decoder="tiny")("a red circle", **call).images[0]
    if draft_first:
        pipe.set_decoder("tiny")
    pipe.reshape(batch_size=1, height=256, width=256)
    pipe.set_decoder("tiny")
    call["generator"] = torch.Generator().manual_seed(2)
    drawn = pipe("a red circle", **call).images[0]
    assert pipe.tiny_vae.input_shapes == pipe.full_vae.input_shapes and pipe.tiny_vae.input_shapes is not None
    assert np.abs(np.asarray(drawn, float) - np.asarray(dynamic, float)).max() <= 1
