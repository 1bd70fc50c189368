"""The full-size benchmark's plan: which steps run, in which order, with which arguments (nothing is built or run)."""

import inspect
import types

import pytest
import torch

from benchmarks import plan as plan_module
from benchmarks.inputs import example_inputs
from benchmarks.plan import (
    CALIBRATION_SIZE,
    ENGINES,
    PICTURE_SIDE,
    SIGMA_2K_DECODE,
    SIGMA_2K_STEP,
    SIGMA_2K_VARIANTS,
    input_sizes,
    plan,
    report_order,
    sigma_2k_plan,
)
from benchmarks.registry import TASKS
from helpers import machine
from helpers.building import SIGMA_TRANSFORMER, full_size_configs
from helpers.schemes import CALIBRATION_PROMPTS, COMPRESSION_SCHEMES, needs_calibration
from helpers.variants import PARTS, VARIANTS

EVERY_ONLY = [set(PARTS), {"transformer", "vae_decoder"}, {"text_encoder"}, {"transformer"}, {"vae_decoder"}]


@pytest.fixture
def no_bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni"})


@pytest.fixture
def bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})


def keys(steps):
    return [key for key, _, _ in steps]


def full_plan(**kwargs):
    arguments = {"only": set(PARTS), "engines": set(ENGINES), "quick": False, "runs": 3, "warmup": 1, **kwargs}
    return plan(**arguments)


@pytest.mark.parametrize("only", EVERY_ONLY, ids=lambda only: "+".join(sorted(only)))
@pytest.mark.parametrize("quick", [False, True])
def test_step_keys_are_unique_and_each_task_takes_its_arguments(bf16, only, quick):
    steps = full_plan(only=only, quick=quick)
    assert len(set(keys(steps))) == len(steps)
    for key, task, kwargs in steps:
        inspect.signature(TASKS[task]).bind(work=None, **kwargs)  # a plan/task mismatch raises TypeError here


def test_order_of_the_full_plan(no_bf16):
    order = keys(full_plan())
    assert order[:2] == ["build", "matmul peak"]
    assert order[-1] == "convert pipeline, one process"
    position = order.index
    for part in PARTS:
        for variant in COMPRESSION_SCHEMES:
            assert position(f"convert {part}") < position(f"compress {variant} {part}")
    last_compress = max(position(key) for key in order if key.startswith("compress "))
    first_pipeline = min(position(key) for key in order if key.startswith("pipeline "))
    assert last_compress < first_pipeline
    assert [key for key in order if key.startswith("pipeline ")] == [
        "pipeline FP16", "pipeline FP16 fill cache", "pipeline FP16 cached", "pipeline FP16, T5 on demand",
        "pipeline INT8", "pipeline INT8 fill cache", "pipeline INT8 cached",
        "pipeline INT4-T5", "pipeline INT4-T5 fill cache", "pipeline INT4-T5 cached",
        "pipeline W8A8", "pipeline W8A8 fill cache", "pipeline W8A8 cached",
    ]
    # each latency after the variant part it times; INT4-T5 and W8A8 are timed on the part they change only
    latencies = [key for key in order if key.startswith("latency ")]
    assert latencies == [
        "latency torch-fp32 text_encoder", "latency ov-FP16 text_encoder", "latency ov-INT8 text_encoder", "latency ov-INT4-T5 text_encoder",
        "latency torch-fp32 transformer", "latency ov-FP16 transformer", "latency ov-INT8 transformer", "latency ov-W8A8 transformer",
        "latency torch-fp32 vae_decoder", "latency ov-FP16 vae_decoder", "latency ov-INT8 vae_decoder",
    ]
    assert position("latency ov-W8A8 transformer") < position("W8A8 vs FP16 side by side") < position("convert pipeline, one process")


def test_the_report_lists_the_full_plans_steps_in_its_order(bf16):
    assert report_order() == keys(full_plan())
    assert "upcast T5 checkpoint" not in report_order()  # retired: the build stores T5 in FP32 itself


def test_the_report_order_does_not_depend_on_this_cpu(bf16, monkeypatch):
    with_bf16 = report_order()
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2"})
    assert report_order() == with_bf16


def test_torch_bf16_is_left_out_without_bf16_instructions(no_bf16):
    assert plan_module.bf16_instructions() == []
    assert not [key for key in keys(full_plan()) if "torch-bf16" in key]
    assert "latency torch-fp32 transformer" in keys(full_plan())


def test_torch_bf16_is_timed_on_every_part_with_bf16_instructions(bf16):
    assert plan_module.bf16_instructions() == ["amx_bf16", "avx512_bf16"]
    order = keys(full_plan())
    assert [f"latency torch-bf16 {part}" for part in PARTS] == [key for key in order if "torch-bf16" in key]


def test_engines_limits_the_latencies_only(bf16):
    steps = full_plan(engines={"ov-INT8", "torch-fp32"})
    latencies = [key for key in keys(steps) if key.startswith("latency ")]
    assert latencies == [f"latency {engine} {part}" for part in PARTS for engine in ("torch-fp32", "ov-INT8")]
    assert [key for key in keys(steps) if not key.startswith("latency ")] == [key for key in keys(full_plan()) if not key.startswith("latency ")]


def test_only_leaves_out_the_whole_pipeline_steps_and_the_other_parts(no_bf16):
    order = keys(full_plan(only={"transformer", "vae_decoder"}))
    assert not [key for key in order if key.startswith("pipeline ") or key == "convert pipeline, one process"]
    assert not [key for key in order if "text_encoder" in key]
    assert "convert transformer" in order and "latency ov-INT8 vae_decoder" in order
    assert "W8A8 vs FP16 side by side" in order and "calibrate W8A8" in order
    only_t5 = keys(full_plan(only={"text_encoder"}))
    assert "calibrate W8A8" not in only_t5 and "W8A8 vs FP16 side by side" not in only_t5
    assert "latency ov-INT4-T5 text_encoder" in only_t5 and not [key for key in only_t5 if "ov-W8A8" in key]


@pytest.mark.parametrize("only", EVERY_ONLY, ids=lambda only: "+".join(sorted(only)))
def test_the_w8a8_steps_come_after_its_calibration(no_bf16, only):
    order = keys(full_plan(only=only))
    calibrated = [part for part in PARTS if part in only and needs_calibration({part: COMPRESSION_SCHEMES["W8A8"][part]})]
    assert ("calibrate W8A8" in order) == bool(calibrated)
    for part in calibrated:
        assert order.index(f"convert {part}") < order.index("calibrate W8A8") < order.index(f"compress W8A8 {part}")
    if calibrated:  # everything made from W8A8's variant, its other parts included, comes after
        for key in order:
            if "W8A8" in key and key != "calibrate W8A8":
                assert order.index("calibrate W8A8") < order.index(key), key


def test_quick_sizes(no_bf16):
    arguments = {quick: {key: kwargs for key, _, kwargs in full_plan(quick=quick)} for quick in (False, True)}
    assert arguments[False]["build"] == {"quick": False} and arguments[True]["build"] == {"quick": True}
    assert arguments[False]["matmul peak"] == {"side": 2048} and arguments[True]["matmul peak"] == {"side": 512}
    assert arguments[False]["calibrate W8A8"] == {"prompts": CALIBRATION_PROMPTS, "size": CALIBRATION_SIZE}
    assert arguments[True]["calibrate W8A8"] == {"prompts": CALIBRATION_PROMPTS, "size": 64}
    assert arguments[True]["latency ov-INT8 transformer"] == {"engine": "ov-INT8", "component": "transformer", "runs": 3, "warmup": 1,
                                                              "sizes": input_sizes(True)["transformer"]}
    for quick in (False, True):  # the pictures, the latencies and the side by side at the mode's picture side
        side = PICTURE_SIDE[quick]
        assert arguments[quick]["pipeline INT8"] == {"variant": "INT8", "cache": None, "side": side}
        assert arguments[quick]["latency ov-FP16 vae_decoder"]["sizes"] == {f"{side}²": {"side": side // 8, "batch": 1}}
        assert arguments[quick]["W8A8 vs FP16 side by side"]["size"] == f"{side}² b1"
    assert PICTURE_SIDE == {False: 1024, True: 256}
    # the whole pipeline in one process; quick: its cheapest part alone (its memory is not the step's own there)
    assert arguments[False]["convert pipeline, one process"] == {} and arguments[True]["convert pipeline, one process"] == {"parts": ["text_encoder"]}
    assert keys(full_plan(quick=True)) == keys(full_plan())  # the same steps, smaller


def test_engines_are_torch_and_each_variant():
    assert ENGINES == ("torch-fp32", "torch-bf16", *(f"ov-{variant}" for variant in VARIANTS))


def test_input_sizes_are_the_real_pictures():
    """120 tokens; 1024² (latent 128²) at batch 1 and 2 and 512² for the transformer, with the real micro-conditions."""
    full = full_size_configs()
    config = {"text_encoder": None, "transformer": types.SimpleNamespace(**full["transformer"]), "vae_decoder": types.SimpleNamespace(**full["vae"])}
    sizes = input_sizes(quick=False)
    shapes = {(part, size): {name: tuple(value.shape) for name, value in example_inputs(part, shape, config[part], torch.float32).items()}
              for part in PARTS for size, shape in sizes[part].items()}
    assert shapes[("text_encoder", "120 tokens")] == {"input_ids": (1, 120), "attention_mask": (1, 120)}
    assert shapes[("vae_decoder", "1024²")] == {"latent_sample": (1, 4, 128, 128)}
    for size, side, batch in (("1024² b1", 128, 1), ("1024² b2", 128, 2), ("512² b1", 64, 1)):
        assert shapes[("transformer", size)] == {"hidden_states": (batch, 4, side, side), "encoder_hidden_states": (batch, 120, 4096),
                                                 "encoder_attention_mask": (batch, 120), "timestep": (batch,),
                                                 "resolution": (batch, 2), "aspect_ratio": (batch, 1)}
    inputs = example_inputs("transformer", sizes["transformer"]["512² b1"], config["transformer"], torch.float32)
    assert inputs["timestep"].tolist() == [999.0] and inputs["resolution"].tolist() == [[512.0, 512.0]]
    assert inputs["aspect_ratio"].tolist() == [[1.0]]
    bf16_inputs = example_inputs("transformer", sizes["transformer"]["512² b1"], config["transformer"], torch.bfloat16)  # PyTorch bf16's
    assert bf16_inputs["hidden_states"].dtype == bf16_inputs["timestep"].dtype == torch.bfloat16
    assert bf16_inputs["encoder_attention_mask"].dtype == torch.long


@pytest.mark.parametrize("quick", [False, True])
def test_the_sigma_2k_plan_times_one_step_of_each_transformer_variant_after_making_them(quick):
    steps = sigma_2k_plan(quick, runs=1, warmup=1)
    order = keys(steps)
    assert len(set(order)) == len(order)
    for key, task, kwargs in steps:
        inspect.signature(TASKS[task]).bind(work=None, **kwargs)
    assert order[:5] == ["Σ-2K build transformer", "Σ-2K build vae_decoder", "Σ-2K convert transformer",
                         "Σ-2K convert vae_decoder", "Σ-2K calibrate W8A8"]
    assert order[5:-3] == [f"Σ-2K compress {variant} transformer" for variant in SIGMA_2K_VARIANTS[1:]]
    *_, (step_key, step_task, step), (decode_key, decode_task, decode), (tiled_key, _, tiled) = steps
    assert step_task == "side_by_side" and step["variants"] == list(SIGMA_2K_VARIANTS) == ["FP16", "INT8", "W8A8"]
    assert step_key == f"Σ-2K step {step['size']}" and (step["size"], step["shape"]) == SIGMA_2K_STEP[quick]
    assert decode_task == "latency" and decode["engine"] == "ov-FP16" and decode["component"] == "vae_decoder"
    label, shape = SIGMA_2K_DECODE[quick]
    assert decode_key == f"Σ-2K decode {label}" and decode["sizes"] == {label: shape} and decode["runs"] == 1
    assert tiled_key == f"Σ-2K decode {label} in tiles" and tiled == {**decode, "tiling": True}


def test_the_sigma_2k_step_is_16384_tokens_without_micro_conditions():
    config = types.SimpleNamespace(**{**full_size_configs()["transformer"], **SIGMA_TRANSFORMER, "sample_size": 256})
    size, shape = SIGMA_2K_STEP[False]
    inputs = example_inputs("transformer", shape, config, torch.float32)
    assert size == "2048² b1" and SIGMA_2K_DECODE[False] == ("2048²", {"side": 256, "batch": 1})  # latents of 256²
    assert {name: tuple(value.shape) for name, value in inputs.items()} == {
        "hidden_states": (1, 4, 256, 256), "encoder_hidden_states": (1, 120, 4096), "encoder_attention_mask": (1, 120), "timestep": (1,)}
    assert (256 // config.patch_size) ** 2 == 16384
