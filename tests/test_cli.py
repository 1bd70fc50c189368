"""The terminal route end to end on tiny, each command in its own process: exit codes, files, one-line errors (the
refusals in this process, through the same ``main``: a process each would only add its start-up)."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers.cli import main


def run_cli(*args: str, root) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "helpers", *args, "--model-root", str(root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failed command says (tqdm's bars and library warnings aside)."""
    return one_error_line(result.stderr)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def refused(capsys, *args: str, root) -> str:
    """The one error line of a command run in this process through ``main``, which must exit with 1."""
    code = main([*args, "--model-root", str(root)])
    stderr = capsys.readouterr().err
    assert code == 1, stderr
    return one_error_line(stderr)


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    """A model root where the command line converted tiny and compressed it to INT8."""
    root = tmp_path_factory.mktemp("cli-models")
    for args in (("convert", "--model", "tiny"), ("compress", "--model", "tiny", "--variant", "INT8")):
        result = run_cli(*args, root=root)
        assert result.returncode == 0, result.stderr
    return root


def test_compressing_a_finished_w8a8_variant_again_records_no_calibration(cli_root, monkeypatch, capsys):
    assert main(["compress", "--model", "tiny", "--variant", "W8A8", "--model-root", str(cli_root)]) == 0

    def recorded(*args, **kwargs):
        raise AssertionError("calibration data recorded for a finished variant")

    monkeypatch.setattr("helpers.compression.collect_calibration_data", recorded)
    assert main(["compress", "--model", "tiny", "--variant", "W8A8", "--model-root", str(cli_root)]) == 0
    captured = capsys.readouterr()
    assert "transformer: already compressed, skipped" in captured.out + captured.err


def test_convert_compress_generate_make_pictures_of_the_asked_size(cli_root, tmp_path):
    assert (cli_root / "tiny" / "FP16" / "model_index.json").is_file() and (cli_root / "tiny" / "INT8" / "model_index.json").is_file()
    out = tmp_path / "pictures" / "shape.png"
    result = run_cli(
        "generate", "--model", "tiny", "--variant", "INT8", "--prompt", "a red circle", "--prompt", "a blue square",
        "--size", "768x1344", "--steps", "2", "--seed", "7", "--vae-tiling", "--out", str(out), root=cli_root,
    )
    assert result.returncode == 0, result.stderr
    assert "Decoding in tiles of 64 latents, overlapping by 16" in result.stdout
    paths = [tmp_path / "pictures" / "shape-1.png", tmp_path / "pictures" / "shape-2.png"]
    assert all(f"Saved {path} (768×1344)" in result.stdout for path in paths)
    assert [Image.open(path).size for path in paths] == [(768, 1344)] * 2


def test_generate_with_a_lora_at_a_strength_and_an_unknown_one_refused(cli_root, tiny_adapter, tmp_path):
    out = tmp_path / "adapted.png"
    base = run_cli("generate", "--model", "tiny", "--prompt", "a red circle", "--steps", "2", "--out", str(tmp_path / "base.png"), root=cli_root)
    result = run_cli("generate", "--model", "tiny", "--prompt", "a red circle", "--steps", "2", "--lora", f"{tiny_adapter}:0.5",
                     "--out", str(out), root=cli_root)
    assert base.returncode == 0 and result.returncode == 0, result.stderr
    assert f"LoRA random ({tiny_adapter}) at 0.5" in result.stdout
    assert Image.open(out).tobytes() != Image.open(tmp_path / "base.png").tobytes()
    result = run_cli("generate", "--model", "tiny", "--prompt", "a cat", "--lora", "nowhere:0.5", root=cli_root)
    assert result.returncode == 1 and "No LoRA at 'nowhere': give a PEFT folder or a .safetensors file" in error_line(result)


@pytest.fixture(scope="module")
def edit_files(tmp_path_factory) -> dict:
    """A 384×256 picture, a mask white (repaint) over its bottom-right quarter, and pictures the edit refuses."""
    folder = tmp_path_factory.mktemp("edit-files")
    Image.fromarray((np.random.default_rng(0).random((256, 384, 3)) * 255).astype(np.uint8)).save(folder / "in.png")
    mask = Image.new("L", (384, 256))
    mask.paste(255, (192, 128, 384, 256))
    mask.save(folder / "mask.png")
    Image.new("L", (100, 100)).save(folder / "small-mask.png")
    Image.new("RGB", (1001, 750)).save(folder / "odd.png")
    (folder / "text.png").write_text("not a picture")
    return {path.stem: path for path in folder.iterdir()}


def test_edit_repaints_where_the_mask_is_white_at_the_pictures_size(cli_root, edit_files, tmp_path):
    out = tmp_path / "edited.png"
    result = run_cli("edit", "--model", "tiny", "--image", str(edit_files["in"]), "--mask", str(edit_files["mask"]),
                     "--prompt", "a red circle", "--strength", "0.5", "--steps", "4", "--out", str(out), root=cli_root)
    assert result.returncode == 0, result.stderr
    assert "2 steps: VAE encoder" in result.stdout and f"(inpainting of {edit_files['in']} where {edit_files['mask']} is white" in result.stdout
    assert f"Saved {out} (384×256)" in result.stdout and Image.open(out).size == (384, 256)


def test_edit_help_gives_the_masks_convention(capsys):
    with pytest.raises(SystemExit) as exit:  # in-process: a process per --help costs seconds of imports
        main(["edit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert exit.value.code == 0 and "white = repaint, black = keep (diffusers' convention)" in help_text


@pytest.mark.parametrize(
    "files,options,message",
    [
        (("text", None), (), r"--image .*text.png is not a picture: send a PNG, JPEG or WebP file"),
        (("nowhere", None), (), r"--image .*nowhere.png: no such file"),
        (("in", "small-mask"), (), r"--mask is 100×100 but --image is 384×256: make the mask the picture's size"),
        (("odd", None), (), r"--image is 1001×750: .* multiples of 8: give --size .* or crop it to 1000×744"),
        (("in", None), ("--strength", "1.5"), r"argument --strength: '1.5' is not a strength: use a number in \(0, 1\]"),
    ],
)
def test_edit_refuses_bad_files_before_loading_a_model(edit_files, files, options, message, tmp_path, capsys):
    image, mask = files
    pictures = ["--image", str(edit_files.get(image, tmp_path / f"{image}.png"))] + (["--mask", str(edit_files[mask])] if mask else [])
    try:  # in-process: each refused before a model loads
        code = main(["edit", "--model", "tiny", "--model-root", str(tmp_path), *pictures, "--prompt", "a cat", *options])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 1 and re.search(message, capsys.readouterr().err)


def test_verify_passes_then_names_a_truncated_copy(cli_root):
    result = run_cli("verify", "--model", "tiny", root=cli_root)
    assert result.returncode == 0, result.stderr
    assert "FP16: 18 files, sizes and checksums as written" in result.stdout and "INT8:" in result.stdout

    copy = shutil.copytree(cli_root / "tiny" / "INT8", cli_root / "tiny" / "INT4-T5")
    weights = copy / "text_encoder" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    result = run_cli("verify", "--model", "tiny", "--variant", "INT4-T5", root=cli_root)
    assert result.returncode == 1
    assert f"{weights} has 100 bytes where" in error_line(result)
    result = run_cli("generate", "--model", "tiny", "--variant", "INT4-T5", "--prompt", "a cat", root=cli_root)
    assert result.returncode == 1 and "Copy the folder again, or run notebook 3" in error_line(result)
    result = run_cli("verify", "--model", "tiny", "--variant", "../../x", root=cli_root)
    assert result.returncode == 1 and "The variant '../../x' is not a folder name" in error_line(result)
    shutil.rmtree(copy)


@pytest.mark.parametrize(
    "args,message",
    [
        (("--images-per-prompt", "0"), "num_images_per_prompt=0 is not allowed: ask for at least 1 picture"),
        (("--guidance", "-1"), "guidance_scale=-1.0 is not allowed: use a number from 0 to 20"),
        (("--size", "4096x4096", "--no-binning"), "height=4096 is larger than this model draws: at most 2048"),
        (("--steps", "0"), "num_inference_steps=0 is not allowed"),
        (("--steps", "101"), "num_inference_steps=101 is more than the 100 allowed"),  # the images API's limits
        (("--seed", str(2**64 - 1), "--prompt", "a dog"), r"seed=18446744073709551616 is not allowed: use a whole number from 0 to 2\*\*64 - 1"),
        (("--variant", "INT3"), "No converted model at .*INT3.*convert"),
    ],
)
def test_bad_input_fails_with_one_line_and_exit_code_1(cli_root, args, message, capsys):
    assert re.search(message, refused(capsys, "generate", "--model", "tiny", "--prompt", "a cat", *args, root=cli_root))


@pytest.mark.parametrize(
    "args,message",
    [
        (("--host", "0.0.0.0"), "Serving on 0.0.0.0 without an API key .* or --insecure to serve openly"),
        (("--api-key", "a", "--api-key-file", "key"), "Give the API key once"),
        (("--variant", "../x"), "The variant '../x' is not a folder name"),
    ],
)
def test_serve_refuses_before_ray_starts(args, message, tmp_path, capsys):
    assert re.search(message, refused(capsys, "serve", "--model", "tiny", *args, root=tmp_path))
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # refused before a local Ray started


def test_compress_before_convert_says_what_to_run(tmp_path):
    result = run_cli("compress", "--model", "tiny", "--variant", "W8A8", root=tmp_path)
    assert result.returncode == 1
    assert "No converted model at" in error_line(result) and "python -m helpers convert --model tiny" in error_line(result)


def test_usage_errors_exit_1_and_name_the_fix(tmp_path):
    result = run_cli("generate", "--model", "tiny", "--prompt", "a cat", "--size", "big", root=tmp_path)
    assert result.returncode == 1 and "'big' is not a size: write it as WIDTHxHEIGHT" in result.stderr



# each command's help: its usage line and the options that command is for
HELP_NAMES = {
    "convert": ["--out", "the variant folder to write"], "compress": ["--variant", "--calibration-prompts"],
    "generate": ["--prompt", "--steps", "--seed", "seed + n - 1"], "edit": ["--image", "--mask", "--strength"],
    "verify": ["--variant", "SHA-256"], "demo": ["--port", "--device"], "serve": ["--api-key-file", "--insecure", "--replicas"],
    "train": ["--steps", "--resume"], "build-random": ["--out"],
}


@pytest.mark.parametrize("command", HELP_NAMES)
def test_help_explains_each_command(command, capsys):
    from helpers.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    page = capsys.readouterr().out
    assert exited.value.code == 0 and page.startswith(f"usage: python -m helpers {command} ")
    missing = [name for name in HELP_NAMES[command] if name not in " ".join(page.split())]  # argparse wraps lines
    assert not missing, f"{command} --help lacks {missing}:\n{page}"
