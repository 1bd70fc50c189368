"""The OpenVINO pipeline in the habits its users bring: diffusers' call draws diffusers' picture, and optimum-intel's
``from_pretrained`` (``export=True``), ``save_pretrained``, ``to(device)`` and ``compile()``."""

import os

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline

from helpers.pipeline import OVPixArtAlphaPipeline, OVPixArtPipeline, OVPixArtSigmaPipeline
from helpers.settings import F32_CONFIG
from helpers.variants import MODEL_INDEX, Variant, read_index

# FP16-stored weights against fp32 PyTorch, both in f32: about 6e-4 of the pixel range measured on the tiny models.
# An invented default (a negative prompt diffusers does not use) moved pixels by 0.13.
MAX_PIXEL_DIFFERENCE = 0.01
SIZE = dict(height=192, width=320, use_resolution_binning=False)  # not square, not a bin
GUIDED = dict(num_inference_steps=3, guidance_scale=4.5)


def seeded(seed: int = 3) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def draw_with(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    """3 guided steps of one prompt at 320×192, as an array."""
    return pipe(prompt, generator=seeded(seed), output_type="np", **GUIDED, **SIZE, **kwargs).images


def draw(pipe) -> np.ndarray:
    return draw_with(pipe, "a red circle", 3)


@pytest.fixture(scope="module")
def families(tiny_standard_source, tiny_standard_variant, sigma_source, sigma_variant):
    """diffusers' own pipeline and the OpenVINO one (f32 hint), α and Σ, both guided by their scheduler's recipe."""
    return {
        "α": (PixArtAlphaPipeline.from_pretrained(tiny_standard_source), OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG)),
        "Σ": (PixArtSigmaPipeline.from_pretrained(sigma_source), OVPixArtPipeline.from_pretrained(sigma_variant, "CPU", F32_CONFIG)),
    }


def assert_same_pictures(expected: np.ndarray, actual: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert 0.0 <= actual.min() and actual.max() <= 1.0 and actual.std() > 0
    assert np.abs(actual - expected).max() < MAX_PIXEL_DIFFERENCE


@pytest.mark.parametrize("family", ["α", "Σ"])
def test_diffusers_call_with_its_defaults_draws_diffusers_picture(families, family):
    reference, ov_pipe = families[family]
    # diffusers' defaults: 20 steps, guidance 4.5, no negative prompt, which the standard recipe keeps
    expected = reference("a red circle", generator=seeded(), output_type="np", **SIZE).images
    actual = ov_pipe("a red circle", generator=seeded(), output_type="np", **SIZE).images
    assert_same_pictures(expected, actual)


@pytest.mark.parametrize("family", ["α", "Σ"])
def test_several_prompts_two_pictures_each_and_a_negative_prompt(families, family):
    reference, ov_pipe = families[family]
    kwargs = dict(prompt=["a red circle", "a blue square"], negative_prompt="a green triangle", num_images_per_prompt=2,
                  output_type="np", **GUIDED, **SIZE)
    expected = reference(generator=seeded(), **kwargs).images
    actual = ov_pipe(generator=seeded(), **kwargs).images
    assert actual.shape == (4, 192, 320, 3)
    assert_same_pictures(expected, actual)
    assert not np.array_equal(actual[0], actual[1])  # two pictures of one prompt, two noises


@pytest.mark.parametrize("family", ["α", "Σ"])
def test_embeddings_passed_in_draw_the_prompts_picture(families, family):
    reference, ov_pipe = families[family]
    names = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
    ours = dict(zip(names, ov_pipe.encode_prompt("a blue square", do_classifier_free_guidance=True)))
    theirs = dict(zip(names, reference.encode_prompt("a blue square", do_classifier_free_guidance=True)))
    # diffusers refuses its default negative prompt ("") beside negative embeddings: None, as there
    from_embeddings = ov_pipe(negative_prompt=None, generator=seeded(), output_type="np", **ours, **GUIDED, **SIZE).images
    from_prompt = ov_pipe("a blue square", generator=seeded(), output_type="np", **GUIDED, **SIZE).images
    expected = reference(negative_prompt=None, generator=seeded(), output_type="np", **theirs, **GUIDED, **SIZE).images
    assert np.array_equal(from_embeddings, from_prompt)
    assert_same_pictures(expected, from_embeddings)


def test_positional_arguments_mean_what_they_mean_in_diffusers(families):
    reference, ov_pipe = families["α"]
    # diffusers' order: prompt, negative_prompt, num_inference_steps
    expected = reference("a red circle", "a blue square", 3, generator=seeded(), output_type="np", **SIZE).images
    actual = ov_pipe("a red circle", "a blue square", 3, generator=seeded(), output_type="np", **SIZE).images
    assert_same_pictures(expected, actual)
    with pytest.raises(TypeError, match="multiple values for argument 'negative_prompt'"):
        ov_pipe("a red circle", "a blue square", negative_prompt="a cat")


@pytest.mark.parametrize("family,names,pipeline_class", [
    ("α", ("tiny_standard_source", "tiny_standard_variant"), OVPixArtAlphaPipeline),
    ("Σ", ("sigma_source", "sigma_variant"), OVPixArtSigmaPipeline),
])
def test_export_converts_a_diffusers_folder_then_loads_it(request, families, family, names, pipeline_class):
    # the shared variants are made by from_pretrained(source, export=True, export_dir=...) (conftest.py)
    source, exported = map(request.getfixturevalue, names)
    assert read_index(exported)["source"] == str(source)
    written = (exported / MODEL_INDEX).stat().st_mtime_ns
    pipe = OVPixArtPipeline.from_pretrained(source, "CPU", F32_CONFIG, export=True, export_dir=exported)
    assert (exported / MODEL_INDEX).stat().st_mtime_ns == written  # finished: loaded, not converted again
    assert isinstance(pipe, pipeline_class) and pipe.variant.folder == exported
    reference, _ = families[family]
    expected = reference("a red circle", generator=seeded(), output_type="np", **GUIDED, **SIZE).images
    assert_same_pictures(expected, pipe("a red circle", generator=seeded(), output_type="np", **GUIDED, **SIZE).images)


def test_save_pretrained_loads_back_to_the_same_pictures_bit_for_bit(tiny_standard_variant, tmp_path):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG)
    saved = pipe.save_pretrained(tmp_path / "saved")
    assert isinstance(saved, Variant) and saved.damaged_files(checksums=True) == {}
    assert saved.subfolders == ["scheduler", "text_encoder", "tokenizer", "transformer", "vae_decoder", "vae_encoder", "vae_tiny_decoder"]
    weights = "transformer/openvino_model.bin"
    assert os.path.samefile(tmp_path / "saved" / weights, tiny_standard_variant / weights)  # linked, not copied
    assert not list(tmp_path.glob(".*"))  # no temporary folder left
    loaded = OVPixArtPipeline.from_pretrained(tmp_path / "saved", "CPU", F32_CONFIG)
    assert np.array_equal(draw(loaded), draw(pipe))
    with pytest.raises(ValueError, match="it was loaded from there"):
        loaded.save_pretrained(tmp_path / "saved")


def test_a_step_cached_pipeline_saves_its_threshold(tiny_standard_variant, tmp_path):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, step_cache=0.3)
    loaded = OVPixArtPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "cached"), "CPU", F32_CONFIG)
    assert loaded.step_cache_threshold == 0.3
    drawn = [pipe_("a red circle", generator=seeded(3), output_type="np", **GUIDED, **SIZE) for pipe_ in (loaded, pipe)]
    assert np.array_equal(drawn[0].images, drawn[1].images) and drawn[0].record.reused == drawn[1].record.reused is not None
    assert OVPixArtPipeline.from_pretrained(tmp_path / "cached", "CPU", step_cache=False, compile=False).step_cache_threshold is None


def test_save_pretrained_keeps_the_scheduler_set_at_run_time(tiny_standard_variant, tmp_path):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, compile=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # diffusers' way to swap it
    loaded = OVPixArtPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "euler"), "CPU", F32_CONFIG)
    assert isinstance(loaded.scheduler, EulerDiscreteScheduler)
    assert np.array_equal(draw(loaded), draw(pipe))


def test_a_save_cut_short_leaves_no_folder(tiny_standard_variant, tmp_path, monkeypatch):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", compile=False)

    def killed(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipe.scheduler, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        pipe.save_pretrained(tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_a_w8a8_variant_saves_and_loads_back_bit_for_bit(tiny_compressed, tmp_path):
    pipe = OVPixArtPipeline.from_pretrained(tiny_compressed["W8A8"], "CPU", F32_CONFIG)
    loaded = OVPixArtPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "W8A8"), "CPU", F32_CONFIG)
    assert loaded.variant.compression == pipe.variant.compression and loaded.variant.compression["transformer"]["mode"] == "w8a8"
    prompt = dict(prompt="a red circle", height=256, width=256, use_resolution_binning=False, output_type="np")
    assert np.array_equal(loaded(generator=seeded(), **prompt).images, pipe(generator=seeded(), **prompt).images)


@pytest.mark.parametrize("device", ["CPU", "cpu", torch.device("cpu")])
def test_to_a_device_compiles_for_it(tiny_standard_variant, device):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG)
    before = draw(pipe)
    assert pipe.to(device) is pipe
    assert {part.device_name for part in pipe.parts} == {"CPU"} and all(part.is_compiled for part in pipe.parts)
    assert np.array_equal(draw(pipe), before)
    assert pipe.to("cpu", torch.float32) is pipe and pipe.device == torch.device("cpu")  # diffusers' pipe.device


def test_to_an_unknown_device_or_another_dtype_says_what_to_do(tiny_standard_variant):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", compile=False)
    with pytest.raises(ValueError, match=r"Unknown device 'CUDA': choose one of .*CPU.*AUTO"):
        pipe.to("cuda")
    with pytest.raises(ValueError, match=r"INFERENCE_PRECISION_HINT"):
        pipe.to(torch.bfloat16)
    assert {part.device_name for part in pipe.parts} == {"CPU"}


def test_compile_false_then_compile(tiny_standard_variant):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG, compile=False)
    assert not any(part.is_compiled for part in pipe.parts)
    pipe.compile()
    assert all(part.is_compiled for part in pipe.parts)
    pipe.to("CPU")  # compiled again at once, as it was compiled
    assert all(part.is_compiled for part in pipe.parts)


def test_compile_on_a_static_only_device_before_reshape_names_the_reshape(tiny_standard_variant):
    pipe = OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", compile=False)
    for part in pipe.parts:
        part.move_to("NPU")  # no NPU here: what compile() says before it would compile for one
    with pytest.raises(ValueError, match=r"NPU compiles static shapes only: .*pipe\.reshape\(batch_size=1, height=1024, width=1024"):
        pipe.compile()
    assert not any(part.is_compiled for part in pipe.parts)


def test_a_batch_draws_the_pictures_of_its_prompts_one_by_one(families):
    _, ov_pipe = families["α"]
    batch = ov_pipe(["a red circle", "a blue square"], generator=[seeded(1), seeded(2)], output_type="np", **GUIDED, **SIZE).images
    one_by_one = [draw_with(ov_pipe, prompt, seed) for prompt, seed in (("a red circle", 1), ("a blue square", 2))]
    assert np.abs(batch - np.concatenate(one_by_one)).max() < 1e-4


def test_return_dict_false_gives_diffusers_tuple(families):
    _, ov_pipe = families["α"]
    output = draw(ov_pipe)
    as_tuple = ov_pipe("a red circle", generator=seeded(), output_type="np", return_dict=False, **GUIDED, **SIZE)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and np.array_equal(as_tuple[0], output)


@pytest.mark.parametrize("family", ["α", "Σ"])
def test_a_step_callback_that_edits_the_latents_edits_the_picture_as_in_diffusers(families, family):
    reference, ov_pipe = families[family]
    steps = {"diffusers": [], "OpenVINO": []}

    def shift_latents_at_step_1(engine):
        def callback(step, timestep, latents):
            steps[engine].append(step)
            if step == 1:
                latents.add_(3.0)  # in place: the loop goes on from the edited latents
        return callback

    def latents(pipe, **kwargs):  # the denoised latents: the tiny VAE's pictures barely show an edit
        return pipe("a red circle", generator=seeded(), output_type="latent", **GUIDED, **SIZE, **kwargs).images.numpy()

    expected = latents(reference, callback=shift_latents_at_step_1("diffusers"))
    actual = latents(ov_pipe, callback=shift_latents_at_step_1("OpenVINO"))
    assert steps["OpenVINO"] == steps["diffusers"] == [0, 1, 2]
    # the random tiny transformer's latents reach hundreds: FP16-stored weights round them by about 2e-4 of that
    assert actual.shape == (1, 4, 24, 40) and np.abs(actual - expected).max() < 1e-3 * np.abs(expected).max()
    assert np.abs(actual - latents(ov_pipe)).mean() > 1.0  # the edit is in the result


def test_progress_bar_config_and_components_are_diffusers(families, capsys):
    _, ov_pipe = families["α"]
    ov_pipe.set_progress_bar_config(disable=False)
    draw(ov_pipe)
    assert "3/3" in capsys.readouterr().err  # diffusers' tqdm over the steps
    ov_pipe.set_progress_bar_config(disable=True)
    draw(ov_pipe)
    assert "3/3" not in capsys.readouterr().err
    components = ov_pipe.components
    assert set(components) == {"tokenizer", "text_encoder", "transformer", "vae", "scheduler"}
    # diffusers' own pipeline over the OpenVINO parts: the same picture, for the same arguments
    plain = PixArtAlphaPipeline(**components)
    plain.set_progress_bar_config(disable=True)
    assert np.array_equal(draw(plain), draw(ov_pipe))
