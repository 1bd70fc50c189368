"""The terminal route, in the habits of ``optimum-cli export openvino``: ``python -m helpers <command> --help``.

``convert`` → ``compress`` → ``generate`` and ``edit`` (or ``demo``, or ``serve`` to many clients), ``verify`` for a copied folder, ``train`` and
``build-random`` for models made here. Each command calls the functions the notebooks call. It exits with 0 when it
worked and 1 when not, with one line on standard error that names the problem and the fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .cli_commands import (
    run_build_random,
    run_compress,
    run_convert,
    run_demo,
    run_edit,
    run_generate,
    run_serve,
    run_train,
    run_verify,
)
from .settings import MAX_QUEUED_REQUESTS, MODEL_ROOT, STEP_CACHE_THRESHOLD, model_id_from_env

EPILOG = """The route from nothing to a served demo, on the small model built offline:
  python -m helpers convert --model tiny
  python -m helpers compress --model tiny --variant INT8
  python -m helpers generate --model tiny --variant INT8 --prompt "a red circle" --out circle.png
  python -m helpers edit --model tiny --image circle.png --prompt "a green circle" --strength 0.7 --out green.png
  python -m helpers demo --model tiny
  python -m helpers serve --model tiny --replicas 2
Models: a hub id (PixArt-alpha/PixArt-LCM-XL-2-1024-MS, PixArt-alpha/PixArt-Sigma-XL-2-1024-MS, ...), a local\ndiffusers folder, tiny, tiny-standard, tiny-sigma, shapes."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m helpers",
        description="PixArt-α and PixArt-Σ on OpenVINO from the terminal: the same functions as the notebooks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--traceback", action="store_true", help="on error, print the whole traceback, not one line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_convert(commands)
    _add_compress(commands)
    _add_generate(commands)
    _add_edit(commands)
    _add_verify(commands)
    _add_demo(commands)
    _add_serve(commands)
    _add_train(commands)
    _add_build_random(commands)
    return parser


def _model_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", default=model_id_from_env(), help="model id: hub id, diffusers folder, tiny, shapes (default: $PIXART_MODEL_ID or the LCM checkpoint)")
    command.add_argument("--model-root", type=Path, default=MODEL_ROOT, help="where variant folders live, as model/<model-name>/<VARIANT> (default: %(default)s)")


def _add_convert(commands) -> None:
    command = commands.add_parser(
        "convert",
        help="convert a diffusers PixArt-α or PixArt-Σ pipeline to an FP16 OpenVINO variant folder (notebook 1)",
        description="Convert the T5 encoder, the transformer and the VAE decoder to OpenVINO IR (FP16 weights), one "
        "part in memory at a time, into <model-root>/<model-name>/FP16. Parts already converted are kept, damaged "
        "ones made again; the folder is finished when model_index.json (sizes and checksums) is written.",
    )
    _model_arguments(command)
    command.add_argument("--out", type=Path, default=None, help="the variant folder to write (default: <model-root>/<model-name>/FP16)")
    command.set_defaults(run=run_convert)


def _add_compress(commands) -> None:
    from .schemes import CALIBRATION_PROMPTS
    from .token_downsampling import DEFAULT_FACTOR
    from .variants import DOWNSAMPLED_VARIANTS, VARIANTS

    command = commands.add_parser(
        "compress",
        help="compress the FP16 variant with NNCF: INT8, INT4-T5 or W8A8 (notebook 3); opt-in: FP16-ToDo, W8A8-ToDo",
        description="Make a compressed variant folder from the FP16 one. INT8: 8-bit weights in every part; INT4-T5: "
        "4-bit T5 weights, the rest INT8; W8A8: INT8 weights and activations in the transformer, calibrated on "
        "transformer inputs recorded from the FP16 pipeline. FP16-ToDo and W8A8-ToDo (opt-in, fewer keys in "
        "self-attention, see docs/token-downsampling.md): the transformer converted again from the model, with "
        "self-attention keys and values from the pooled token grid.",
    )
    _model_arguments(command)
    command.add_argument("--variant", required=True, choices=[*VARIANTS[1:], *DOWNSAMPLED_VARIANTS], help="the variant to make (its compression scheme)")
    command.add_argument("--downsampling-factor", type=int, default=DEFAULT_FACTOR, help="-ToDo: pool the token grid by this factor per side (default: %(default)s)")
    command.add_argument("--downsampled-blocks", default="all", help='-ToDo: the transformer blocks that downsample, "all" or e.g. "0-13,20" (default: %(default)s)')
    command.add_argument("--calibration-prompts", type=int, default=CALIBRATION_PROMPTS, help="W8A8: prompts to record the transformer's inputs on (default: %(default)s)")
    command.add_argument("--calibration-side", type=int, default=None, help="W8A8: picture side to calibrate at (default: the model's native side)")
    command.add_argument("--device", default="CPU", help="OpenVINO device for the W8A8 calibration run (default: %(default)s)")
    command.set_defaults(run=run_compress)


def _add_generate(commands) -> None:
    command = commands.add_parser(
        "generate",
        help="draw pictures from prompts with a variant folder, saved as PNG",
        description="Draw one picture per prompt (and per --images-per-prompt) with the OpenVINO pipeline of a variant "
        "folder. Steps and guidance default to the checkpoint's recipe (LCM: 4 steps, no guidance; standard: 20, 4.5). "
        "One picture goes to --out; several go to <out>-1.png, <out>-2.png, … The n-th prompt is drawn with seed + n - 1.",
    )
    _model_arguments(command)
    command.add_argument("--variant", default="FP16", help="FP16, INT8, INT4-T5, W8A8, or an opt-in FP16-ToDo, W8A8-ToDo (default: %(default)s)")
    command.add_argument("--prompt", action="append", required=True, help="what to draw; repeat for several prompts")
    command.add_argument("--size", type=size_argument, default=None, metavar="WxH", help="picture size, e.g. 1344x768 (default: the model's native square)")
    _drawing_arguments(command)
    command.add_argument("--vae-tiling", action="store_true", help="decode in overlapping 512 px tiles: the decoder's memory "
                         "follows the tile, not the picture (SDXL's VAE takes 17 GiB for a 2048² picture whole)")
    command.add_argument("--downsampled-steps", type=float, default=None, metavar="FRACTION",
                         help="a -ToDo variant: the share of each picture's first steps run with token downsampling, 0 to 1 (default: the folder's)")
    command.add_argument("--static-shapes", action="store_true", help="compile every part for this call's shapes only "
                         "(pipe.reshape: a few percent faster on CPU; NPU, which needs them, always reshapes)")
    command.add_argument("--out", type=Path, default=Path("picture.png"), help="PNG file to write (default: %(default)s)")
    command.set_defaults(run=run_generate)


def _add_edit(commands) -> None:
    command = commands.add_parser(
        "edit",
        help="edit a picture after a prompt: all of it (image-to-image), or where a mask is white (inpainting)",
        description="Redraw a picture after a prompt with the OpenVINO pipeline of a variant folder (convert makes the VAE "
        "encoder it needs). Without --mask the whole picture is redrawn (image-to-image); with --mask, only where the mask "
        "is white: white = repaint, black = keep, diffusers' convention (OpenAI's API marks it with transparent pixels "
        "instead). --strength is how much changes: it runs that share of the steps, from the picture noised to match. "
        "The result has the picture's size unless --size says otherwise.",
    )
    _model_arguments(command)
    command.add_argument("--variant", default="FP16", help="the variant folder to draw with (default: %(default)s)")
    command.add_argument("--image", type=Path, required=True, metavar="IN", help="the picture to edit (PNG, JPEG or WebP)")
    command.add_argument("--mask", type=Path, default=None, metavar="MASK", help="where to repaint: white = repaint, black = keep "
                         "(diffusers' convention), the picture's size (default: none, the whole picture is redrawn)")
    command.add_argument("--prompt", required=True, help="what the edited picture shows")
    command.add_argument("--strength", type=strength_argument, default=None, metavar="S", help="how much to redraw, in (0, 1]: "
                         "0.3 small changes, 0.8 keeps the layout, 1 from noise (default: 0.8; with --mask, 1)")
    command.add_argument("--mask-blur", type=float, default=None, metavar="PIXELS", help="blur the mask's edge by this many "
                         "pixels for a gradual blend (default: a sharp edge)")
    command.add_argument("--size", type=size_argument, default=None, metavar="WxH", help="the result's size (default: the picture's)")
    _drawing_arguments(command)
    command.add_argument("--out", type=Path, default=Path("edited.png"), help="PNG file to write (default: %(default)s)")
    command.set_defaults(run=run_edit)


def _drawing_arguments(command: argparse.ArgumentParser) -> None:
    """The options generate and edit share: the call's (seed, steps, guidance, ...) and the pipeline's."""
    command.add_argument("--negative-prompt", default=None, help="what not to draw (default: none, as in diffusers)")
    command.add_argument("--seed", type=int, default=42, help="seed of the first prompt's noise (default: %(default)s)")
    command.add_argument("--no-binning", action="store_true", help="draw at exactly --size instead of the nearest aspect-ratio bin, resized")
    command.add_argument("--steps", type=int, default=None, help="denoising steps (default: the recipe's)")
    command.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the recipe's)")
    command.add_argument("--images-per-prompt", type=int, default=1, help="pictures per prompt (default: %(default)s)")
    command.add_argument("--step-cache", type=float, nargs="?", const=STEP_CACHE_THRESHOLD, default=None, metavar="THRESHOLD",
                         help="reuse the transformer's blocks between steps while the first block's output moves less than "
                         f"THRESHOLD (default when given: {STEP_CACHE_THRESHOLD}; 0: every step computed); off without the flag")
    command.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]", help="a LoRA adapter (PEFT folder, "
                         ".safetensors, or a name in model/<model>/lora/) at a strength (default 1); repeat to blend")
    command.add_argument("--decoder", choices=("full", "tiny"), default="full", help="tiny: decode with the tiny VAE, a draft "
                         "in a fraction of the decode's time (default: %(default)s, the model's own VAE)")
    command.add_argument("--device", default="AUTO", help="OpenVINO device (default: %(default)s)")


def _add_verify(commands) -> None:
    command = commands.add_parser(
        "verify",
        help="check a variant folder's files against the sizes and checksums recorded when it was made",
        description="Read every file of a variant folder and compare its size and SHA-256 with model_index.json: after "
        "copying a folder to another machine, this names any file that arrived damaged. Exit code 1 if one did.",
    )
    _model_arguments(command)
    command.add_argument("--variant", action="append", default=None, help="a variant to check; repeat (default: every variant folder of the model)")
    command.add_argument("--folder", type=Path, action="append", default=None, help="a variant folder to check instead (repeatable)")
    command.set_defaults(run=run_verify)


def _add_demo(commands) -> None:
    command = commands.add_parser("demo", help="serve the Gradio demo on 127.0.0.1 over the variant folders on disk (notebook 5)")
    _model_arguments(command)
    command.add_argument("--device", default="AUTO", help="OpenVINO device (default: %(default)s)")
    command.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    command.set_defaults(run=run_demo)


def _add_serve(commands) -> None:
    command = commands.add_parser(
        "serve",
        help="serve a variant to many clients: Ray Serve replicas behind an OpenAI-style images API (notebook 7)",
        description="Deploy --replicas replicas of a variant folder on Ray Serve, each compiled once with its own "
        "threads, behind POST /v1/images/generations and /v1/images/edits (the OpenAI images API: the openai client works with base_url), "
        "GET /v1/models and GET /health. Without --address, a local Ray on this machine; with one, a running cluster "
        "(ray start --head on one machine, ray start --address on the others; the variant folder copied to each, "
        "checked with verify). Ctrl-C stops it. See docs/serving.md.",
    )
    _model_arguments(command)
    command.add_argument("--variant", default="FP16", help="the variant folder to serve (default: %(default)s)")
    command.add_argument("--replicas", type=int, default=1, help="replicas, each drawing one picture at a time (default: %(default)s)")
    command.add_argument("--threads-per-replica", type=int, default=None, metavar="T",
                         help="OpenVINO and torch threads of each replica, and the CPUs Ray reserves for it (default: this machine's cores / replicas)")
    command.add_argument("--address", default=None, help="a running Ray cluster (e.g. 10.0.0.1:6379); default: a local Ray on this machine")
    command.add_argument("--host", default="127.0.0.1", help="address the API listens on (default: %(default)s; 0.0.0.0 for other machines)")
    command.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    command.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help="an adapter requests may ask "
                         'for by name ({"lora": "NAME"} or {"lora": {"NAME": 0.8}}); repeat for several')
    command.add_argument("--api-key", default=None, help="refuse requests without 'Authorization: Bearer KEY' (401); "
                         "it shows in ps and the shell history: prefer --api-key-file or $PIXART_API_KEY")
    command.add_argument("--api-key-file", type=Path, default=None, metavar="FILE", help="the API key, on the file's first line")
    command.add_argument("--insecure", action="store_true", help="serve a --host other machines reach without an API key")
    command.add_argument("--max-queued", type=int, default=MAX_QUEUED_REQUESTS, help="requests that may wait for a replica; more get 503, retry (default: %(default)s)")
    command.add_argument("--device", default="CPU", help="OpenVINO device of the replicas (default: %(default)s)")
    command.set_defaults(run=run_serve)


def _add_train(commands) -> None:
    from .training_transformer import TrainingPlan

    command = commands.add_parser("train", help="train the small shapes PixArt (what notebook 6 does, in one go)")
    command.add_argument("--out", type=Path, default=MODEL_ROOT / "shapes" / "diffusers", help="where the diffusers folder goes")
    command.add_argument("--work", type=Path, default=MODEL_ROOT / "shapes-work", help="dataset, feature cache, start model")
    command.add_argument("--steps", type=int, default=4000, help="transformer training steps")
    command.add_argument("--vae-steps", type=int, default=None, help="VAE fitting steps (default: half of --steps)")
    command.add_argument("--dataset-size", type=int, default=None, help="captioned pictures to generate (default: 2048, 256 under 1000 steps)")
    command.add_argument("--batch-size", type=int, default=16)
    command.add_argument("--device", default="cpu", help="torch device: cpu, or cuda where a GPU is at hand")
    command.add_argument("--learning-rate", type=float, default=TrainingPlan.learning_rate, help="peak learning rate")
    command.add_argument("--resume", type=Path, default=None, help="a trained model folder to train on from (e.g. model/shapes/diffusers)")
    command.set_defaults(run=run_train)


def _add_build_random(commands) -> None:
    from .building import FAMILIES, RANDOM_PRESETS, SCHEDULERS

    command = commands.add_parser(
        "build-random",
        help="build a PixArt-α or PixArt-Σ diffusers folder with random weights, usable as --model <folder>",
        description="Build a diffusers PixArt-α (or, with --family sigma, PixArt-Σ) folder with random weights, offline: the real PixArt-XL-2-1024-MS "
        "shapes (--preset full: about 22 GB on disk, 12 GiB of memory while building, a few minutes) or the small "
        "model's. It loads like a downloaded checkpoint: PIXART_MODEL_ID=<folder> runs every notebook on it.",
    )
    command.add_argument("--out", type=Path, required=True, help="the folder to create (e.g. model/pixart-xl-random/diffusers)")
    command.add_argument("--preset", choices=RANDOM_PRESETS, default="full", help="full: PixArt-XL's shapes; tiny: the small model's")
    command.add_argument("--sample-size", type=int, default=None, help="latent side: 32, 64, 128 (1024², the default of full) or 256")
    command.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="lcm", help="lcm: 4 steps, no guidance; dpm: 20 guided steps")
    command.add_argument("--family", choices=tuple(FAMILIES), default="alpha", help="alpha: PixArt-α; sigma: PixArt-Σ (300-token prompts, no micro-conditions; use --sample-size 256 for the 2K model)")
    command.set_defaults(run=run_build_random)


def size_argument(text: str) -> tuple[int, int]:
    """``--size`` read by :func:`helpers.sizes.parse_size`; its message is what argparse shows."""
    from .sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def strength_argument(text: str) -> float:
    """``--strength``: a number in (0, 1], checked before any model loads."""
    try:
        strength = float(text)
    except ValueError:
        strength = float("nan")
    if not 0 < strength <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a strength: use a number in (0, 1] (0.3: small changes; 0.8: "
                                         f"keeps the layout; 1: from noise).")
    return strength


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 when it worked, 1 with one line on standard error when it did not."""
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("Stopped. A rerun finishes what was left: nothing half-written is ever loaded.", file=sys.stderr)
        return 1
    except Exception as error:  # one line for the user; --traceback for the developer
        if args.traceback:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


def one_line(error: BaseException) -> str:
    """An error as one line: its message for the errors this package raises, its type too for the others."""
    from .sources import ModelSourceError
    from .variants import VariantNotReadyError

    text = " ".join(str(error).split()) or type(error).__name__
    ours = isinstance(error, (ValueError, VariantNotReadyError, ModelSourceError))
    return text if ours else f"{type(error).__name__}: {text[:500]} (--traceback shows where)"
