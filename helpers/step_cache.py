"""Step caching: reuse the work of the transformer's blocks between neighbouring denoising steps (First Block Cache).

At each step the first block runs; when its residual (its output minus its input) has moved less than ``threshold``
(mean absolute change over mean absolute value) since the last step computed in full, the other blocks are skipped
and the residual they added at that step is added again; otherwise they run and their residual is kept. The output
head runs every step, with the step's own timestep. This is diffusers' ``FirstBlockCache`` (``diffusers.hooks``),
decision for decision: :func:`torch_first_block_cache` applies diffusers' own hooks to the PyTorch transformer, and
the OpenVINO transformer (``helpers.parts.OVTransformer``) runs the same rule over three pieces of its one IR.

The conversion gives the transformer IR three extra outputs, the cut points: the patch embedding (block 0's input),
block 0's output and the last block's output. :func:`cache_segments` cuts the IR there at load time into "first"
(embeddings and block 0), "blocks" (the others) and "head" (the output head), so every variant made from one
conversion (FP16, INT8, INT4-T5, W8A8) has them, and the variant folder keeps one transformer IR.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import openvino as ov
import torch

from .settings import STEP_CACHE_THRESHOLD as DEFAULT_THRESHOLD

EMBEDDED, FIRST_BLOCK, LAST_BLOCK = "step_cache.embedded", "step_cache.first_block", "step_cache.last_block"
CUT_POINTS = (EMBEDDED, FIRST_BLOCK, LAST_BLOCK)


class StepCacheUnavailableError(RuntimeError):
    """A transformer IR converted before step caching existed: it has no cut points."""


def cut_point_modules(transformer: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """The modules whose outputs are the cut points, in the order of :data:`CUT_POINTS`."""
    blocks = transformer.transformer_blocks
    if len(blocks) < 2:
        raise ValueError(f"Step caching needs at least 2 transformer blocks; this transformer has {len(blocks)}.")
    return transformer.pos_embed, blocks[0], blocks[-1]


@contextlib.contextmanager
def captured_cut_points(transformer: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """While the block runs, the outputs of the cut-point modules of each forward are appended to the yielded list."""
    captured: list[torch.Tensor] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out: captured.append(out)) for module in cut_point_modules(transformer)]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


# --- the OpenVINO side: the IR cut into three models at load time ------------------------------------------------


def _output_names(model: ov.Model) -> set[str]:
    return {name for output in model.outputs for name in output.get_names()}


def has_cut_points(model: ov.Model) -> bool:
    return set(CUT_POINTS) <= _output_names(model)


def _cut_point(model: ov.Model, name: str) -> ov.Output:
    """The tensor a cut-point output carries (the producer's output, not the Result's)."""
    return model.output(name).get_node().input_value(0)


def _model(results: list[ov.Output], parameters: list[ov.op.Parameter], name: str) -> ov.Model:
    """A model computing ``results``, taking those of ``parameters`` they depend on."""
    reached, seen, stack = set(), set(), [value.get_node() for value in results]
    while stack:
        node = stack.pop()
        if node.get_friendly_name() in seen:
            continue
        seen.add(node.get_friendly_name())
        if node.get_type_name() == "Parameter":
            reached.add(node.get_friendly_name())
        stack.extend(value.get_node() for value in node.input_values())
    outputs = [ov.opset13.result(value) for value in results]
    return ov.Model(outputs, [p for p in parameters if p.get_friendly_name() in reached], name)


def _as_input(model: ov.Model, name: str) -> ov.op.Parameter:
    """Replace the cut point ``name`` of ``model`` (a copy of the IR) by a parameter of that name."""
    value = _cut_point(model, name)
    parameter = ov.opset13.parameter(value.get_partial_shape(), value.get_element_type(), name=name)
    parameter.output(0).get_tensor().set_names({name})
    for target in list(value.get_target_inputs()):
        target.replace_source_output(parameter.output(0))
    return parameter


def whole_model(model: ov.Model) -> ov.Model:
    """The IR without its cut-point outputs: the transformer as one model, as it runs with the cache off."""
    for name in set(CUT_POINTS) & _output_names(model):
        model.remove_result(model.output(name).get_node())
    return model


def cache_segments(read: Callable[[], ov.Model]) -> dict[str, ov.Model]:
    """The three models the cached transformer runs, each cut from its own copy of the IR (``read()``).

    "first": the IR's inputs → block 0's input and output. "blocks": block 0's output (and the conditioning
    inputs) → the last block's output. "head": the last block's output → the sample.
    """
    first = read()
    if not has_cut_points(first):
        raise StepCacheUnavailableError("the transformer IR has no step-cache cut points")
    segments = {"first": _model([_cut_point(first, FIRST_BLOCK), _cut_point(first, EMBEDDED)], first.get_parameters(), "first")}
    blocks = read()
    parameter = _as_input(blocks, FIRST_BLOCK)
    segments["blocks"] = _model([_cut_point(blocks, LAST_BLOCK)], [parameter, *blocks.get_parameters()], "blocks")
    head = read()
    parameter = _as_input(head, LAST_BLOCK)
    segments["head"] = _model([head.output(0).get_node().input_value(0)], [parameter, *head.get_parameters()], "head")
    segments["head"].outputs[0].get_tensor().set_names({"sample"})
    return segments


# --- the decision, as diffusers' FirstBlockCache makes it -----------------------------------------------------------


class FirstBlockCache:
    """The state and rule of First Block Cache for one picture's denoising loop (``reset()`` between pictures).

    It works on NumPy arrays, as OpenVINO returns them: torch's multithreaded element-wise ops between two inferences
    leave its OpenMP threads spinning on the cores OpenVINO's next inference needs (2.4× slower steps on 2 cores).

    ``threshold`` 0 computes every step (the same picture as no cache). Counts ``computed`` and ``reused`` steps.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold >= 0:
            raise ValueError(f"step cache threshold={threshold!r} is not allowed: use 0 or more (0: every step computed; default {DEFAULT_THRESHOLD}).")
        self.threshold = float(threshold)
        self.reset()

    def reset(self) -> None:
        self.first_block_residual: np.ndarray | None = None  # at the last step computed in full
        self.blocks_residual: np.ndarray | None = None
        self.computed = self.reused = 0

    def should_compute(self, first_block_residual: np.ndarray) -> bool:
        previous = self.first_block_residual
        if previous is None or previous.shape != first_block_residual.shape:
            return True
        change = np.abs(first_block_residual - previous).mean() / np.abs(previous).mean()
        return bool(change > self.threshold)

    def __call__(self, embedded: np.ndarray, first_block: np.ndarray, other_blocks: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The last block's output for this step: ``other_blocks(first_block)`` computed, or the cached residual."""
        residual = first_block - embedded
        if self.should_compute(residual):
            last_block = other_blocks(first_block)
            self.first_block_residual, self.blocks_residual = residual, last_block - first_block
            self.computed += 1
            return last_block
        self.reused += 1
        return first_block + self.blocks_residual

    @property
    def counts(self) -> dict[str, int]:
        return {"computed": self.computed, "reused": self.reused}


def describe(counts: dict[str, int]) -> str:
    """``"12 steps computed, 8 reused"``."""
    return f"{counts['computed']} steps computed, {counts['reused']} reused"


# --- the PyTorch reference: diffusers' own First Block Cache on PixArtTransformer2DModel ----------------------------


@contextlib.contextmanager
def torch_first_block_cache(transformer: torch.nn.Module, threshold: float = DEFAULT_THRESHOLD) -> Iterator[dict[str, int]]:
    """diffusers' own First Block Cache on a PyTorch PixArt transformer, for the pictures drawn inside the block.

    PixArt's pipelines open no cache context (diffusers' hooks then fail with "No cache context is set") and its
    transformer has no ``CacheMixin``: the hooks are applied and their context set here, as ``CacheMixin`` does.
    Yields the step counts, updated at each call. Start a new ``with`` for each picture: the state lives as long as
    the block.
    """
    from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, apply_first_block_cache
    from diffusers.hooks.first_block_cache import _FBC_BLOCK_HOOK, _FBC_LEADER_BLOCK_HOOK
    from diffusers.hooks.hooks import CacheContext, _set_cache_context

    FirstBlockCache(threshold)  # the same check of the threshold
    apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=threshold))
    head = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0]).get_hook(_FBC_LEADER_BLOCK_HOOK)
    counts = {"computed": 0, "reused": 0}

    def count(*_):
        counts["computed" if head.state_manager.get_state().should_compute else "reused"] += 1

    counter = transformer.register_forward_hook(count)
    _set_cache_context(transformer, CacheContext("pixart"))
    try:
        yield counts
    finally:
        counter.remove()
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        registry.remove_hook(_FBC_LEADER_BLOCK_HOOK, recurse=True)
        registry.remove_hook(_FBC_BLOCK_HOOK, recurse=True)


def step_cache_missing_message(folder: Path) -> str:
    """Why a variant folder has no step cache, and how to remake it with one."""
    fp16 = folder.parent / "FP16"
    remake = f"delete {folder}" + (f" and {fp16}" if folder != fp16 else "")
    return (
        f"The model at {folder} was converted before step caching: its transformer IR has no cut points, so it draws "
        f"without the step cache. For the cache, {remake}, then run notebook 1 (01-convert) or `python -m helpers "
        f"convert --model {folder.parent.name}`" + ("" if folder == fp16 else f" and notebook 3 (03-compress) or `python -m helpers compress --model {folder.parent.name} --variant {folder.name}`") + "."
    )
