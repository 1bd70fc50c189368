"""Token downsampling: the PyTorch processor, its OpenVINO conversion (same downsampling, f32) and the variants."""

import json
import os

import numpy as np
import openvino as ov
import pytest
import torch

from helpers.cli import main as cli_main
from helpers.compression import make_downsampled_variant
from helpers.conversion import load_torch_part
from helpers.pipeline import OVPixArtPipeline, OVTransformer
from helpers.settings import F32_CONFIG
from helpers.token_downsampling import (
    TokenDownsampling,
    disable_token_downsampling,
    downsample_tokens,
    enable_token_downsampling,
    parse_blocks,
)
from helpers.variants import available_variants, how_to_make, read_index


def transformer_inputs(batch: int, height: int, width: int) -> dict:
    torch.manual_seed(0)
    return dict(
        hidden_states=torch.randn(batch, 4, height, width),
        encoder_hidden_states=torch.randn(batch, 120, 32),
        encoder_attention_mask=torch.ones(batch, 120, dtype=torch.long),
        timestep=torch.full((batch,), 500.0),
        added_cond_kwargs={
            "resolution": torch.tensor([[height * 8.0, width * 8.0]]).repeat(batch, 1),
            "aspect_ratio": torch.tensor([[height / width]]).repeat(batch, 1),
        },
    )


def torch_sample(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


@pytest.fixture(scope="module")
def downsampled(tiny_source, tiny_variant):
    """The tiny model's FP16-ToDo variant (factor 2, all blocks), made as the CLI makes it."""
    folder = tiny_variant.with_name("FP16-ToDo")
    make_downsampled_variant(tiny_source, tiny_variant, folder, TokenDownsampling(2), progress=lambda message: None)
    return folder


def test_pooling_averages_each_window_and_keeps_odd_edges():
    grid = torch.arange(15.0).reshape(1, 3, 5)  # one channel, 3 × 5 tokens
    tokens = grid.flatten(1).T[None]  # (1, 15, 1)
    pooled = downsample_tokens(tokens, 3, 5, 2)[0, :, 0]
    # windows: rows {0,1} × cols {0,1}, {2,3}, {4}; then row {2} × the same columns
    assert pooled.tolist() == [3.0, 5.0, 6.5, 10.5, 12.5, 14.0]
    assert downsample_tokens(tokens, 3, 5, 1) is tokens


def test_factor_1_is_the_exact_model(tiny_source):
    model = load_torch_part(tiny_source, "transformer")
    inputs = transformer_inputs(2, 16, 20)
    exact = torch_sample(model, inputs)
    hook = enable_token_downsampling(model, TokenDownsampling(1))
    assert torch.equal(torch_sample(model, inputs), exact)
    hook.remove()
    hook = enable_token_downsampling(model, TokenDownsampling(2))
    downsampled = torch_sample(model, inputs)
    disable_token_downsampling(model, hook)
    assert torch.equal(torch_sample(model, inputs), exact)  # undone
    # and it did change something: more than the OpenVINO parity tolerance below (the tiny model's attention is weak)
    assert (downsampled - exact).abs().max() > 3e-3 * exact.abs().max()


# 16×20 latents: a 8×10 token grid; 18×14: 9×7, odd on both sides; 32×36: the traced size
@pytest.mark.parametrize("batch,height,width", [(2, 16, 20), (1, 18, 14), (2, 32, 36)])
def test_openvino_matches_torch_with_the_same_downsampling(tiny_source, downsampled, batch, height, width):
    model = load_torch_part(tiny_source, "transformer")
    enable_token_downsampling(model, TokenDownsampling(2))
    inputs = transformer_inputs(batch, height, width)
    expected = torch_sample(model, inputs)
    actual = OVTransformer(downsampled / "transformer", ov.Core(), "CPU", F32_CONFIG)(**inputs)[0]
    assert actual.shape == expected.shape == (batch, 8, height, width)
    # FP16 weights against fp32 torch, as the exact transformer's test (tests/test_conversion.py)
    assert torch.allclose(actual, expected, atol=1e-3 * expected.abs().max(), rtol=0)


def test_only_the_chosen_blocks_downsample(tiny_source):
    model = load_torch_part(tiny_source, "transformer")
    inputs = transformer_inputs(1, 16, 16)
    samples = []
    for blocks in [(0,), (1,), (0, 1)]:
        hook = enable_token_downsampling(model, TokenDownsampling(2, blocks))
        samples.append(torch_sample(model, inputs))
        disable_token_downsampling(model, hook)
    assert not torch.equal(samples[0], samples[1]) and not torch.equal(samples[1], samples[2])


def test_the_variant_shares_the_unchanged_parts_and_records_the_downsampling(tiny_variant, downsampled):
    index = read_index(downsampled)
    assert index["token_downsampling"] == {"factor": 2, "blocks": [0, 1]}
    for part in ("text_encoder", "vae_decoder"):  # linked, not converted again
        assert os.path.samefile(downsampled / part / "openvino_model.bin", tiny_variant / part / "openvino_model.bin")
    assert not os.path.samefile(downsampled / "transformer" / "openvino_model.bin", tiny_variant / "transformer" / "openvino_model.bin")
    assert available_variants("tiny", root=tiny_variant.parent.parent)[-1] == "FP16-ToDo"


def test_the_downsampled_pipeline_draws_pictures_near_the_exact_ones(tiny_variant, downsampled):
    pictures = {}
    for folder in (tiny_variant, downsampled):
        pipe = OVPixArtPipeline.from_variant(folder, "CPU", F32_CONFIG)
        pipe.set_progress_bar_config(disable=True)
        pictures[folder.name] = pipe("a red circle", height=256, width=256, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    exact, todo = pictures["FP16"], pictures["FP16-ToDo"]
    assert todo.shape == exact.shape == (256, 256, 3) and 0 <= todo.min() and todo.max() <= 1
    assert 0 < np.abs(todo - exact).mean() < 0.25  # changed, and still a picture of the same noise


def test_the_cli_makes_w8a8_todo_from_its_own_calibration(tiny_variant, downsampled, capsys):
    root = tiny_variant.parent.parent
    assert cli_main(["compress", "--model", "tiny", "--model-root", str(root), "--variant", "W8A8-ToDo",
                     "--calibration-prompts", "1", "--calibration-side", "256"]) == 0
    folder = tiny_variant.with_name("W8A8-ToDo")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["token_downsampling"] == {"factor": 2, "blocks": [0, 1]} and index["compression"]["transformer"]["mode"] == "w8a8"
    assert "W8A8-ToDo" in capsys.readouterr().out


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="at least 1"):
        TokenDownsampling(0)
    with pytest.raises(ValueError, match="blocks 0 to 1"):
        TokenDownsampling(2, (5,)).block_indices(2)
    with pytest.raises(ValueError, match='"0-13,20"'):
        parse_blocks("first")
    assert parse_blocks("0-2,5") == (0, 1, 2, 5) and parse_blocks("all") is None
    assert "--variant W8A8-ToDo" in how_to_make(__import__("pathlib").Path("model/tiny/W8A8-ToDo"))


def test_the_speed_benchmark_times_steps_in_turns_and_compares_outputs(tmp_path, tiny_variant, downsampled):
    from benchmarks.benchmark import machine
    from benchmarks.token_downsampling import markdown, task_picture_distance, task_steps

    work = tmp_path / "tiny"
    work.mkdir()
    for folder in (tiny_variant, downsampled):
        (work / folder.name).symlink_to(folder)
    steps = task_steps(work, 256, ["FP16", "FP16-ToDo"], runs=1)
    assert steps["tokens"] == 256 and set(steps["steps"]) == {"FP16", "FP16-ToDo"}
    assert 0.9 < steps["cosine vs exact"]["FP16-ToDo"] < 1.0  # changed, and still the same prediction
    assert all(profile["total"] > 0 for profile in steps["profile ms"].values())
    picture = task_picture_distance(work, 256, ["FP16", "FP16-ToDo"])
    assert 10 < picture["PSNR dB"] < 100 and 0 < picture["SSIM"] <= 1
    report = markdown({"machine": machine(), "steps": {"step 256²": steps, "LCM picture 256²": picture}})
    assert "| FP16-ToDo |" in report and "output cosine vs exact" in report and "PSNR" in report
