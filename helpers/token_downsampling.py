"""Token downsampling (ToDo, Smith et al. 2024): self-attention keys and values from the pooled token grid.

Every picture token still asks its query, but the keys and values it attends to are computed from the tokens
average-pooled ``factor``×``factor`` on their grid: ``factor``² times fewer keys, so ``factor``² times fewer
softmax exponentials, which are the floor of an attention step on AMX (docs/amx.md). Cross-attention (the text
tokens) stays exact. ``factor=1`` is the exact model. On the shapes model only the early steps keep the
alignment score (``benchmarks/results/token-downsampling-shapes.md``): a ``-ToDo`` variant holds the downsampled
transformer beside the exact one and runs it for the first ``steps`` fraction of each picture's steps.

The processor is diffusers' own ``AttnProcessor2_0`` given the pooled tokens as the keys' and values' source, so the
same code runs in PyTorch and, traced by the conversion, in the OpenVINO IR. The grid's height and width are read
from the transformer's input at each call (a forward pre-hook), so one IR still serves every aspect-ratio bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

DEFAULT_FACTOR = 2
# The fraction of each picture's first steps run downsampled: the largest measured that kept the shapes model's
# alignment score (benchmarks/results/token-downsampling-shapes.md).
DEFAULT_STEPS = 0.5


@dataclass
class TokenGrid:
    """The token grid of the transformer's current call (height, width in tokens), shared by its processors."""

    height: Any = None
    width: Any = None


@dataclass(frozen=True)
class TokenDownsampling:
    """What is downsampled: the pooling ``factor``, the transformer blocks that use it (``None``: all), and the
    fraction of each picture's first ``steps`` that run downsampled."""

    factor: int = DEFAULT_FACTOR
    blocks: tuple[int, ...] | None = None
    steps: float = DEFAULT_STEPS

    def __post_init__(self):
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"The token downsampling factor must be a whole number of at least 1 (1: exact); got {self.factor!r}.")
        check_steps(self.steps)

    def block_indices(self, num_blocks: int) -> list[int]:
        """The blocks that downsample, checked against the transformer's ``num_blocks``."""
        if self.blocks is None:
            return list(range(num_blocks))
        wrong = [b for b in self.blocks if not 0 <= b < num_blocks]
        if wrong:
            raise ValueError(f"Token downsampling asks for blocks {wrong}; this transformer has blocks 0 to {num_blocks - 1}.")
        return sorted(set(self.blocks))

    def record(self, num_blocks: int) -> dict[str, Any]:
        """How a variant folder's index records it."""
        return {"factor": self.factor, "blocks": self.block_indices(num_blocks), "steps": self.steps}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "TokenDownsampling":
        return cls(int(record["factor"]), tuple(record["blocks"]), float(record.get("steps", DEFAULT_STEPS)))


def check_steps(steps: float) -> float:
    """``steps`` if it is a fraction of the steps (0: none downsampled, 1: all); else an error that says so."""
    if not isinstance(steps, (int, float)) or not 0 <= steps <= 1:
        raise ValueError(f"The downsampled steps are a fraction of each picture's steps, from 0 (none) to 1 (all); got {steps!r}.")
    return float(steps)


def downsample_tokens(tokens: torch.Tensor, height: Any, width: Any, factor: int) -> torch.Tensor:
    """``(batch, height·width, channels)`` tokens average-pooled ``factor``×``factor`` on their grid.

    A grid side that ``factor`` does not divide keeps its last, narrower row or column, averaged over the tokens
    it has (``ceil_mode``, padding not counted): PixArt's 256² bins have odd sides.
    """
    if factor == 1:
        return tokens
    batch, _, channels = tokens.shape
    grid = tokens.transpose(1, 2).reshape(batch, channels, height, width)
    pooled = F.avg_pool2d(grid, factor, ceil_mode=True, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2)


@dataclass
class DownsampledSelfAttention(AttnProcessor2_0):
    """diffusers' attention with self-attention's keys and values computed from the pooled token grid."""

    factor: int
    grid: TokenGrid = field(default_factory=TokenGrid)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if encoder_hidden_states is None and self.factor > 1:  # self-attention; cross-attention has the text tokens
            if attention_mask is not None:
                raise ValueError("Token downsampling does not take a self-attention mask (PixArt passes none).")
            encoder_hidden_states = downsample_tokens(hidden_states, self.grid.height, self.grid.width, self.factor)
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def enable_token_downsampling(transformer: torch.nn.Module, downsampling: TokenDownsampling) -> torch.utils.hooks.RemovableHandle:
    """Make a diffusers ``PixArtTransformer2DModel``'s chosen self-attentions downsample their keys and values.

    Returns the handle of the hook that reads the token grid at each call; ``disable_token_downsampling`` undoes all.
    """
    grid = TokenGrid()
    patch = transformer.config.patch_size

    def read_grid(_module, args, kwargs):
        latents = args[0] if args else kwargs["hidden_states"]
        grid.height, grid.width = latents.shape[-2] // patch, latents.shape[-1] // patch

    for index in downsampling.block_indices(len(transformer.transformer_blocks)):
        transformer.transformer_blocks[index].attn1.set_processor(DownsampledSelfAttention(downsampling.factor, grid))
    return transformer.register_forward_pre_hook(read_grid, with_kwargs=True)


def disable_token_downsampling(transformer: torch.nn.Module, hook: torch.utils.hooks.RemovableHandle) -> None:
    """The exact self-attention again in every block."""
    hook.remove()
    for block in transformer.transformer_blocks:
        block.attn1.set_processor(AttnProcessor2_0())


def parse_blocks(text: str | None) -> tuple[int, ...] | None:
    """Blocks from the command line: ``"all"``/None, or indices and ranges, ``"0-13,20"``."""
    if text is None or text == "all":
        return None
    blocks: list[int] = []
    for item in text.split(","):
        first, _, last = item.strip().partition("-")
        if not (first.isdigit() and (last or first).isdigit()):
            raise ValueError(f'Blocks are "all" or indices and ranges such as "0-13,20"; got {text!r}.')
        blocks += range(int(first), int(last or first) + 1)
    return tuple(blocks)


class DownsampledSteps:
    """A ``-ToDo`` variant's transformer: its downsampled transformer for the first ``steps`` fraction of each
    picture's steps, then ``exact`` (the plain transformer or the step cache's) for the rest; the loader composes it.

    It quacks as its exact transformer does (``config``, ``dtype``, ``device``, ...); what is done to the part
    (compile, reshape, move, release) is done to both. A step run downsampled counts in the call's record.
    """

    def __init__(self, exact: Any, downsampled: Any, steps: float = DEFAULT_STEPS):
        self.exact, self.downsampled, self.steps = exact, downsampled, steps

    @property
    def steps(self) -> float:
        """The fraction of each picture's first steps run downsampled (0: none, 1: all)."""
        return self._steps

    @steps.setter
    def steps(self, fraction: float) -> None:
        self._steps = check_steps(fraction)

    def __getattr__(self, name: str) -> Any:  # config, dtype, device, recorder, input_shapes, ...: the exact one's
        return getattr(self.exact, name)

    def __call__(self, *args: Any, **kwargs: Any):
        record = self.exact.recorder.record
        if record.steps < round(self.steps * record.num_inference_steps):
            record.downsampled += 1
            return self.downsampled(*args, **kwargs)
        return self.exact(*args, **kwargs)

    @property
    def is_compiled(self) -> bool:
        return self.exact.is_compiled

    def compile(self) -> None:
        self.exact.compile()
        if self.steps > 0:
            self.downsampled.compile()

    def reshape(self, input_shapes: dict[str, list[int]] | None) -> None:
        self.exact.reshape(input_shapes)
        self.downsampled.reshape(input_shapes)

    def move_to(self, device: str) -> None:
        self.exact.move_to(device)
        self.downsampled.move_to(device)

    def release(self) -> None:
        self.exact.release()
        self.downsampled.release()
