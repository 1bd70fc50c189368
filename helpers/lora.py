"""LoRA adapters on the OpenVINO pipeline, with diffusers' names: ``load_lora_weights``, ``set_adapters``,
``disable_lora`` / ``enable_lora``, ``fuse_lora`` / ``unfuse_lora``, ``unload_lora_weights``, ``delete_adapters``,
``get_active_adapters``, ``get_list_adapters``.

The first adapter gives each layer it touches a run-time branch (``helpers.lora_graph``), compiled once; switching
adapters or strengths after that only changes the A and B matrices fed to the compiled model. ``fuse_lora`` folds the
active adapters into the weights instead (compiled again; the fastest steps). The pieces of the transformer (step
cache, token downsampling, static shapes) run the same IR, so they carry the branches too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import openvino as ov

from .lora_files import PEFT_CONFIG, LoraLayer, match_layers, read_lora
from .lora_graph import (
    adapter_feed,
    add_branches,
    check_fits,
    check_foldable,
    fuse_into_weights,
    layer_shape,
    linear_layers,
)
from .settings import MODEL_ROOT, model_name
from .variants import IR_NAME

LORA_PARTS = ("transformer", "text_encoder")  # the parts adapters can touch
LORA_FOLDER = "lora"  # a model's adapters: model/<model-name>/lora/<name> (a PEFT folder or a .safetensors file)


@dataclass
class Adapters:
    """The adapters loaded into one pipeline, shared by its parts: what each part's IR gets (branches, fused weights)
    and what it is fed at each call (the active adapters' matrices, stacked along the rank and scaled)."""

    shapes: dict[str, dict[str, tuple[int, int]]]  # part → layer → (out, in): the layers adapters may touch
    loaded: dict[str, dict[str, dict[str, LoraLayer]]] = field(default_factory=dict)  # name → part → layer → LoRA
    weights: dict[str, float] = field(default_factory=dict)  # the active adapters and their strengths, in order
    enabled: bool = True
    fused: dict[str, float] = field(default_factory=dict)  # adapters folded into the weights, at these strengths
    _feeds: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def branched(self, part: str) -> list[str]:
        """The layers of ``part`` with a run-time branch: those of every loaded adapter not fused."""
        return sorted({layer for name, parts in self.loaded.items() if name not in self.fused for layer in parts.get(part, {})})

    def changes(self, part: str) -> bool:
        """Whether the adapters change ``part``'s IR (asked at every call: no matrix is multiplied here)."""
        return bool(self.branched(part)) or any(part in self.loaded[name] for name in self.fused)

    def fused_deltas(self, part: str) -> dict[str, np.ndarray]:
        deltas: dict[str, np.ndarray] = {}
        for name, weight in self.fused.items():
            for layer, lora in self.loaded[name].get(part, {}).items():
                deltas[layer] = deltas.get(layer, 0) + lora.delta(weight)
        return deltas

    def edit(self, model: ov.Model, part: str) -> ov.Model:
        """The part's IR with the fused adapters in its weights and a branch beside each adapted layer."""
        deltas = self.fused_deltas(part)
        if deltas:
            fuse_into_weights(model, deltas)
        return add_branches(model, self.branched(part)) if self.branched(part) else model

    def feed(self, part: str) -> dict[str, np.ndarray]:
        """The branch inputs of ``part`` for the adapters active now (computed once per change)."""
        if part not in self._feeds:
            self._feeds[part] = adapter_feed(self.branched(part), self.stacks(part), self.shapes.get(part, {}))
        return self._feeds[part]

    def stacks(self, part: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per layer, the active (unfused) adapters' A matrices stacked along the rank, and their B matrices scaled by
        weight × alpha / rank and stacked alike: one branch computes their weighted sum."""
        pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        active = {name: weight for name, weight in self.weights.items() if name not in self.fused} if self.enabled else {}
        for name, weight in active.items():
            for layer, lora in self.loaded[name].get(part, {}).items():
                pieces.setdefault(layer, []).append((lora.down, lora.up * (weight * lora.scale)))
        return {layer: (np.concatenate([d for d, _ in p]).astype(np.float32), np.concatenate([u for _, u in p], axis=1).astype(np.float32))
                for layer, p in pieces.items()}

    def changed(self) -> None:
        self._feeds.clear()


def model_parts(parts: Iterable) -> Iterator:
    """The OpenVINO model parts inside the pipeline's parts (a ``-ToDo`` transformer holds two)."""
    for part in parts:
        inner = [getattr(part, name) for name in ("exact", "downsampled") if hasattr(part, "downsampled")]
        yield from inner or [part]


class OVLoraMixin:
    """diffusers' LoRA calls on the OpenVINO pipeline (see the module's docstring)."""

    lora_adapters: Adapters | None = None

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict: str | Path, adapter_name: str | None = None, **kwargs) -> None:
        """Load an adapter (a PEFT folder, or a diffusers- or kohya-style ``.safetensors``) and make it the active one
        at strength 1, as diffusers does. Checked whole before anything changes: a layer it does not fit, or keys
        that match no layer, refuse it and leave the pipeline as it was. ``weight_name`` picks a file in a folder."""
        path = Path(pretrained_model_name_or_path_or_dict)
        if kwargs.get("weight_name"):
            path = path / kwargs.pop("weight_name")
        adapters = self.lora_adapters or Adapters(self.adapter_layer_shapes())
        name = adapter_name or f"default_{len(adapters.loaded)}"
        if name in adapters.loaded:
            raise ValueError(f"Adapter name {name!r} is already in use: pick another adapter_name, or delete_adapters({name!r}) first.")
        adapters.loaded[name] = self.fitted_layers(read_lora(path), adapters)
        self.use_adapters(adapters, release=set(adapters.loaded[name]))
        self.set_adapters(name)

    def adapter_layer_shapes(self) -> dict[str, dict[str, tuple[int, int]]]:
        """(out, in) of each linear layer of the parts adapters may touch, read from their IRs."""
        shapes = {}
        for part in LORA_PARTS:
            folder = getattr(self, part).folder
            shapes[part] = {layer: layer_shape(node) for layer, node in linear_layers(self.part_maker.core.read_model(folder / IR_NAME)).items()}
        return shapes

    @staticmethod
    def fitted_layers(lora, adapters: Adapters) -> dict[str, dict[str, LoraLayer]]:
        """The adapter's layers per part, each checked against the layer it names."""
        fitted = {}
        for part, known in adapters.shapes.items():
            layers = match_layers(lora, part, set(known))
            for layer, weights in layers.items():
                check_fits(layer, known[layer], weights.down, weights.up)
            if layers:
                fitted[part] = layers
        return fitted

    def use_adapters(self, adapters: Adapters, release: set[str]) -> None:
        """Give every model part the adapters; the parts in ``release`` compile again at their next call."""
        self.lora_adapters = self.part_maker.adapters = adapters
        adapters.changed()
        for part in model_parts(self.parts):
            part.adapters = adapters
            if part.part_name in release:
                part.release()

    def set_adapters(self, adapter_names: str | list[str], adapter_weights: float | list[float] | None = None) -> None:
        """Make these adapters the active ones, at these strengths (default 1; 0 draws the base picture). Compiles
        nothing."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = adapter_weights if isinstance(adapter_weights, list) else [1.0 if adapter_weights is None else adapter_weights] * len(names)
        self.check_adapter_names(names)
        if len(weights) != len(names):
            raise ValueError(f"set_adapters got {len(names)} adapter names but {len(weights)} adapter_weights: give one weight per adapter.")
        self.lora_adapters.weights = dict(zip(names, map(float, weights)))
        self.lora_adapters.changed()

    def check_adapter_names(self, names: list[str]) -> None:
        loaded = list(self.lora_adapters.loaded) if self.lora_adapters else []
        unknown = [name for name in names if name not in loaded]
        if unknown:
            raise ValueError(f"No adapter named {', '.join(map(repr, unknown))}: loaded are {loaded or 'none'} (load_lora_weights(path, adapter_name=...) loads one).")

    def get_active_adapters(self) -> list[str]:
        adapters = self.lora_adapters
        return list(adapters.weights) if adapters and adapters.enabled else []

    def get_list_adapters(self) -> dict[str, list[str]]:
        """The loaded adapters of each part, as diffusers lists them."""
        adapters = self.lora_adapters.loaded if self.lora_adapters else {}
        return {part: [name for name, parts in adapters.items() if part in parts] for part in LORA_PARTS if any(part in p for p in adapters.values())}

    def disable_lora(self) -> None:
        """Draw without the adapters (they stay loaded; compiles nothing)."""
        self.set_lora_enabled(False)

    def enable_lora(self) -> None:
        self.set_lora_enabled(True)

    def set_lora_enabled(self, enabled: bool) -> None:
        if self.lora_adapters:
            self.lora_adapters.enabled = enabled
            self.lora_adapters.changed()

    def delete_adapters(self, adapter_names: str | list[str]) -> None:
        """Forget these adapters; the layers only they touched lose their branch (compiled again at the next call)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        self.check_adapter_names(names)
        adapters = self.lora_adapters
        touched = {part for name in names for part in adapters.loaded[name]}
        for name in names:
            del adapters.loaded[name]
            adapters.weights.pop(name, None)
            adapters.fused.pop(name, None)
        self.use_adapters(adapters, release=touched)

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the parts compile their plain IRs again at their next call."""
        if self.lora_adapters:
            self.delete_adapters(list(self.lora_adapters.loaded))
            for part in model_parts(self.parts):
                part.adapters = None
            self.lora_adapters = self.part_maker.adapters = None

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: list[str] | None = None, **_) -> None:
        """Fold the active adapters (or ``adapter_names``), at their strengths times ``lora_scale``, into the weights:
        no branch runs for them (compiled again at the next call). Only floating-point weights take it: a compressed
        variant's layer is refused, named, and nothing is fused."""
        adapters = self.lora_adapters
        names = list(adapter_names or self.get_active_adapters())
        self.check_adapter_names(names)
        fused = adapters.fused | {name: adapters.weights.get(name, 1.0) * lora_scale for name in names}
        for part in LORA_PARTS:  # refuse before anything changes
            layers = {layer for name in fused for layer in adapters.loaded[name].get(part, {})}
            if layers:
                check_foldable(linear_layers(self.part_maker.core.read_model(getattr(self, part).folder / IR_NAME)), layers)
        adapters.fused = fused
        self.use_adapters(adapters, release={part for name in names for part in adapters.loaded[name]})

    def unfuse_lora(self, **_) -> None:
        """Take the fused adapters back out of the weights; they run as branches again, at their strengths."""
        if self.lora_adapters and self.lora_adapters.fused:
            touched = {part for name in self.lora_adapters.fused for part in self.lora_adapters.loaded[name]}
            self.lora_adapters.fused.clear()
            self.use_adapters(self.lora_adapters, release=touched)


# --- where users meet adapters: a model's adapters on disk, the command line's PATH[:STRENGTH] ------------------------


def lora_dir(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """Where a model's adapters live: ``model/<model-name>/lora/`` (notebook 9 saves its adapter there)."""
    return Path(root) / model_name(model_id) / LORA_FOLDER


def available_loras(model_id: str, root: Path = MODEL_ROOT) -> dict[str, Path]:
    """The adapters in :func:`lora_dir`, by name (a PEFT folder's name, a file's stem)."""
    folder = lora_dir(model_id, root)
    entries = sorted(folder.iterdir()) if folder.is_dir() else []
    return {entry.stem: entry for entry in entries if (entry / PEFT_CONFIG).is_file() or entry.suffix == ".safetensors"}


def parse_lora(text: str, known: dict[str, Path] | None = None) -> tuple[str, Path, float]:
    """``PATH[:STRENGTH]`` (or a name of ``known``) → (adapter name, path, strength); the strength defaults to 1."""
    where, _, strength = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        weight = float(strength) if strength else 1.0
    except ValueError:
        where, weight = text, 1.0  # a colon inside the path
    path = (known or {}).get(where, Path(where))
    if not path.exists():
        names = ", ".join(known or {}) or "none here"
        raise ValueError(f"No LoRA at {where!r}: give a PEFT folder or a .safetensors file, or the name of one in model/<model>/lora/ ({names}).")
    return path.stem, path, weight


def load_adapters(pipe: OVLoraMixin, adapters: list[tuple[str, Path, float]]) -> None:
    """Load each (name, path, strength) and make them all active at their strengths."""
    for name, path, _ in adapters:
        pipe.load_lora_weights(path, adapter_name=name)
    if adapters:
        pipe.set_adapters([name for name, _, _ in adapters], [weight for _, _, weight in adapters])
