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
from helpers.parts import OVTransformer
from helpers.pipeline import OVPixArtPipeline
from helpers.settings import F32_CONFIG
from helpers.token_downsampling import (
    TokenDownsampling,
    disable_token_downsampling,
    downsample_tokens,
    enable_token_downsampling,
    parse_blocks,
)
from helpers.variants import DOWNSAMPLED_PART, available_variants, how_to_make, read_index


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
def fp16(tmp_path_factory, tiny_variant):
    """The tiny model's FP16 variant, seen from a model root of this module's own (the -ToDo variants made here stay
    out of the shared one)."""
    folder = tmp_path_factory.mktemp("todo-root") / "tiny" / "FP16"
    folder.parent.mkdir()
    folder.symlink_to(tiny_variant)
    return folder


@pytest.fixture(scope="module")
def downsampled(tiny_source, fp16):
    """The tiny model's FP16-ToDo variant (factor 2, all blocks), made as the CLI makes it."""
    folder = fp16.with_name("FP16-ToDo")
    make_downsampled_variant(tiny_source, fp16, folder, TokenDownsampling(2), report=lambda message: None)
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
    actual = OVTransformer(downsampled / DOWNSAMPLED_PART, ov.Core(), "CPU", F32_CONFIG)(**inputs)[0]
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


def test_the_variant_is_its_base_plus_the_downsampled_transformer(fp16, downsampled):
    index = read_index(downsampled)
    assert index["token_downsampling"] == {"factor": 2, "blocks": [0, 1], "steps": 0.5}
    for part in ("text_encoder", "transformer", "vae_decoder"):  # linked, not converted again
        assert os.path.samefile(downsampled / part / "openvino_model.bin", fp16 / part / "openvino_model.bin")
    assert (downsampled / DOWNSAMPLED_PART / "openvino_model.bin").is_file()
    assert f"{DOWNSAMPLED_PART}/openvino_model.bin" in index["files"]  # checked like the others
    assert available_variants("tiny", root=fp16.parent.parent)[-1].name == "FP16-ToDo"


def draw(pipe, steps: int = 4):
    generator = torch.Generator().manual_seed(0)
    return pipe("a red circle", height=256, width=256, num_inference_steps=steps, generator=generator, output_type="np").images[0]


def test_the_pipeline_runs_the_first_steps_downsampled(fp16, downsampled):
    exact = draw(OVPixArtPipeline.from_pretrained(fp16, "CPU", F32_CONFIG))
    pipe = OVPixArtPipeline.from_pretrained(downsampled, "CPU", F32_CONFIG)
    pipe.set_progress_bar_config(disable=True)
    pictures, calls = {}, {}
    for fraction in (0.0, 0.5, 1.0):
        pipe.set_downsampled_steps(fraction)
        output = pipe("a red circle", height=256, width=256, num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np")
        pictures[fraction], calls[fraction] = output.images[0], output.record.downsampled
        assert output.record.steps == 4  # every step timed as the transformer's, whichever model ran it
    assert calls == {0.0: 0, 0.5: 2, 1.0: 4}  # of 4 steps, the first ones
    assert np.array_equal(pictures[0.0], exact)  # none downsampled: the exact pipeline
    assert pictures[0.5].shape == (256, 256, 3) and 0 <= pictures[0.5].min() and pictures[0.5].max() <= 1
    distance = {fraction: np.abs(pictures[fraction] - exact).mean() for fraction in (0.5, 1.0)}
    assert 0 < distance[0.5] < distance[1.0] < 0.25  # the more steps downsampled, the further from exact


def test_static_shapes_reshape_the_downsampled_transformer_too(downsampled):
    pipe = OVPixArtPipeline.from_pretrained(downsampled, "CPU", F32_CONFIG, compile=False, downsampled_steps=1.0)
    pipe.set_progress_bar_config(disable=True)
    dynamic = draw(OVPixArtPipeline.from_pretrained(downsampled, "CPU", F32_CONFIG, downsampled_steps=1.0))
    pipe.reshape(height=256, width=256)
    assert pipe.transformer.downsampled.input_shapes == pipe.transformer.exact.input_shapes is not None
    assert np.abs(draw(pipe) - dynamic).max() < 1e-4


def test_a_todo_pipeline_saves_its_downsampled_transformer_and_steps(downsampled, tmp_path):
    pipe = OVPixArtPipeline.from_pretrained(downsampled, "CPU", F32_CONFIG, downsampled_steps=0.75)
    saved = pipe.save_pretrained(tmp_path / "FP16-ToDo")
    assert saved.token_downsampling == {"factor": 2, "blocks": [0, 1], "steps": 0.75}
    assert os.path.samefile(saved.ir(DOWNSAMPLED_PART).with_suffix(".bin"), downsampled / DOWNSAMPLED_PART / "openvino_model.bin")
    loaded = OVPixArtPipeline.from_pretrained(saved, "CPU", F32_CONFIG)
    assert np.array_equal(draw(loaded), draw(pipe))


def test_downsampled_steps_are_refused_where_they_make_no_sense(fp16, downsampled):
    with pytest.raises(ValueError, match="from 0 \\(none\\) to 1 \\(all\\)"):
        OVPixArtPipeline.from_pretrained(downsampled, "CPU", compile=False, downsampled_steps=2)
    with pytest.raises(ValueError, match="no transformer with token downsampling: load a -ToDo variant"):
        OVPixArtPipeline.from_pretrained(fp16, "CPU", compile=False, downsampled_steps=0.5)


def test_the_cli_makes_w8a8_todo_and_draws_with_it(fp16, downsampled, tmp_path, capsys):
    root = fp16.parent.parent
    assert cli_main(["compress", "--model", "tiny", "--model-root", str(root), "--variant", "W8A8-ToDo",
                     "--calibration-prompts", "1", "--calibration-side", "256"]) == 0
    folder = fp16.with_name("W8A8-ToDo")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["token_downsampling"] == {"factor": 2, "blocks": [0, 1], "steps": 0.5} and index["compression"]["transformer"]["mode"] == "w8a8"
    assert os.path.samefile(folder / "transformer" / "openvino_model.xml", fp16.with_name("W8A8") / "transformer" / "openvino_model.xml")
    assert 'type="FakeQuantize"' in (folder / DOWNSAMPLED_PART / "openvino_model.xml").read_text()  # INT8 activations
    assert "W8A8-ToDo" in capsys.readouterr().out
    out = tmp_path / "todo.png"
    generate = ["generate", "--model", "tiny", "--model-root", str(root), "--prompt", "a red circle", "--size", "256x256", "--out", str(out)]
    assert cli_main([*generate, "--variant", "W8A8-ToDo", "--downsampled-steps", "1"]) == 0 and out.is_file()
    assert cli_main([*generate, "--variant", "FP16", "--downsampled-steps", "1"]) == 1
    assert "no transformer with token downsampling: load a -ToDo variant" in capsys.readouterr().err


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="at least 1"):
        TokenDownsampling(0)
    with pytest.raises(ValueError, match="blocks 0 to 1"):
        TokenDownsampling(2, (5,)).block_indices(2)
    with pytest.raises(ValueError, match='"0-13,20"'):
        parse_blocks("first")
    assert parse_blocks("0-2,5") == (0, 1, 2, 5) and parse_blocks("all") is None
    assert "--variant W8A8-ToDo" in how_to_make(__import__("pathlib").Path("model/tiny/W8A8-ToDo"))


def test_the_speed_benchmark_times_steps_in_turns_and_compares_outputs(tmp_path, fp16, downsampled):
    from benchmarks.token_downsampling import markdown, task_picture_distance, task_steps
    from helpers.machine import machine

    work = tmp_path / "tiny"
    work.mkdir()
    for folder in (fp16, downsampled):
        (work / folder.name).symlink_to(folder)
    steps = task_steps(work, 256, ["FP16"], runs=1)
    assert steps["tokens"] == 256 and set(steps["steps"]) == {"FP16", "FP16-ToDo"}
    assert 0.9 < steps["cosine vs exact"]["FP16-ToDo"] < 1.0  # changed, and still the same prediction
    assert all(profile["total"] > 0 for profile in steps["profile ms"].values())
    picture = task_picture_distance(work, 256, "FP16-ToDo", [0.5, 1.0])
    assert 10 < picture["PSNR dB"][0.5] < 100 and 0 < picture["SSIM"][1.0] <= 1
    report = markdown({"machine": machine(), "steps": {"step 256²": steps, "LCM picture 256²": picture}})
    assert "| FP16-ToDo |" in report and "output cosine vs exact" in report and "| 50% |" in report and "| 100% |" in report


def test_the_demo_lists_the_variant_but_does_not_preselect_it(fp16, downsampled):
    from helpers.demo import DemoBackend

    backend = DemoBackend("tiny", "CPU", root=fp16.parent.parent)  # FP16 and FP16-ToDo; W8A8(-ToDo) after the CLI test
    regular = [variant for variant in backend.variants if not variant.endswith("-ToDo")]
    assert "FP16-ToDo" in backend.variants and list(backend.variants)[-1].endswith("-ToDo")
    assert backend.default_variant == regular[-1]
