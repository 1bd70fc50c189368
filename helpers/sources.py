"""Model sources: a model id (a hub id, a local diffusers folder, ``tiny``, ``shapes``) resolved to a local diffusers
folder, and the diffusers pipeline class that folder holds."""

from __future__ import annotations

import json
from pathlib import Path

from .building import PIPELINE_CLASSES, TINY_VAE_FOLDER, build_tiny_pipeline
from .settings import MODEL_INDEX, MODEL_ROOT, SHIPPED_MODEL_IDS, TINY_MODEL_IDS

# The tiny VAEs (TAESD) that decode each family's latents: SD's VAE for PixArt-α, SDXL's for PixArt-Σ.
TAESD_REPOS = {"PixArtAlphaPipeline": "madebyollin/taesd", "PixArtSigmaPipeline": "madebyollin/taesdxl"}


class ModelSourceError(RuntimeError):
    """A model id that can't be resolved to a diffusers folder, with the ways forward in its message."""


def resolve_model_source(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """Turn a model id into a local diffusers folder.

    ``tiny`` and ``tiny-standard`` are built offline (once, cached under ``model/``); ``shapes`` is the small model
    trained here (``python -m helpers train``) into ``model/shapes/diffusers``; a folder with a ``model_index.json`` is used as it is;
    anything else is a hub id, downloaded (or found in the hub cache).
    """
    if model_id in TINY_MODEL_IDS:
        return build_tiny_pipeline(Path(root) / model_id / "diffusers", model_id)
    if model_id in SHIPPED_MODEL_IDS:
        return shipped_model(model_id, root)
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / MODEL_INDEX).is_file():
            raise ModelSourceError(f"{local} has no {MODEL_INDEX}: point PIXART_MODEL_ID at a diffusers pipeline folder.")
        return local
    return _download_from_hub(model_id)


def shipped_model(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """The diffusers folder of a model trained here (``model/<id>/diffusers``), or an error saying how to make it."""
    folder = Path(root) / model_id / "diffusers"
    if not (folder / MODEL_INDEX).is_file():
        raise ModelSourceError(
            f"No trained '{model_id}' model in {folder}: it ships with the repository (`git checkout -- model/{model_id}` "
            f"restores it), or train it again with `python -m helpers train --out {folder}` (notebook 6 shows each "
            f"step); PIXART_MODEL_ID=tiny is a small model built offline."
        )
    return folder


def _download_from_hub(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    # The diffusers weights only: the repos also hold the original .pth checkpoints and duplicate .bin files.
    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise ModelSourceError(
            f"Can't get '{model_id}': it is not in the local Hugging Face cache and the hub can't be reached or has "
            f"no such model ({type(error).__name__}). Use PIXART_MODEL_ID=tiny for a small PixArt built offline, or "
            f"PIXART_MODEL_ID=/path/to/a/diffusers/folder for a checkpoint you copied here."
        ) from error


def pipeline_class_name(folder: Path) -> str:
    """``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline``: the pipeline a diffusers folder was saved from."""
    name = json.loads((Path(folder) / MODEL_INDEX).read_text())["_class_name"]
    if name not in PIPELINE_CLASSES:
        raise ModelSourceError(f"{folder} holds a {name}, not a PixArt-α or PixArt-Σ pipeline ({', '.join(PIPELINE_CLASSES)}).")
    return name


def diffusers_pipeline_class(folder: Path):
    """diffusers' own pipeline class of a PixArt folder (α or Σ)."""
    import diffusers

    return getattr(diffusers, pipeline_class_name(folder))


def tiny_vae_source(folder: Path) -> Path | None:
    """The tiny VAE (an ``AutoencoderTiny`` folder) for the model in a diffusers folder: its own ``tiny_vae/`` (the
    models built or trained here have one), else the TAESD of its family from the hub; None when neither is there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    own = Path(folder) / TINY_VAE_FOLDER
    if (own / "config.json").is_file():
        return own
    try:
        return Path(snapshot_download(TAESD_REPOS[pipeline_class_name(folder)], allow_patterns=["config.json", "*.safetensors"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        return None
