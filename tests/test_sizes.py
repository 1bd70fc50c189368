"""Image sizes for every transformer sample size diffusers has aspect-ratio bins for."""

import json

import pytest

from helpers.building import build_random
from helpers.sizes import (
    aspect_ratio_bins,
    format_size,
    native_size,
    parse_size,
    sample_size_of,
    size_choices,
    wide_size,
)

# sample size -> (square native size, the bin closest to 16:9 as (height, width))
EXPECTED = {32: (256, (192, 336)), 64: (512, (384, 672)), 128: (1024, (768, 1344)), 256: (2048, (1536, 2688))}


def model_folder(tmp_path, sample_size):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"sample_size": sample_size}))
    return tmp_path


@pytest.mark.parametrize("sample_size", sorted(EXPECTED))
def test_sizes_come_from_the_models_own_bins(tmp_path, sample_size):
    assert sample_size_of(model_folder(tmp_path, sample_size)) == sample_size
    side, wide = EXPECTED[sample_size]
    choices = size_choices(sample_size)
    bins = {(int(h), int(w)) for h, w in aspect_ratio_bins(sample_size).values()}
    assert len(choices) == len(bins) and len(set(choices)) == len(choices)
    assert choices[0] == f"{side}×{side}" and native_size(sample_size) == (side, side)
    assert wide_size(sample_size) == wide and wide in bins
    assert format_size(*wide) in choices
    assert parse_size(format_size(*wide), choices) == wide
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in bins)  # every bin tiles into 2×2 patches of 8× latents


@pytest.mark.parametrize("sample_size", [16, 48, 512])
def test_a_sample_size_without_bins_is_named_with_the_ones_that_have_them(tmp_path, sample_size):
    with pytest.raises(ValueError, match=rf"sample_size {sample_size} has no aspect-ratio bins.*32 \(256²\), 64 \(512²\), 128 \(1024²\), 256 \(2048²\)"):
        size_choices(sample_size)
    with pytest.raises(ValueError, match="no aspect-ratio bins"):
        build_random(tmp_path / "random", preset="tiny", sample_size=sample_size)
    assert not (tmp_path / "random").exists()


def test_a_size_the_model_does_not_make_is_refused_with_examples(tmp_path):
    choices = size_choices(64)
    with pytest.raises(ValueError, match=r"can't make '1344×768'.*512×512"):
        parse_size("1344×768", choices)
