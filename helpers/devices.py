"""Devices and memory: the devices OpenVINO sees, the precision one computes in, and whether a variant fits in
this machine's memory once compiled (what ``from_pretrained`` decides its low-memory mode by)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino as ov

from .machine import memory_gib
from .settings import F32_CONFIG
from .variants import Variant, as_variant


def available_devices(core: ov.Core | None = None) -> list[str]:
    """The devices OpenVINO sees here, plus ``AUTO`` (its own choice among them)."""
    return [*(core or ov.Core()).available_devices, "AUTO"]


def check_device(device: Any, core: ov.Core | None = None) -> str:
    """The OpenVINO name of ``device`` if OpenVINO can compile for it, else a ``ValueError`` listing the devices.

    Devices as diffusers and optimum-intel users write them are taken: ``"cpu"`` and ``torch.device("cpu")`` are
    ``CPU``, and names are upper case (``"gpu"``: ``GPU``)."""
    device = str(getattr(device, "type", device)).upper()  # a torch.device names its kind in .type
    devices = available_devices(core)
    if device not in devices and device.split(":")[0] not in ("AUTO", "MULTI", "HETERO"):
        raise ValueError(f"Unknown device '{device}': choose one of {', '.join(devices)}.")
    return device


def compute_precision(device: str = "CPU", ov_config: dict | None = None, core: ov.Core | None = None) -> str:
    """The floating-point precision the device computes in: the hint in ``ov_config``, else the device's default.

    On CPUs with AMX or AVX512-BF16 the default is bf16; without, f32 (``AUTO`` picks the CPU here).
    """
    hint = (ov_config or {}).get("INFERENCE_PRECISION_HINT")
    if not hint:
        device = "CPU" if device.startswith(("AUTO", "MULTI", "HETERO")) else device
        hint = (core or ov.Core()).get_property(device, "INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if isinstance(hint, ov.Type) else str(hint).lower()  # the plugin answers an ov.Type
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(name, name)


def weights_in_memory_gib(variant: Variant | Path, precision: str) -> float:
    """What a variant's weights take in memory once compiled: compressed parts as stored; FP16 parts in ``precision``.

    OpenVINO holds float weights in the precision it computes in (f32: twice the FP16 file) and keeps INT8/INT4
    weights compressed. Activations come on top.
    """
    variant = as_variant(variant)
    growth = 2.0 if precision == "f32" else 1.0
    held_mb = sum(mb * (1.0 if part in variant.compression else growth) for part, mb in variant.part_sizes_mb().items())
    return held_mb * 1e6 / 2**30


# The share of memory a variant's weights may take with every part compiled: the rest is for activations
# (1024² attention and VAE decode take GBs), the notebook and the system.
MEMORY_SHARE = 0.7


def fits_in_memory(variant: Variant | Path, device: str = "CPU", ov_config: dict | None = None, core: ov.Core | None = None) -> bool:
    """True when the whole variant, compiled, fits in ``MEMORY_SHARE`` of this machine's memory."""
    precision = compute_precision(device, ov_config, core)
    return weights_in_memory_gib(variant, precision) <= MEMORY_SHARE * memory_gib()


def parity_config(variant: Variant | Path, device: str = "CPU") -> dict:
    """Compile settings for checking a variant against PyTorch: the f32 hint where the whole variant fits in memory
    in f32 (the check then measures the conversion alone), else the device's default precision (what users run)."""
    return dict(F32_CONFIG) if fits_in_memory(variant, device, F32_CONFIG) else {}


def device_widget(default: str = "AUTO"):
    """A dropdown of the devices OpenVINO sees here, plus AUTO."""
    import ipywidgets as widgets

    devices = available_devices()
    return widgets.Dropdown(options=devices, value=default if default in devices else devices[0], description="Device:")
