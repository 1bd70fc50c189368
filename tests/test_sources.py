"""Model sources: the small PixArt built offline, local folders, and the offline error for hub ids."""

import hashlib

import pytest
import torch
from diffusers import PixArtAlphaPipeline

from helpers.building import (
    TINY_T5_CONFIG,
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_CONFIG,
    build_random,
    build_random_pipeline,
    build_tiny_pipeline,
)
from helpers.checkpoints import stored_dtypes
from helpers.conversion import load_torch_part
from helpers.settings import (
    DEFAULT_MODEL_ID,
    LCM_RECIPE,
    MODEL_ROOT,
    STANDARD_RECIPE,
    model_id_from_env,
    model_name,
    recipe_for,
)
from helpers.sizes import sample_size_of, size_choices
from helpers.sources import ModelSourceError, resolve_model_source
from helpers.variants import variant_dir


def _digests(folder):
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_tiny_builds_identically_twice(tiny_source, tmp_path):
    again = build_tiny_pipeline(tmp_path / "again")
    weights = {k: v for k, v in _digests(tiny_source).items() if k.endswith((".safetensors", ".json"))}
    assert weights == {k: v for k, v in _digests(again).items() if k in weights}
    assert any(k.startswith("transformer/") and k.endswith(".safetensors") for k in weights)


def test_tiny_takes_the_real_checkpoints_code_paths(tiny_source):
    pipe = PixArtAlphaPipeline.from_pretrained(tiny_source)
    assert pipe.transformer.config.sample_size == 128  # resolution/aspect-ratio conditions and 1024 bins
    assert pipe.transformer.use_additional_conditions
    assert pipe.vae_scale_factor == 8
    assert type(pipe.scheduler).__name__ == "LCMScheduler"
    assert recipe_for(pipe.scheduler) == LCM_RECIPE


def test_tiny_standard_uses_dpm_solver(tiny_standard_source):
    pipe = PixArtAlphaPipeline.from_pretrained(tiny_standard_source)
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert recipe_for(pipe.scheduler) == STANDARD_RECIPE


def test_tiny_tokenizer_knows_words(tiny_source):
    pipe = PixArtAlphaPipeline.from_pretrained(tiny_source)
    ids = pipe.tokenizer("a red circle at the top left").input_ids
    assert ids[-1] == pipe.tokenizer.eos_token_id
    assert pipe.tokenizer.unk_token_id not in ids  # transformers 5's T5Tokenizer(vocab_file=...) maps all to unk


def test_interrupted_build_leaves_nothing_that_loads(tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PixArtAlphaPipeline, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_pipeline(tmp_path / "tiny")
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_offline_names_the_ways_forward(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as error:
        resolve_model_source("PixArt-alpha/no-such-model-here")
    assert "PIXART_MODEL_ID=tiny" in str(error.value)
    assert "folder" in str(error.value)


def test_local_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="model_index.json"):
        resolve_model_source(str(tmp_path))


def test_local_diffusers_folder_is_used_as_is(tiny_source):
    assert resolve_model_source(str(tiny_source)) == tiny_source


def test_paths_derive_from_the_model_id():
    assert model_name("PixArt-alpha/PixArt-LCM-XL-2-1024-MS") == "PixArt-LCM-XL-2-1024-MS"
    assert variant_dir("tiny", "INT8").parts[-2:] == ("tiny", "INT8")


def test_model_id_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("PIXART_MODEL_ID", raising=False)
    assert model_id_from_env() == DEFAULT_MODEL_ID
    monkeypatch.setenv("PIXART_MODEL_ID", "tiny")
    assert model_id_from_env() == "tiny"


def test_untrained_shapes_model_says_how_to_make_it(tmp_path):
    with pytest.raises(ModelSourceError, match="python -m helpers train"):
        resolve_model_source("shapes", root=tmp_path)


def test_a_folder_given_as_dot_dot_is_named_by_where_it_is(tmp_path, monkeypatch):
    (tmp_path / "pixart-512" / "diffusers" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "pixart-512" / "diffusers" / "sub")
    assert model_name("..") == "pixart-512" and model_name("../../diffusers/..") == "pixart-512"
    assert variant_dir("..", "FP16", tmp_path / "model") == tmp_path / "model" / "pixart-512" / "FP16"  # not model/../FP16
    for nameless in ("/", "no/such/..", ""):
        with pytest.raises(ValueError, match="names no model: give a hub id"):
            model_name(nameless)


@pytest.mark.parametrize("variant", ["..", "../../x", "FP16/../../x", "a/b", "/tmp/x", "a\\b", ""])
def test_variant_names_outside_the_model_folder_are_refused(variant, tmp_path):
    with pytest.raises(ValueError, match="is not a folder name: give one of the model's variant folders"):
        variant_dir("tiny", variant, tmp_path)


def test_diffusers_folders_are_named_after_their_parent():
    assert model_name("model/shapes-notebook/diffusers") == "shapes-notebook"
    assert variant_dir("model/tiny/diffusers", "INT8") == MODEL_ROOT / "tiny" / "INT8"


def test_build_random_makes_a_512_bin_checkpoint_with_an_fp32_encoder_stored_like_the_real_one(tmp_path):
    folder = build_random(tmp_path / "pixart-512" / "diffusers", preset="tiny", sample_size=64, scheduler="dpm")
    assert resolve_model_source(str(folder)) == folder and model_name(folder) == "pixart-512"
    pipe = PixArtAlphaPipeline.from_pretrained(folder)
    assert pipe.transformer.config.sample_size == 64 and not pipe.transformer.use_additional_conditions
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert size_choices(sample_size_of(folder))[0] == "512×512"
    assert stored_dtypes(folder / "text_encoder") == {"F32"}


def test_build_random_stores_a_bf16_built_encoder_in_fp32(tmp_path):
    folder = build_random_pipeline(
        tmp_path / "m", TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, TINY_T5_CONFIG,
        text_encoder_dtype=torch.bfloat16,
    )
    assert stored_dtypes(folder / "text_encoder") == {"F32"}
    assert not list(tmp_path.glob("**/*.fp32")) and not list(tmp_path.glob(".*partial"))
    encoder = load_torch_part(folder, "text_encoder")
    assert encoder.dtype == torch.float32 and all(p.isfinite().all() for p in encoder.parameters())


@pytest.mark.parametrize("kwargs,message", [(dict(preset="huge"), "Unknown preset 'huge'"), (dict(scheduler="ddim"), "Unknown scheduler 'ddim'")])
def test_build_random_names_bad_choices(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_random(tmp_path / "x", **kwargs)
