"""Step caching: reuse the work of the transformer's blocks between neighbouring denoising steps (First Block Cache).

At each step the first block runs; when its residual (its output minus its input) has moved less than ``threshold``
(mean absolute change over mean absolute value) since the last step computed in full, the other blocks are skipped
and the residual they added at that step is added again; otherwise they run and their residual is kept. The output
head runs every step, with the step's own timestep. This is diffusers' ``FirstBlockCache`` (``diffusers.hooks``),
decision for decision: :func:`torch_first_block_cache` applies diffusers' own hooks to the PyTorch transformer, and
:class:`CachedTransformer`, which the loader puts in place of ``helpers.parts.OVTransformer``, runs the same rule
over three pieces of its one IR.

The conversion gives the transformer IR three extra outputs, the cut points: the patch embedding (block 0's input),
block 0's output and the last block's output. :func:`cache_segments` cuts the IR there at load time into "first"
(embeddings and block 0), "blocks" (the others) and "head" (the output head), so every variant made from one
conversion (FP16, INT8, INT4-T5, W8A8) has them, and the variant folder keeps one transformer IR.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import numpy as np
import openvino as ov
import torch

from .parts import OVTransformer, transformer_inputs
from .settings import STEP_CACHE_THRESHOLD as DEFAULT_THRESHOLD

EMBEDDED, FIRST_BLOCK, LAST_BLOCK = "step_cache.embedded", "step_cache.first_block", "step_cache.last_block"
CUT_POINTS = (EMBEDDED, FIRST_BLOCK, LAST_BLOCK)


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


def cache_segments(read: Callable[[], ov.Model]) -> dict[str, ov.Model]:
    """The three models the cached transformer runs, each cut from its own copy of the IR (``read()``).

    "first": the IR's inputs → block 0's input and output. "blocks": block 0's output (and the conditioning
    inputs) → the last block's output. "head": the last block's output → the sample.
    """
    first = read()
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


class CachedTransformer(OVTransformer):
    """The transformer run as the three models :func:`cache_segments` cuts from its IR, skipping "blocks" at the steps
    where :class:`FirstBlockCache` says so. Its cache starts afresh at each pipeline call, whose record counts the
    reused steps."""

    def __init__(self, *args: Any, threshold: float = DEFAULT_THRESHOLD, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.cache, self.cache_record = FirstBlockCache(threshold), None

    @property
    def threshold(self) -> float:
        return self.cache.threshold

    def set_threshold(self, threshold: float) -> None:
        self.cache = FirstBlockCache(threshold)

    def models_to_compile(self) -> dict[str, ov.Model]:
        return cache_segments(self.read_ir)

    def __call__(self, hidden_states, encoder_hidden_states, timestep, added_cond_kwargs=None, encoder_attention_mask=None,
                 return_dict: bool = False, **_: Any):
        record, start = self.recorder.record, time.perf_counter()
        if self.cache_record is not record:  # a new picture: nothing to reuse from the last one
            self.cache.reset()
            self.cache_record = record
        inputs = transformer_inputs(hidden_states, encoder_hidden_states, timestep, added_cond_kwargs, encoder_attention_mask)
        first_block, embedded = self.run("first", **inputs)
        reused = self.cache.reused
        last_block = self.cache(embedded, first_block, lambda first: self.run("blocks", **{FIRST_BLOCK: first}, **inputs)[0])
        sample = self.run("head", **{LAST_BLOCK: last_block}, **inputs)[0]
        record.reused = (record.reused or 0) + self.cache.reused - reused
        record.add(self.part_name, time.perf_counter() - start)
        return (torch.from_numpy(sample),)


# --- the PyTorch reference: diffusers' own First Block Cache on PixArtTransformer2DModel ----------------------------


@contextlib.contextmanager
def torch_first_block_cache(transformer: torch.nn.Module, threshold: float = DEFAULT_THRESHOLD) -> Iterator[dict[str, int]]:
    """diffusers' own First Block Cache on a PyTorch PixArt transformer, for the pictures drawn inside the block.

    diffusers 0.42's PixArt transformer lacks ``CacheMixin`` (and its pipelines open no cache context): it is given
    the mixin's public ``enable_cache`` / ``cache_context`` / ``disable_cache`` for the block. Yields the step counts,
    updated at each call: a step is computed when the last block runs. Start a new ``with`` for each picture.
    """
    from diffusers.hooks import FirstBlockCacheConfig
    from diffusers.models.cache_utils import CacheMixin

    FirstBlockCache(threshold)  # the same check of the threshold
    original = type(transformer)
    transformer.__class__ = type(f"Cached{original.__name__}", (CacheMixin, original), {})
    counts, last_block_ran = {"computed": 0, "reused": 0}, []

    def count_step(*_):
        counts["computed" if last_block_ran else "reused"] += 1
        last_block_ran.clear()

    hooks = [transformer.transformer_blocks[-1].norm1.register_forward_pre_hook(lambda *_: last_block_ran.append(True)),
             transformer.register_forward_hook(count_step)]
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with transformer.cache_context("pixart"):
            yield counts
    finally:
        transformer.disable_cache()
        for hook in hooks:
            hook.remove()
        transformer.__class__ = original
