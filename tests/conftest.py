"""Shared fixtures: the small PixArt models built offline and converted once per test session."""

from pathlib import Path

import pytest
import torch
from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel

from helpers.compression import calibration_prompts, collect_calibration_data, compress_variant
from helpers.conversion import convert_pipeline
from helpers.pipeline import OVPixArtPipeline
from helpers.schemes import COMPRESSION_SCHEMES
from helpers.settings import F32_CONFIG
from helpers.sources import resolve_model_source
from helpers.variants import variant_dir


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="session")
def tiny_source(model_root) -> Path:
    return resolve_model_source("tiny", root=model_root)


@pytest.fixture(scope="session")
def tiny_standard_source(model_root) -> Path:
    return resolve_model_source("tiny-standard", root=model_root)


@pytest.fixture(scope="session")
def sigma_source(model_root) -> Path:
    return resolve_model_source("tiny-sigma", root=model_root)


@pytest.fixture(scope="session")
def sigma_variant(model_root, sigma_source) -> Path:
    """Converted as optimum-intel users convert: ``from_pretrained(diffusers_folder, export=True)``."""
    folder = variant_dir("tiny-sigma", "FP16", root=model_root)
    OVPixArtPipeline.from_pretrained(sigma_source, export=True, export_dir=folder, compile=False)
    return folder


@pytest.fixture(scope="session")
def tiny_variant(model_root, tiny_source) -> Path:
    folder = variant_dir("tiny", "FP16", root=model_root)
    convert_pipeline(tiny_source, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_standard_variant(model_root, tiny_standard_source) -> Path:
    """Converted by ``from_pretrained(diffusers_folder, export=True)``, as ``sigma_variant``."""
    folder = variant_dir("tiny-standard", "FP16", root=model_root)
    OVPixArtPipeline.from_pretrained(tiny_standard_source, export=True, export_dir=folder, compile=False)
    return folder


@pytest.fixture(scope="session")
def tiny_compressed(model_root, tiny_variant) -> dict:
    """The INT8, INT4-T5 and W8A8 variants of the tiny model, by name (W8A8 calibrated on 2 prompts at 256²)."""
    calibration = collect_calibration_data(tiny_variant, calibration_prompts("tiny", 2), height=256, width=256)
    folders = {}
    for name, scheme in COMPRESSION_SCHEMES.items():
        folders[name] = variant_dir("tiny", name, root=model_root)
        compress_variant(tiny_variant, folders[name], scheme, report=lambda message: None, calibration=calibration)
    return folders


@pytest.fixture(scope="module")
def pipelines(tiny_source, tiny_variant, tiny_standard_source, tiny_standard_variant):
    """diffusers' PyTorch pipeline and the OpenVINO one (f32 hint) of tiny (LCM) and tiny-standard (DPM-Solver)."""
    return {
        "LCM": (PixArtAlphaPipeline.from_pretrained(tiny_source), OVPixArtPipeline.from_pretrained(tiny_variant, "CPU", F32_CONFIG)),
        "standard": (
            PixArtAlphaPipeline.from_pretrained(tiny_standard_source),
            OVPixArtPipeline.from_pretrained(tiny_standard_variant, "CPU", F32_CONFIG),
        ),
    }


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]  # PixArt's LoRA training script's


def make_peft_adapter(source: Path, folder: Path, seed: int, rank: int = 4, alpha: float = 8.0) -> Path:
    """A random adapter on every attention and feed-forward linear of ``source``'s transformer, saved as PixArt's
    LoRA script saves it (a PEFT folder)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel.from_pretrained(source / "transformer")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, init_lora_weights=False)  # B random, not 0
    get_peft_model(transformer, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapter(tiny_source, tmp_path_factory) -> Path:
    """A random LoRA adapter (PEFT folder) that fits the tiny models' transformers."""
    return make_peft_adapter(tiny_source, tmp_path_factory.mktemp("adapter") / "random", seed=11)
