"""What the benchmarks feed the models: the prompt of a timed picture, a part's example inputs at a size, a part
called the way diffusers calls it, and a pipeline set to sample by a recipe.

Torch and the conversion's specs are imported when used, so that a task's child process loads only what it needs.
"""

from __future__ import annotations

from typing import Any

from helpers.settings import SamplingRecipe

# The picture every whole-picture measurement draws (PixArt's kind of prompt; random weights draw noise anyway)
PROMPT = "a lighthouse on a rocky coast at sunset, oil painting"


def example_inputs(component: str, shape: dict, config: Any, dtype: Any) -> dict:
    """The inputs of one call of ``component``: the conversion's example inputs at ``shape`` (keyword arguments of
    its example function, e.g. ``{"side": 128, "batch": 1}``), seeded, floats in ``dtype``."""
    import torch

    from helpers.conversion import PART_SPECS

    torch.manual_seed(0)
    inputs = PART_SPECS[component].example(config, **shape)
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def part_call(component: str, model: Any):
    """``model`` called on named example inputs the way diffusers calls it: the conversion's export wrapper does
    exactly that, and the OpenVINO parts are called like the torch modules, so this serves both engines."""
    from helpers.conversion import PART_SPECS

    return PART_SPECS[component].wrapper(model)


def sample_with(pipe: Any, recipe: SamplingRecipe) -> None:
    """Set ``pipe`` to sample by ``recipe`` (LCM, or standard: DPM-Solver), keeping its checkpoint's noise schedule:
    one folder serves both recipes. The benchmarks' one place that picks a scheduler for a recipe."""
    from helpers.checkpoints import recipe_scheduler

    pipe.scheduler = recipe_scheduler(recipe, pipe.scheduler.config)
