"""What each command of the terminal route does (``helpers.cli`` reads the command line): the functions the notebooks
call, with what the command prints."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path


def run_convert(args) -> None:
    from .conversion import convert_pipeline
    from .sources import resolve_model_source
    from .variants import folder_size_mb, variant_dir

    warnings.filterwarnings("ignore", module=r"(torch|diffusers|transformers)\b")  # tracing's shape notes, expected
    source = resolve_model_source(args.model, root=args.model_root)
    out = args.out or variant_dir(args.model, "FP16", args.model_root)
    start = time.perf_counter()
    convert_pipeline(source, out)
    print(f"Converted {args.model} into {out} ({folder_size_mb(out):.1f} MB) in {time.perf_counter() - start:.0f} s")


def run_compress(args) -> None:
    from .compression import calibration_prompts, collect_calibration_data, compress_variant, make_downsampled_variant
    from .schemes import COMPRESSION_SCHEMES
    from .sources import resolve_model_source
    from .token_downsampling import TokenDownsampling, parse_blocks
    from .variants import DOWNSAMPLED_VARIANTS, Variant, folder_size_mb, variant_dir

    fp16 = Variant.of(args.model, "FP16", args.model_root)
    out = variant_dir(args.model, args.variant, args.model_root)
    start = time.perf_counter()

    def calibration(variant: Variant):
        side = args.calibration_side or variant.native_size[0]
        prompts = calibration_prompts(args.model, args.calibration_prompts)
        return collect_calibration_data(variant, prompts, height=side, width=side, device=args.device)

    if args.variant in DOWNSAMPLED_VARIANTS:
        warnings.filterwarnings("ignore", module=r"(torch|diffusers|transformers)\b")  # tracing's shape notes, expected
        downsampling = TokenDownsampling(args.downsampling_factor, parse_blocks(args.downsampled_blocks))
        source = resolve_model_source(args.model, root=args.model_root)
        make_downsampled_variant(source, fp16, out, downsampling, calibration)
    else:
        compress_variant(fp16, out, COMPRESSION_SCHEMES[args.variant], calibration=calibration)
    print(f"Compressed {fp16.folder} into {out} ({folder_size_mb(fp16.folder):.1f} → {folder_size_mb(out):.1f} MB) in {time.perf_counter() - start:.0f} s")


def loaded_pipeline(args, **options):
    """The pipeline of the variant the command names, on its device, with its --lora adapters (each printed)."""
    from .lora import available_loras, load_adapters, parse_lora
    from .pipeline import OVPixArtPipeline
    from .variants import Variant

    variant = Variant.of(args.model, args.variant, args.model_root)
    pipe = OVPixArtPipeline.from_pretrained(variant, args.device, step_cache=args.step_cache, decoder=args.decoder, **options)
    adapters = [parse_lora(text, available_loras(args.model, args.model_root)) for text in args.lora]
    load_adapters(pipe, adapters)
    for name, path, strength in adapters:
        print(f"LoRA {name} ({path}) at {strength:g}")
    return pipe


def check_limits(args, prompts: list[str]) -> None:
    """The images API's limits on a drawing command's options (``helpers.request_limits``), before a model loads."""
    from .request_limits import check_request_limits

    for index, prompt in enumerate(prompts):  # the n-th prompt's seed is seed + n - 1
        check_request_limits(prompt, args.negative_prompt, args.steps, args.images_per_prompt, args.seed + index, args.guidance)


def run_generate(args) -> None:
    import torch

    from .static_shapes import needs_static_shapes

    check_limits(args, args.prompt)
    static = args.static_shapes or needs_static_shapes(args.device)
    pipe = loaded_pipeline(args, compile=not static, downsampled_steps=args.downsampled_steps)
    height, width = args.size or (None, None)
    options = pipe.recipe.call_arguments(  # the recipe where the command line says nothing
        negative_prompt=args.negative_prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
        num_images_per_prompt=args.images_per_prompt, height=height, width=width, use_resolution_binning=not args.no_binning,
    )
    if args.vae_tiling:
        pipe.vae.enable_tiling()
        print(f"Decoding in tiles of {pipe.vae.tile_latent_size} latents, overlapping by {pipe.vae.tile_overlap}")
    if static:  # every prompt is one call of the same shapes
        pipe.reshape_for(args.prompt[0], **options)
        print(f"Static shapes: {pipe.static_shape.describe()}")
    for prompt in args.prompt:  # every prompt refused or taken before the first picture is drawn
        pipe.check_call_inputs(prompt, **options)
    images = []
    for index, prompt in enumerate(args.prompt):
        generator = torch.Generator("cpu").manual_seed(args.seed + index)
        output = pipe(prompt, generator=generator, **options)
        images += output.images
        print(f"{output.record.describe()} ({prompt!r})")
    save_pictures(images, args.out)


def run_edit(args) -> None:
    import torch

    from .edit_inputs import check_same_size, open_picture, own_size, rgb

    check_limits(args, [args.prompt])
    image = rgb(open_picture(args.image, "--image"))  # the files checked before any model loads
    mask = open_picture(args.mask, "--mask") if args.mask else None
    if mask is not None:
        check_same_size(mask, image, "--mask", "--image")
    height, width = args.size or own_size(image, "--image", "--size")
    pipe = loaded_pipeline(args)
    options = pipe.recipe.call_arguments(  # the recipe where the command line says nothing
        image=image, mask_image=mask, strength=args.strength, mask_blur=args.mask_blur, negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps, guidance_scale=args.guidance, num_images_per_prompt=args.images_per_prompt,
        height=height, width=width, use_resolution_binning=not args.no_binning,
    )
    output = pipe(args.prompt, generator=torch.Generator("cpu").manual_seed(args.seed), **options)
    kind = f"inpainting of {args.image} where {args.mask} is white" if mask is not None else f"image-to-image of {args.image}"
    print(f"{output.record.describe()} ({kind}, {args.prompt!r})")
    save_pictures(output.images, args.out)


def save_pictures(images: list, out: Path) -> None:
    """The pictures as PNG files: ``out``, or ``<stem>-1.png``, … for several (:func:`output_paths`)."""
    for path, image in zip(output_paths(out, len(images)), images):
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(f"Saved {path} ({image.width}×{image.height})")


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one picture; ``<stem>-1.png``, ``<stem>-2.png``, … beside it for several."""
    out = out if out.suffix else out.with_suffix(".png")
    return [out] if count == 1 else [out.with_name(f"{out.stem}-{n}{out.suffix}") for n in range(1, count + 1)]


def run_verify(args) -> None:
    from .variants import DOWNSAMPLED_VARIANTS, VARIANTS, Variant, VariantNotReadyError, damage_message, variant_dir

    every = (*VARIANTS, *DOWNSAMPLED_VARIANTS)
    folders = args.folder or [variant_dir(args.model, variant, args.model_root) for variant in args.variant or every]
    if not args.folder and not args.variant:
        folders = [folder for folder in folders if folder.is_dir()]
        if not folders:
            raise VariantNotReadyError(f"No variant folder of '{args.model}' under {args.model_root}: convert it first.")
    failed = []
    for folder in folders:
        try:
            variant = Variant.load(folder)  # unfinished, or a file missing or cut short: its message says the fix
        except VariantNotReadyError as error:
            failed.append(str(error))
            continue
        if problems := variant.damaged_files(checksums=True):
            failed.append(damage_message(folder, problems))
        else:
            print(f"{folder}: {len(variant.files)} files, sizes and checksums as written")
    if failed:
        raise VerifyError(" ".join(failed))


class VerifyError(ValueError):
    """A verify run that found damaged or unverifiable folders."""


def run_demo(args) -> None:
    from .demo import build_demo, launch_demo

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    launch_demo(build_demo(args.model, args.device, root=args.model_root), port=args.port, block=True)


def run_serve(args) -> None:
    from .serving import build_app, check_capacity, deploy, served_lora, served_model_id, shutdown, start_ray
    from .serving_access import api_key_of, check_exposure
    from .variants import Variant

    api_key = api_key_of(args.api_key, args.api_key_file)
    check_exposure(args.host, api_key, args.insecure)
    variant = Variant.of(args.model, args.variant, args.model_root)  # checked before Ray starts: which file, the fix
    threads = args.threads_per_replica or max(1, (os.cpu_count() or 1) // max(1, args.replicas))
    loras = dict(served_lora(text) for text in args.lora)
    app = build_app(variant, args.replicas, threads, api_key, args.max_queued, args.device, loras=loras)
    start_ray(args.address)
    try:
        check_capacity(args.replicas, threads)
        url = deploy(app, args.host, args.port)
        print(f"Serving {served_model_id(variant)}: {args.replicas} replica(s) × {threads} thread(s) at {url} "
              f"(POST {url}/images/generations, {url}/images/edits); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopped serving.", file=sys.stderr)
    finally:
        shutdown(graceful=bool(args.address))  # a cluster keeps running: take the application off it


def run_train(args) -> None:
    import json

    from .training import train_shapes_model
    from .training_transformer import TrainingPlan

    plan = TrainingPlan(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate, device=args.device)
    result = train_shapes_model(args.out, args.work, plan, args.dataset_size, args.vae_steps, resume=args.resume)
    log = args.work / "training-log.json"
    log.write_text(json.dumps({"plan": vars(plan), **result}, indent=1))
    print(f"Saved {args.out}; log {log}")


def run_build_random(args) -> None:
    from .building import build_random

    folder = build_random(args.out, args.preset, args.sample_size, args.scheduler, args.family)
    print(f"Built {folder}: PIXART_MODEL_ID={folder}")
