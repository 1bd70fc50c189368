"""Shared fixtures: the small PixArt models built offline and converted once per test session."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model")


@pytest.fixture(scope="session")
def tiny_source(model_root) -> Path:
    return helpers.resolve_model_source("tiny", root=model_root)


@pytest.fixture(scope="session")
def tiny_standard_source(model_root) -> Path:
    return helpers.resolve_model_source("tiny-standard", root=model_root)


@pytest.fixture(scope="session")
def tiny_variant(model_root, tiny_source) -> Path:
    folder = helpers.variant_dir("tiny", "FP16", root=model_root)
    helpers.convert_pipeline(tiny_source, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_standard_variant(model_root, tiny_standard_source) -> Path:
    folder = helpers.variant_dir("tiny-standard", "FP16", root=model_root)
    helpers.convert_pipeline(tiny_standard_source, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_compressed(model_root, tiny_variant) -> dict:
    """The INT8, INT4-T5 and W8A8 variants of the tiny model, by name (W8A8 calibrated on 2 prompts at 256²)."""
    calibration = helpers.collect_calibration_data(tiny_variant, helpers.calibration_prompts("tiny", 2), height=256, width=256)
    folders = {}
    for name, recipe in helpers.COMPRESSION_RECIPES.items():
        folders[name] = helpers.variant_dir("tiny", name, root=model_root)
        helpers.compress_variant(tiny_variant, folders[name], recipe, progress=lambda message: None, calibration=calibration)
    return folders
