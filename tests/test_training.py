"""Training: the noise schedule's terms, the loss, the feature cache, the VAE fit, a transformer that learns, and the
whole run: its stages as notebook 6 calls them, and all of them for real at a tiny size."""

import ast
import copy
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from helpers import training, training_vae
from helpers.settings import model_name
from helpers.shapes import all_scenes, render
from helpers.sources import resolve_model_source
from helpers.training import continue_from, dataset_size_for, save_pipeline, start_pipeline
from helpers.training_features import cache_features, encode_captions
from helpers.training_transformer import (
    DiffusionTerms,
    TrainingPlan,
    learning_rate_factor,
    pixart_loss,
    sample_batch,
    train_transformer,
)
from helpers.training_vae import encode_pictures, fit_vae_once, pictures_to_tensor, train_vae, vae_steps_for

NOTEBOOK_6 = Path(__file__).parents[1] / "notebooks" / "06-fine-tune.ipynb"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A training work folder, its starting pipeline built once for the module."""
    return tmp_path_factory.mktemp("shapes")


@pytest.fixture(scope="module")
def start(work):
    """The untrained shapes pipeline (frozen random T5, untrained VAE and transformer)."""
    return start_pipeline(work / "start")


@pytest.fixture(scope="module")
def pictures():
    scenes = all_scenes()[::105][:8]
    return [render(scene, 64, 64) for scene in scenes], [scene.caption for scene in scenes]


def test_start_pipeline_has_the_real_architecture_at_256(start):
    assert type(start.transformer).__name__ == "PixArtTransformer2DModel" and start.transformer.config.out_channels == 8
    assert start.transformer.config.sample_size * start.vae_scale_factor == 256  # the 256 aspect-ratio bins
    assert type(start.scheduler).__name__ == "DPMSolverMultistepScheduler"


def _swapped_colour_distance(pipe) -> float:
    """How far apart, relative to their length, the token vectors of two captions that swap their colours are."""
    captions = ["a red circle at the center on a blue background", "a blue circle at the center on a red background"]
    embeddings, masks = encode_captions(pipe, captions)
    count = int(masks[0].sum())
    nearest = torch.cdist(embeddings[0, :count], embeddings[1, :count]).min(dim=1).values
    return float((nearest / embeddings[0, :count].norm(dim=-1)).mean())


def test_frozen_t5_tells_the_shape_colour_from_the_background_colour(tmp_path):
    """A random T5 gives swapped captions nearly the same set of token vectors; the contextual one does not."""
    from diffusers import PixArtAlphaPipeline

    start = start_pipeline(tmp_path / "start")
    random_t5 = PixArtAlphaPipeline.from_pretrained(tmp_path / "start")
    assert _swapped_colour_distance(random_t5) < 0.1
    assert _swapped_colour_distance(start) > 0.4
    projection = start.transformer.caption_projection.linear_2.weight
    assert torch.allclose(projection, 20 * random_t5.transformer.caption_projection.linear_2.weight)


def test_noise_is_added_like_diffusers(start):
    from diffusers import DDPMScheduler

    terms = DiffusionTerms(start.scheduler.config)
    x0, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    expected = DDPMScheduler.from_config(start.scheduler.config).add_noise(x0, noise, t)
    assert torch.allclose(terms.add_noise(x0, noise, t), expected, atol=1e-5)


def test_variance_loss_is_zero_only_for_the_true_posterior(start):
    terms = DiffusionTerms(start.scheduler.config)
    x0, noise, t = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8), torch.tensor([1, 10, 500, 999])
    xt = terms.add_noise(x0, noise, t)
    posterior = -torch.ones_like(x0)  # -1: the posterior's own variance
    assert terms.variance_loss(posterior, noise, x0, xt, t).item() == pytest.approx(0.0, abs=1e-5)
    assert terms.variance_loss(posterior, noise + 0.5, x0, xt, t).item() > 1e-3  # wrong mean
    assert terms.variance_loss(torch.ones_like(x0), noise, x0, xt, t).item() > 1e-4  # wrong variance


def test_caption_dropout_swaps_in_an_unconditional_caption():
    features = {
        "latents": torch.randn(4, 4, 8, 8), "embeddings": torch.ones(4, 6, 32), "masks": torch.ones(4, 6, dtype=torch.long),
        "null_embeddings": torch.zeros(2, 6, 32), "null_masks": torch.zeros(2, 6, dtype=torch.long),
    }
    generator = torch.Generator().manual_seed(0)
    _, embeddings, masks = sample_batch(features, TrainingPlan(batch_size=8, caption_dropout=1.0), generator)
    assert embeddings.abs().sum() == 0 and masks.sum() == 0
    _, embeddings, _ = sample_batch(features, TrainingPlan(batch_size=8, caption_dropout=0.0), generator)
    assert torch.all(embeddings == 1)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    plan = TrainingPlan(steps=1000, warmup_steps=100)
    factors = [learning_rate_factor(step, plan) for step in range(plan.steps + 1)]
    # linear from 0 to the peak over the warm-up (transformers' schedule starts at 0, not at 1/warmup_steps)
    assert factors[0] == pytest.approx(0.0) and factors[99] == pytest.approx(0.99) and factors[100] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[100:], factors[101:]))  # never rises after the warm-up
    assert factors[550] == pytest.approx(0.55) and factors[-1] == pytest.approx(0.1)


def test_run_sizes_follow_the_transformer_steps():
    """One rule each, for the command and notebook 6: 2048 pictures (256 for a short run), the VAE half as long."""
    assert dataset_size_for(4000) == dataset_size_for(1000) == 2048 and dataset_size_for(100) == 256
    assert vae_steps_for(4000) == 2000 and vae_steps_for(100) == 50 and vae_steps_for(10) == 20


STAGES = ("prepare_data", "start_pipeline", "continue_from", "pictures_to_tensor", "fit_vae_once", "cache_features",
          "train_transformer", "save_pipeline")


def notebook_stage_calls(namespace: dict) -> list[tuple[str, tuple, dict]]:
    """The stage functions notebook 6's code cells call, in their order, each call's arguments evaluated with the
    notebook's names bound as in ``namespace``."""
    cells = nbformat.read(NOTEBOOK_6, as_version=4).cells
    calls = [sorted((node for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Name) and node.func.id in STAGES), key=lambda node: (node.lineno, node.col_offset))
             for cell in cells if cell.cell_type == "code"]

    def value(node):
        return eval(compile(ast.Expression(node), NOTEBOOK_6.name, "eval"), dict(namespace))

    return [(call.func.id, tuple(map(value, call.args)), {word.arg: value(word.value) for word in call.keywords})
            for cell in calls for call in cell]


def test_whole_training_calls_the_stages_as_notebook_6_does(tmp_path, monkeypatch):
    """``train_shapes_model``, its stages stood in for (each is tested on its own above and below, and together in
    the next test): the same stage calls as notebook 6's cells make, in their order, with the same arguments."""
    calls, plan = [], TrainingPlan(steps=100, device="cpu", seed=3)
    dataset = {"image": ["picture"] * 256}
    results = {"prepare_data": dataset, "start_pipeline": "pipe", "continue_from": "trained pipe", "pictures_to_tensor": "pictures",
               "fit_vae_once": [1.0], "cache_features": "features", "train_transformer": [{"loss": 1.0}]}

    def stand_in(name):
        def stage(*args, **kwargs):
            calls.append((name, args, kwargs))
            return results.get(name)
        return stage

    for name in STAGES:
        monkeypatch.setattr(training, name, stand_in(name))
    lines = []
    training.train_shapes_model(tmp_path / "out", tmp_path, plan, report=lines.append)
    # the notebook's settings cell, with the stand-ins' results for what its cells make
    namespace = {"WORK": tmp_path, "OUT": tmp_path / "out", "plan": plan, "DATASET_SIZE": dataset_size_for(plan.steps),
                 "VAE_STEPS": vae_steps_for(plan.steps), "dataset": dataset, "pipe": "pipe", "pictures": "pictures",
                 "features": "features", "draw_samples": None}
    notebook = [(name, args, {word: value for word, value in kwargs.items() if word != "on_sample"})  # its pictures as it learns
                for name, args, kwargs in notebook_stage_calls(namespace)]
    assert [name for name, _, _ in notebook] == [
        "prepare_data", "start_pipeline", "pictures_to_tensor", "fit_vae_once", "cache_features", "train_transformer", "save_pipeline",
    ]
    assert calls == notebook and len(lines) == 3

    calls.clear()
    training.train_shapes_model(tmp_path / "out", tmp_path, plan, dataset_size=8, report=lines.append, resume=tmp_path / "trained")
    assert [name for name, _, _ in calls] == ["prepare_data", "continue_from", "cache_features", "train_transformer", "save_pipeline"]
    assert calls[0][1] == (tmp_path, 8, 3) and calls[1][1] == (tmp_path / "trained",) and calls[-1][1] == ("trained pipe", tmp_path / "out")


def test_whole_training_runs_its_real_stages_at_a_tiny_size(work, start):
    """``python -m helpers train``'s code with nothing stood in for: 8 pictures, 2 VAE steps, 2 transformer steps
    (a few seconds: the module's starting model is reused), then 2 more resumed from the model it saved."""
    plan = TrainingPlan(steps=2, batch_size=4, warmup_steps=1)
    lines = []
    result = training.train_shapes_model(work / "out", work, plan, dataset_size=8, vae_steps=2, report=lines.append)
    assert len(result["vae_losses"]) == 2 and [h["step"] for h in result["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in result["history"]) and set(result["seconds"]) == {"data", "vae", "features", "transformer"}
    assert lines[0].startswith("8 captioned pictures") and lines[1].startswith("VAE fitted") and len(lines) == 3
    trained = continue_from(work / "out")
    assert not torch.equal(trained.transformer.proj_out.weight, start.transformer.proj_out.weight)  # trained, and saved so
    resumed = training.train_shapes_model(work / "resumed", work, plan, dataset_size=8, report=lines.append, resume=work / "out")
    assert resumed["vae_losses"] == [] and len(resumed["history"]) == 2 and lines[4] == f"VAE kept from {work / 'out'}"
    assert torch.equal(continue_from(work / "resumed").vae.decoder.conv_out.weight, trained.vae.decoder.conv_out.weight)


def test_vae_fit_sets_a_unit_variance_scaling_factor(start, pictures):
    images, _ = pictures
    tensor = pictures_to_tensor(images)
    assert tensor.shape == (8, 3, 64, 64) and tensor.min() >= -1 and tensor.max() <= 1
    vae = type(start.vae).from_config(start.vae.config)
    losses = train_vae(vae, tensor, steps=3, batch_size=2)
    assert len(losses) == 3 and all(np.isfinite(losses))
    latents = encode_pictures(vae, tensor)
    assert latents.shape == (8, 4, 8, 8)
    assert latents.std().item() == pytest.approx(1.0, rel=0.05)


def test_features_are_cached_once_and_recomputed_for_another_vae(start, pictures, tmp_path):
    import datasets

    images, captions = pictures
    dataset = datasets.Dataset.from_dict({"image": images, "text": captions}).cast_column("image", datasets.Image())
    path = tmp_path / "features.safetensors"
    features = cache_features(start, dataset, path)
    assert features["latents"].shape == (8, 4, 8, 8) and features["embeddings"].shape[:2] == (8, 32)
    assert features["masks"].sum(1).min() > 1 and features["null_embeddings"].shape[0] == 2
    written = path.stat().st_mtime_ns
    assert torch.equal(cache_features(start, dataset, path)["latents"], features["latents"])
    assert path.stat().st_mtime_ns == written  # loaded, not recomputed
    other = type(start.vae).from_config(start.vae.config)  # new random weights
    pipe = type(start)(**{**start.components, "vae": other})
    assert not torch.equal(cache_features(pipe, dataset, path)["latents"], features["latents"])


def test_fitted_vae_is_kept_and_reused(start, pictures, tmp_path, monkeypatch):
    """A second run with the same recipe loads the fitted VAE instead of fitting it again; another recipe refits."""
    import copy

    tensors = pictures_to_tensor(pictures[0])
    first = copy.deepcopy(start)
    losses = fit_vae_once(first, tensors, tmp_path / "vae", 3)
    assert len(losses) == 3 and (tmp_path / "vae" / "fit.json").is_file()

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitted again")

    second = copy.deepcopy(start)
    monkeypatch.setattr(training_vae, "train_vae", no_fitting)
    assert fit_vae_once(second, tensors, tmp_path / "vae", 3) == losses
    assert all(torch.equal(a, b) for a, b in zip(first.vae.state_dict().values(), second.vae.state_dict().values()))
    with pytest.raises(AssertionError, match="fitted again"):
        fit_vae_once(second, tensors, tmp_path / "vae", 4)


def test_captions_longer_than_the_cache_length_are_refused(start):
    with pytest.raises(ValueError, match="longer than 4 tokens"):
        encode_captions(start, ["a red circle at the top left on a blue background"], max_length=4)


def test_transformer_learns_a_batch(start, pictures):
    """A few steps on 8 cached pictures lower the loss measured at fixed timesteps and noise."""
    images, captions = pictures
    latents = encode_pictures(start.vae, pictures_to_tensor(images))
    embeddings, masks = encode_captions(start, captions)
    features = {"latents": latents, "embeddings": embeddings, "masks": masks, "null_embeddings": embeddings[:1], "null_masks": masks[:1]}
    transformer = type(start.transformer).from_config(start.transformer.config)
    pipe = type(start)(**{**start.components, "transformer": transformer})
    terms = DiffusionTerms(start.scheduler.config)

    def fixed_loss() -> float:
        with torch.no_grad():
            return pixart_loss(transformer, terms, latents, embeddings, masks, torch.Generator().manual_seed(7))[0].item()

    before = fixed_loss()
    plan = TrainingPlan(steps=30, batch_size=8, learning_rate=1e-3, warmup_steps=1, caption_dropout=0.0, sample_every=15)
    sampled = []
    history = train_transformer(pipe, features, plan, on_sample=sampled.append)
    assert [h["step"] for h in history] == list(range(1, 31)) and sampled == [15, 30]
    assert all(np.isfinite(h["loss"]) and h["vlb"] >= 0 for h in history)
    assert fixed_loss() < 0.8 * before
    assert not transformer.training


def test_saved_pipeline_is_a_model_the_product_accepts(start, tmp_path):
    folder = save_pipeline(start, tmp_path / "trained" / "diffusers")
    assert resolve_model_source(str(folder)) == folder
    assert model_name(str(folder)) == "trained"
    assert not list(folder.parent.glob(".*partial"))


def test_training_resumes_from_a_saved_model(start, tmp_path):
    trained = copy.deepcopy(start)
    with torch.no_grad():  # each part differs from a fresh starting model's
        trained.transformer.proj_out.weight.add_(1.0)
        trained.vae.decoder.conv_out.weight.add_(1.0)
    folder = save_pipeline(trained, tmp_path / "trained" / "diffusers")
    resumed = continue_from(folder)
    assert torch.equal(resumed.transformer.proj_out.weight, trained.transformer.proj_out.weight)
    assert torch.equal(resumed.vae.decoder.conv_out.weight, trained.vae.decoder.conv_out.weight)
    t5_output = [pipe.text_encoder.encoder.block[0].layer[0].SelfAttention.o.weight for pipe in (resumed, start)]
    assert torch.equal(*t5_output), "the saved T5 (contextual once) is taken as it is"
    assert resumed.tokenizer("a red circle").input_ids == start.tokenizer("a red circle").input_ids
    with pytest.raises(FileNotFoundError, match="give the folder a training run saved"):
        continue_from(tmp_path / "nothing")
