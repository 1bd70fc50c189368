"""LoRA on the OpenVINO pipeline: each format draws PyTorch's picture (diffusers + peft, f32), strengths and blends
switch without compiling, fusing, every variant and piece, and bad adapters refused whole."""

import json

import numpy as np
import pytest
import torch
from conftest import make_peft_adapter
from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline
from safetensors.torch import save_file

from helpers.lora_files import NotALoraError
from helpers.lora_graph import LoraShapeError
from helpers.pipeline import OVPixArtPipeline
from helpers.reference import add_torch_adapters
from helpers.settings import F32_CONFIG

MAX_PIXEL_DIFFERENCE = 0.01  # FP16-stored weights against fp32 PyTorch, both f32 (as tests/test_diffusers_api.py)
CALL = dict(num_inference_steps=3, guidance_scale=4.5, height=192, width=320, use_resolution_binning=False, output_type="np")


def draw(pipe, seed: int = 3) -> np.ndarray:
    return pipe("a red circle", generator=torch.Generator("cpu").manual_seed(seed), **CALL).images


def peft_tensors(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {key.removeprefix("base_model.model."): value for key, value in load_file(folder / "adapter_model.safetensors").items()}


def save_diffusers_file(path, tensors: dict[str, dict[str, torch.Tensor]], alphas: dict | None = None):
    """Per part (transformer, text_encoder), PEFT-named tensors written in diffusers' key style (``<part>.<key>``),
    alphas in the metadata diffusers' save_lora_weights writes."""
    metadata = {"lora_adapter_metadata": json.dumps(alphas)} if alphas else None
    save_file({f"{part}.{key}": value for part, keys in tensors.items() for key, value in keys.items()}, path, metadata=metadata)
    return path


def as_diffusers_file(folder, path, alpha: float, rank: int):
    """The adapter in diffusers' key style, its alpha in the metadata."""
    return save_diffusers_file(path, {"transformer": peft_tensors(folder)}, {"transformer.lora_alpha": alpha, "transformer.r": rank})


def as_kohya_file(folder, path, alpha: float):
    """The adapter in kohya's style (OneTrainer's PixArt files): underscored names, lora_down/lora_up, alpha keys."""
    tensors = {}
    for key, value in peft_tensors(folder).items():
        layer, role = key.rsplit(".lora_", 1)
        name = "lora_transformer_" + layer.replace(".", "_")
        tensors[f"{name}.lora_{'down' if role.startswith('A') else 'up'}.weight"] = value
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(tensors, path)
    return path


@pytest.fixture(scope="module")
def adapters(tiny_standard_source, tmp_path_factory):
    """Two random adapters of the tiny α model (rank 4, alpha 8), the first also as a diffusers and a kohya file."""
    root = tmp_path_factory.mktemp("lora")
    first = make_peft_adapter(tiny_standard_source, root / "first", seed=1)
    return {
        "peft": first,
        "diffusers": as_diffusers_file(first, root / "first-diffusers.safetensors", 8.0, 4),
        "kohya": as_kohya_file(first, root / "first-kohya.safetensors", 8.0),
        "second": make_peft_adapter(tiny_standard_source, root / "second", seed=2, rank=2, alpha=2.0),
    }


@pytest.fixture(scope="module")
def torch_pictures(tiny_standard_source, adapters):
    """diffusers + peft pictures (f32): none, the first adapter, and the blend of both at 0.7 and 0.4."""
    def with_adapters(chosen):
        pipe = PixArtAlphaPipeline.from_pretrained(tiny_standard_source)
        if chosen:
            add_torch_adapters(pipe.transformer, chosen)
        return draw(pipe)

    return {
        "base": with_adapters({}),
        "first": with_adapters({"first": (adapters["peft"], 1.0)}),
        "blend": with_adapters({"first": (adapters["peft"], 0.7), "second": (adapters["second"], 0.4)}),
    }


@pytest.fixture
def pipe(tiny_standard_variant):
    return OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG)


@pytest.mark.parametrize("form", ["peft", "diffusers", "kohya"])
def test_each_format_draws_pytorchs_picture(pipe, adapters, torch_pictures, form):
    pipe.load_lora_weights(adapters[form], adapter_name="first")
    picture = draw(pipe)
    assert np.abs(torch_pictures["first"] - torch_pictures["base"]).max() > 0.1  # the adapter changes the picture
    assert np.abs(picture - torch_pictures["first"]).max() < MAX_PIXEL_DIFFERENCE
    assert pipe.get_active_adapters() == ["first"] and pipe.get_list_adapters() == {"transformer": ["first"]}


def test_a_file_with_t5_layers_adapts_the_text_encoder_too(pipe, tiny_standard_source, adapters, torch_pictures, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import T5EncoderModel

    torch.manual_seed(21)
    t5 = T5EncoderModel.from_pretrained(tiny_standard_source / "text_encoder")
    config = LoraConfig(r=2, lora_alpha=2.0, target_modules=["q", "k", "v", "o"], init_lora_weights=False)
    get_peft_model(t5, config).save_pretrained(tmp_path / "t5")
    alphas = {"transformer.lora_alpha": 8.0, "transformer.r": 4, "text_encoder.lora_alpha": 2.0, "text_encoder.r": 2}
    tensors = {"transformer": peft_tensors(adapters["peft"]), "text_encoder": peft_tensors(tmp_path / "t5")}
    save_diffusers_file(tmp_path / "both.safetensors", tensors, alphas)
    reference = PixArtAlphaPipeline.from_pretrained(tiny_standard_source)
    add_torch_adapters(reference.transformer, {"both": (adapters["peft"], 1.0)})
    add_torch_adapters(reference.text_encoder, {"both": (tmp_path / "t5", 1.0)})
    expected = draw(reference)
    assert np.abs(expected - torch_pictures["first"]).max() > 0.01  # T5's adapter changes the picture
    pipe.load_lora_weights(tmp_path / "both.safetensors", adapter_name="both")
    assert pipe.get_list_adapters() == {"transformer": ["both"], "text_encoder": ["both"]}
    assert np.abs(draw(pipe) - expected).max() < MAX_PIXEL_DIFFERENCE


def test_strengths_switch_without_compiling_and_strength_0_is_the_base_bit_for_bit(pipe, adapters, torch_pictures):
    base = draw(pipe)
    pipe.load_lora_weights(adapters["peft"], adapter_name="first")
    pipe.load_lora_weights(adapters["second"], adapter_name="second")
    first = (pipe.set_adapters("first"), draw(pipe))[1]
    compiled = pipe.transformer.compile_count
    pipe.set_adapters(["first", "second"], adapter_weights=[0.7, 0.4])
    assert np.abs(draw(pipe) - torch_pictures["blend"]).max() < MAX_PIXEL_DIFFERENCE
    pipe.set_adapters(["first", "second"], adapter_weights=[0.0, 0.0])
    assert np.array_equal(draw(pipe), base)
    pipe.set_adapters("first")
    pipe.disable_lora()
    assert np.array_equal(draw(pipe), base) and pipe.get_active_adapters() == []
    pipe.enable_lora()
    assert np.array_equal(draw(pipe), first)
    assert pipe.transformer.compile_count == compiled  # every switch above compiled nothing
    pipe.unload_lora_weights()
    assert np.array_equal(draw(pipe), base) and pipe.get_list_adapters() == {}


def test_fuse_folds_the_adapter_into_the_fp16_weights_and_unfuse_takes_it_out(pipe, adapters, torch_pictures):
    pipe.load_lora_weights(adapters["peft"], adapter_name="first")
    run_time = draw(pipe)
    pipe.fuse_lora()
    fused = draw(pipe)
    assert np.abs(fused - torch_pictures["first"]).max() < MAX_PIXEL_DIFFERENCE
    assert not any(name.startswith("lora_") for name in pipe.transformer.input_names)  # no branch left to run
    pipe.unfuse_lora()
    assert np.array_equal(draw(pipe), run_time)


def test_sigma_draws_pytorchs_picture_with_an_adapter(sigma_source, sigma_variant, tmp_path):
    folder = make_peft_adapter(sigma_source, tmp_path / "sigma", seed=5)
    reference = PixArtSigmaPipeline.from_pretrained(sigma_source)
    add_torch_adapters(reference.transformer, {"sigma": (folder, 0.8)})
    pipe = OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG)
    pipe.load_lora_weights(folder, adapter_name="sigma")
    pipe.set_adapters("sigma", 0.8)
    assert np.abs(draw(pipe) - draw(reference)).max() < MAX_PIXEL_DIFFERENCE


def test_a_bad_adapter_is_refused_whole_naming_the_problem(pipe, adapters, tmp_path):
    base = draw(pipe)
    wider = peft_tensors(adapters["peft"]) | {"transformer_blocks.0.attn1.to_k.lora_A.weight": torch.zeros(4, 32)}
    save_diffusers_file(tmp_path / "wider.safetensors", {"transformer": wider})
    with pytest.raises(LoraShapeError, match=r"does not fit layer transformer_blocks\.0\.attn1\.to_k: the layer maps 24 → 24 .* lora_A is \[4, 32\]"):
        pipe.load_lora_weights(tmp_path / "wider.safetensors")
    tensors = peft_tensors(adapters["peft"]) | {"transformer_blocks.9.attn1.to_q.lora_A.weight": torch.zeros(4, 24),
                                                "transformer_blocks.9.attn1.to_q.lora_B.weight": torch.zeros(24, 4)}
    save_diffusers_file(tmp_path / "extra.safetensors", {"transformer": tensors})
    with pytest.raises(NotALoraError, match=r"1 of its transformer layers match no linear layer .*transformer_blocks\.9\.attn1\.to_q"):
        pipe.load_lora_weights(tmp_path / "extra.safetensors")
    (tmp_path / "notes.safetensors").write_text("not a tensor file")
    with pytest.raises(NotALoraError, match="is not a safetensors file"):
        pipe.load_lora_weights(tmp_path / "notes.safetensors")
    save_file({"weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(NotALoraError, match="holds no LoRA: expected lora_A/lora_B"):
        pipe.load_lora_weights(tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="No adapter named 'nope': loaded are none"):
        pipe.set_adapters("nope")
    assert pipe.get_list_adapters() == {} and np.array_equal(draw(pipe), base)  # nothing half-loaded


# --- every variant and every piece around the core ------------------------------------------------------------------

LCM_CALL = dict(height=256, width=256, output_type="np")  # tiny: LCM, its recipe's 4 steps without guidance
# The random adapter at a trained one's scale: W8A8's activation ranges were calibrated without it, and an update
# as large as the random adapter at strength 1 (it moves every pixel) is clipped by them.
STRENGTH = 0.3


def draw_lcm(pipe) -> np.ndarray:
    return pipe("a red circle", generator=torch.Generator("cpu").manual_seed(4), **LCM_CALL).images


@pytest.fixture(scope="module")
def fp16_pictures(tiny_variant, adapters):
    """The tiny FP16 variant's pictures without and with the first adapter (f32)."""
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)
    base = draw_lcm(pipe)
    pipe.load_lora_weights(adapters["peft"], adapter_name="first")
    pipe.set_adapters("first", STRENGTH)
    return {"base": base, "adapter": draw_lcm(pipe)}


def adapter_picture(folder, adapter, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """A variant's pictures without and with the adapter, loaded with ``kwargs``."""
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG, **kwargs)
    base = draw_lcm(pipe)
    pipe.load_lora_weights(adapter, adapter_name="first")
    pipe.set_adapters("first", STRENGTH)
    return base, draw_lcm(pipe)


@pytest.mark.parametrize("variant", ["INT8", "INT4-T5", "W8A8"])
def test_compressed_variants_draw_the_adapters_picture(tiny_compressed, fp16_pictures, adapters, variant):
    base, adapted = adapter_picture(tiny_compressed[variant], adapters["peft"])
    moved = np.abs(fp16_pictures["adapter"] - fp16_pictures["base"]).max()
    assert np.abs(adapted - base).max() > 0.5 * moved  # the adapter acts on the compressed transformer too
    own_error = np.abs(base - fp16_pictures["base"]).mean()  # the variant's distance from FP16, adapter or not
    assert np.abs(adapted - fp16_pictures["adapter"]).mean() < 1.5 * own_error + 0.005


def test_fuse_refuses_compressed_weights_naming_the_layer(tiny_compressed, adapters):
    pipe = OVPixArtPipeline.from_pretrained(tiny_compressed["INT8"], "CPU", F32_CONFIG)
    pipe.load_lora_weights(adapters["peft"], adapter_name="first")
    with pytest.raises(ValueError, match=r"can't fold the adapter into layer transformer_blocks\.0\.attn1\.to_k: its weights are stored as u8 \(a compressed variant\)"):
        pipe.fuse_lora()
    assert pipe.lora_adapters.fused == {} and pipe.get_active_adapters() == ["first"]  # still at run time


def test_the_step_cache_and_static_shapes_carry_the_adapter(tiny_variant, fp16_pictures, adapters):
    _, cached = adapter_picture(tiny_variant, adapters["peft"], step_cache=0.0)  # threshold 0: every step computed
    assert np.abs(cached - fp16_pictures["adapter"]).max() < 1e-4
    pipe = OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)
    pipe.reshape(batch_size=1, height=256, width=256, guidance_scale=0.0)
    pipe.load_lora_weights(adapters["peft"])
    pipe.set_adapters("default_0", STRENGTH)
    assert np.abs(draw_lcm(pipe) - fp16_pictures["adapter"]).max() < 1e-4


def test_a_todo_variant_runs_the_adapter_in_both_transformers(tiny_source, tiny_variant, adapters, fp16_pictures, tmp_path):
    from helpers.compression import make_downsampled_variant
    from helpers.token_downsampling import TokenDownsampling

    (tmp_path / "FP16").symlink_to(tiny_variant)  # FP16-ToDo is made beside its FP16, here outside the shared root
    folder = tmp_path / "FP16-ToDo"
    make_downsampled_variant(tiny_source, tmp_path / "FP16", folder, TokenDownsampling(2), report=lambda m: None)
    pipe = OVPixArtPipeline.from_pretrained(folder, "CPU", F32_CONFIG, downsampled_steps=1.0)
    base = draw_lcm(pipe)
    pipe.load_lora_weights(adapters["peft"], adapter_name="first")
    pipe.set_adapters("first", STRENGTH)
    moved = np.abs(fp16_pictures["adapter"] - fp16_pictures["base"]).max()
    assert np.abs(draw_lcm(pipe) - base).max() > 0.5 * moved  # every step downsampled, and adapted as much
    pipe.set_downsampled_steps(0.0)
    assert np.abs(draw_lcm(pipe) - fp16_pictures["adapter"]).max() < 1e-4


def test_the_lora_benchmark_times_every_way_on_the_tiny_model(tmp_path):
    from benchmarks.lora import main

    results = main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    assert set(results["step_seconds"]) == {"no adapter", "fused rank 16", "run-time rank 16", "run-time rank 64"}
    assert results["adapter_vs_none_max_difference"] > 0 and results["fused_vs_run_time_max_difference"] < 0.1
    assert "| run-time rank 64 |" in (tmp_path / "lora-step-tiny.md").read_text()
