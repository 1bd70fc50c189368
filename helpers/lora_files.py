"""LoRA files as PixArt users have them, read into one form: per model part, per linear layer, the down (A) and up (B)
matrices and alpha.

Three formats:
- a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``), as PixArt's LoRA training script and
  ``PeftModel.save_pretrained`` write it (keys ``base_model.model.<layer>.lora_A.weight``), alpha from the config;
- one ``.safetensors`` in diffusers' key style (``transformer.<layer>.lora_A.weight``, T5's as ``text_encoder.…``),
  alpha from the ``lora_adapter_metadata`` diffusers writes, from ``<layer>.alpha`` keys, or the rank;
- one ``.safetensors`` in kohya's style, as community trainers such as OneTrainer write it
  (``lora_transformer_<layer with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, T5's as ``lora_te_…``).
A file without alpha means alpha = rank (scale 1), as ComfyUI reads the PixArt script's files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
KOHYA_PREFIXES = {"lora_transformer_": "transformer", "lora_unet_": "transformer", "lora_te_": "text_encoder", "lora_te1_": "text_encoder"}
DIFFUSERS_PREFIXES = {"transformer.": "transformer", "text_encoder.": "text_encoder"}
_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}


class NotALoraError(ValueError):
    """The file or folder holds no LoRA adapter in a format this project reads."""


@dataclass(frozen=True)
class LoraLayer:
    """One layer's adapter: ``down`` (A, rank × in), ``up`` (B, out × rank); the update is ``alpha / rank · B A``."""

    down: np.ndarray
    up: np.ndarray
    alpha: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, weight: float = 1.0) -> np.ndarray:
        """The change to the layer's weights (out × in) at strength ``weight``."""
        return (weight * self.scale) * (self.up @ self.down)


@dataclass(frozen=True)
class LoraFile:
    """An adapter as read from disk: its layers by part (``transformer``, ``text_encoder``) and by layer key (a torch
    module path, or kohya's underscored one until :func:`match_layers` resolves it)."""

    source: Path
    format: str
    parts: dict[str, dict[str, LoraLayer]]


def read_lora(path: str | Path) -> LoraFile:
    """Read a PEFT folder, or a diffusers- or kohya-style ``.safetensors`` file (see the module's docstring)."""
    path = Path(path)
    if path.is_dir():
        return _read_peft_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"No LoRA at {path}: give a PEFT folder (with {PEFT_CONFIG}) or a .safetensors file.")
    tensors, metadata = _read_safetensors(path)
    if any(key.startswith(PEFT_PREFIX) for key in tensors):
        return LoraFile(path, "peft", {"transformer": _layers(_strip(tensors, PEFT_PREFIX), {}, path)})
    for prefixes, kind in ((KOHYA_PREFIXES, "kohya"), (DIFFUSERS_PREFIXES, "diffusers")):
        parts = {part: _strip(tensors, prefix) for prefix, part in prefixes.items() if any(key.startswith(prefix) for key in tensors)}
        if parts and any(_role(key) for keys in parts.values() for key in keys):
            alphas = _metadata_alphas(metadata)
            return LoraFile(path, kind, {part: _layers(found, alphas.get(part, {}), path) for part, found in parts.items()})
    raise NotALoraError(
        f"{path} holds no LoRA: expected lora_A/lora_B keys (PEFT, diffusers) or lora_down/lora_up keys with a "
        f"lora_transformer_ prefix (kohya); its keys start {', '.join(sorted(tensors)[:3]) or '(none)'}."
    )


def _read_peft_folder(folder: Path) -> LoraFile:
    if not (folder / PEFT_CONFIG).is_file() or not (folder / PEFT_WEIGHTS).is_file():
        raise NotALoraError(f"{folder} is no PEFT adapter folder: it needs {PEFT_CONFIG} and {PEFT_WEIGHTS}, as peft's save_pretrained writes.")
    config = json.loads((folder / PEFT_CONFIG).read_text())
    if config.get("use_dora"):
        raise NotALoraError(f"{folder} is a DoRA adapter (use_dora): only plain LoRA adapters run here.")
    tensors, _ = _read_safetensors(folder / PEFT_WEIGHTS)
    layers = _layers(_strip(tensors, PEFT_PREFIX), {}, folder, config)
    return LoraFile(folder, "peft", {"transformer": layers})


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The file's tensors as float32 arrays (bf16 included) and its metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as file:
            return {key: file.get_tensor(key).float().numpy() for key in file.keys()}, file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise NotALoraError(f"{path} is not a safetensors file ({error}): a LoRA comes as .safetensors or a PEFT folder.") from error


def _strip(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key.removeprefix(prefix): value for key, value in tensors.items() if key.startswith(prefix)}


def _role(key: str) -> tuple[str, str] | None:
    """(layer, "down" | "up" | "alpha") of a key, or None for a key that is no LoRA tensor."""
    for suffix, role in _SUFFIXES.items():
        if key.endswith(suffix):
            return key.removesuffix(suffix), role
    return None


def _metadata_alphas(metadata: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per part, the ``lora_alpha`` and ``r`` diffusers' ``save_lora_weights`` records in the file's metadata."""
    packed = json.loads(metadata.get("lora_adapter_metadata", "{}"))
    parts: dict[str, dict] = {}
    for key, value in packed.items():
        part, _, name = key.partition(".")
        parts.setdefault(part, {})[name] = value
    return parts


def _layers(tensors: dict[str, np.ndarray], metadata: dict, source: Path, config: dict | None = None) -> dict[str, LoraLayer]:
    """Pair each layer's down and up matrices, with its alpha: its ``.alpha`` key, the PEFT config's (or the file
    metadata's) ``lora_alpha`` and patterns, else the rank."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        role = _role(key)
        if role:
            found.setdefault(role[0], {})[role[1]] = value
    config = config or metadata
    layers = {}
    for layer, roles in found.items():
        if "down" not in roles or "up" not in roles:
            raise NotALoraError(f"{source}: layer {layer} has {' and '.join(sorted(roles))} but no {'up (lora_B)' if 'up' not in roles else 'down (lora_A)'} matrix.")
        down, up = roles["down"].reshape(roles["down"].shape[0], -1), roles["up"].reshape(roles["up"].shape[0], -1)
        alpha = roles.get("alpha", _config_alpha(config, layer, down.shape[0]))
        layers[layer] = LoraLayer(down, up, float(np.asarray(alpha).reshape(-1)[0]))
    if not layers:
        raise NotALoraError(f"{source} holds no lora_A/lora_B (or lora_down/lora_up) pairs.")
    return layers


def _config_alpha(config: dict, layer: str, rank: int) -> float:
    """alpha from a PEFT config: its ``alpha_pattern`` entry for the layer, else ``lora_alpha``, else the rank; with
    rsLoRA (scale alpha/√rank) given back as the alpha that makes alpha / rank that scale."""
    pattern = next((value for key, value in (config.get("alpha_pattern") or {}).items() if layer == key or layer.endswith("." + key)), None)
    alpha = pattern if pattern is not None else config.get("lora_alpha", rank)
    return alpha * np.sqrt(rank) if config.get("use_rslora") else alpha


def match_layers(lora: LoraFile, part: str, known: set[str]) -> dict[str, LoraLayer]:
    """The adapter's layers for ``part`` keyed by the part's layer names (``known``); kohya's underscored keys are
    matched by underscoring the known ones. Keys that match no layer are refused, all of them listed."""
    layers = lora.parts.get(part, {})
    underscored = {name.replace(".", "_"): name for name in known}
    matched = {key if key in known else underscored.get(key, ""): layer for key, layer in layers.items()}
    unmatched = sorted(key for key in layers if key not in known and key not in underscored)
    if unmatched:
        raise NotALoraError(
            f"{lora.source}: {len(unmatched)} of its {part} layers match no linear layer of this model: "
            f"{', '.join(unmatched[:8])}{' …' if len(unmatched) > 8 else ''}. It was made for another model."
        )
    return matched
