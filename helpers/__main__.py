"""Command line: ``python -m helpers demo --model shapes``, ``train --steps 4000``, ``build-random --out FOLDER``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .settings import MODEL_ROOT, model_id_from_env
from .sources import RANDOM_PRESETS, SCHEDULERS
from .training import TrainingSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers", description="PixArt-α on OpenVINO")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the Gradio demo on 127.0.0.1 over the converted variants")
    demo.add_argument("--model", default=model_id_from_env(), help="model id (default: $PIXART_MODEL_ID or the LCM checkpoint)")
    demo.add_argument("--device", default="AUTO", help="OpenVINO device (default: AUTO)")
    demo.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    train = commands.add_parser("train", help="train the small shapes PixArt (what notebook 6 does, in one go)")
    train.add_argument("--out", type=Path, default=MODEL_ROOT / "shapes" / "diffusers", help="where the diffusers folder goes")
    train.add_argument("--work", type=Path, default=MODEL_ROOT / "shapes-work", help="dataset, feature cache, start model")
    train.add_argument("--steps", type=int, default=4000, help="transformer training steps")
    train.add_argument("--vae-steps", type=int, default=None, help="VAE fitting steps (default: half of --steps)")
    train.add_argument("--dataset-size", type=int, default=2048, help="captioned pictures to generate")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--device", default="cpu", help="torch device: cpu, or cuda where a GPU is at hand")
    train.add_argument("--learning-rate", type=float, default=TrainingSettings.learning_rate, help="peak learning rate")
    train.add_argument("--resume", type=Path, default=None, help="a trained model folder to train on from (e.g. model/shapes/diffusers)")
    build = commands.add_parser(
        "build-random",
        help="build a PixArt-α diffusers folder with random weights, usable as PIXART_MODEL_ID=<folder>",
        description="Build a diffusers PixArt-α folder with random weights, offline: the real PixArt-XL-2-1024-MS "
        "shapes (--preset full: about 22 GB on disk, 12 GiB of memory while building, a few minutes) or the small "
        "model's. It loads like a downloaded checkpoint: PIXART_MODEL_ID=<folder> runs every notebook on it.",
    )
    build.add_argument("--out", type=Path, required=True, help="the folder to create (e.g. model/pixart-xl-random/diffusers)")
    build.add_argument("--preset", choices=RANDOM_PRESETS, default="full", help="full: PixArt-XL's shapes; tiny: the small model's")
    build.add_argument("--sample-size", type=int, default=None, help="latent side: 32, 64, 128 (1024², the default of full) or 256")
    build.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="lcm", help="lcm: 4 steps, no guidance; dpm: 20 guided steps")
    args = parser.parse_args(argv)
    if args.command == "build-random":
        from .sources import build_random

        folder = build_random(args.out, args.preset, args.sample_size, args.scheduler)
        print(f"Built {folder}: PIXART_MODEL_ID={folder}")
    elif args.command == "demo":
        from .demo import build_demo, launch_demo

        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        launch_demo(build_demo(args.model, args.device), port=args.port, block=True)
    else:
        from .training import train_shapes_model

        settings = TrainingSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate, device=args.device)
        result = train_shapes_model(args.out, args.work, settings, args.dataset_size, args.vae_steps, resume=args.resume)
        log = args.work / "training-log.json"
        log.write_text(json.dumps({"settings": vars(settings), **result}, indent=1))
        print(f"Saved {args.out}; log {log}")


main()
