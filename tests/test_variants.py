"""The variant folder: the sizes and checksums its index records, its format version, and the errors for a damaged
or outdated copy."""

import hashlib
import json
import shutil

import pytest

from helpers.conversion import convert_pipeline
from helpers.pipeline import OVPixArtPipeline
from helpers.settings import MODEL_INDEX
from helpers.variants import (
    FORMAT_VERSION,
    MADE_PARTS,
    DamagedVariantError,
    OutdatedVariantError,
    check_variant,
    damaged_files,
    is_variant,
)


@pytest.fixture
def copy(tiny_variant, tmp_path):
    """A copy of the tiny FP16 folder, as it would arrive on another machine, named like one (``<model>/FP16``)."""
    return shutil.copytree(tiny_variant, tmp_path / "tiny" / "FP16")


def test_index_records_every_file_with_its_size_and_checksum(tiny_variant):
    files = json.loads((tiny_variant / MODEL_INDEX).read_text())["files"]
    on_disk = {p.relative_to(tiny_variant).as_posix() for p in tiny_variant.rglob("*") if p.is_file()} - {MODEL_INDEX}
    assert set(files) == on_disk
    assert {f"{part}/openvino_model.bin" for part in MADE_PARTS} <= set(files)
    bin_file = tiny_variant / "transformer" / "openvino_model.bin"
    record = files["transformer/openvino_model.bin"]
    assert record["size"] == bin_file.stat().st_size
    assert record["sha256"] == hashlib.sha256(bin_file.read_bytes()).hexdigest()
    assert damaged_files(tiny_variant, checksums=True) == {}


def test_truncated_bin_is_named_with_the_fix(copy):
    weights = copy / "transformer" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DamagedVariantError) as error:
        OVPixArtPipeline.from_pretrained(copy, "CPU")
    message = str(error.value)
    assert f"{weights} has 1,000 bytes where" in message and "cut short" in message
    assert "Copy the folder again" in message and "python -m helpers convert --model tiny" in message
    assert not is_variant(copy)


def test_broken_xml_is_named_at_load_and_by_verify(copy):
    xml = copy / "vae_decoder" / "openvino_model.xml"
    text = bytearray(xml.read_bytes())
    text[200:260] = b"#" * 60  # the same size: the size check passes, OpenVINO can't parse it
    xml.write_bytes(bytes(text))
    assert damaged_files(copy) == {}
    with pytest.raises(DamagedVariantError, match=rf"OpenVINO can't read {xml}.*damaged.*verify --folder {copy}"):
        OVPixArtPipeline.from_pretrained(copy, "CPU")
    assert damaged_files(copy, checksums=True) == {"vae_decoder/openvino_model.xml": "has other contents than were written (its SHA-256 differs)"}


def test_shortened_xml_is_named_by_its_size(copy):
    xml = copy / "text_encoder" / "openvino_model.xml"
    xml.write_text(xml.read_text()[:-100])
    with pytest.raises(DamagedVariantError, match=rf"{xml} has .* bytes where"):
        check_variant(copy)


def test_missing_file_is_named(copy):
    (copy / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(DamagedVariantError, match=r"tokenizer_config.json is missing"):
        OVPixArtPipeline.from_pretrained(copy, "CPU")


def test_a_damaged_compressed_folder_names_the_compress_command(tiny_compressed, tmp_path):
    copy = shutil.copytree(tiny_compressed["W8A8"], tmp_path / "tiny" / "W8A8")
    (copy / "transformer" / "openvino_model.bin").write_bytes(b"")
    with pytest.raises(DamagedVariantError, match=r"notebook 3 .*compress --model tiny --variant W8A8"):
        check_variant(copy)


def test_converting_again_remakes_only_the_damaged_part(tiny_source, copy):
    weights = copy / "transformer" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:-8])
    text_encoder_time = (copy / "text_encoder" / "openvino_model.bin").stat().st_mtime_ns
    messages = []
    seconds = convert_pipeline(tiny_source, copy, report=messages.append)
    assert list(seconds) == ["transformer"] and "transformer: damaged, made again" in messages
    assert check_variant(copy) == copy and damaged_files(copy, checksums=True) == {}
    assert (copy / "text_encoder" / "openvino_model.bin").stat().st_mtime_ns == text_encoder_time


@pytest.mark.parametrize("version", [None, FORMAT_VERSION + 1])
def test_a_folder_of_another_format_is_refused_with_the_command_that_remakes_it(copy, version):
    index = json.loads((copy / MODEL_INDEX).read_text())
    index.pop("format_version")
    (copy / MODEL_INDEX).write_text(json.dumps(index if version is None else index | {"format_version": version}))
    with pytest.raises(OutdatedVariantError, match=r"another version of this project.*python -m helpers convert --model tiny"):
        OVPixArtPipeline.from_pretrained(copy, "CPU")
    assert not is_variant(copy)


def test_converting_again_remakes_a_folder_of_another_format_whole(tiny_source, copy):
    index = json.loads((copy / MODEL_INDEX).read_text())
    (copy / MODEL_INDEX).write_text(json.dumps(index | {"format_version": FORMAT_VERSION - 1}))
    messages = []
    seconds = convert_pipeline(tiny_source, copy, report=messages.append)
    assert sorted(seconds) == sorted(MADE_PARTS) and any("another folder format, made again" in line for line in messages)
    assert check_variant(copy) == copy and json.loads((copy / MODEL_INDEX).read_text())["format_version"] == FORMAT_VERSION
