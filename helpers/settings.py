"""Settings and paths: which model, where its variant folders live, how each checkpoint is sampled."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_ROOT = REPO_ROOT / "model"
ASSETS = REPO_ROOT / "assets"

DEFAULT_MODEL_ID = "PixArt-alpha/PixArt-LCM-XL-2-1024-MS"
STANDARD_MODEL_ID = "PixArt-alpha/PixArt-XL-2-1024-MS"
TINY_MODEL_IDS = ("tiny", "tiny-standard", "tiny-sigma")
SHIPPED_MODEL_IDS = ("shapes",)  # trained here (notebook 6, ``python -m helpers train``), kept in model/<id>/diffusers

MODEL_INDEX = "model_index.json"

EXAMPLE_PROMPTS = (
    "A small cactus with a happy face in the Sahara desert.",
    "an astronaut sitting in a diner, eating fries, cinematic, analog film",
    "Pirate ship trapped in a cosmic maelstrom nebula, rendered in cosmic beach whirlpool engine, volumetric "
    "lighting, spectacular, ambient lights, light pollution, cinematic atmosphere, art nouveau style, illustration "
    "art artwork by SenseiJaye, intricate detail.",
    "professional portrait photo of an anthropomorphic cat wearing fancy gentleman hat and jacket walking in autumn "
    "forest.",
)
# What the shapes model can draw (its captions' form): the examples the notebooks and the demo show for it.
SHAPES_EXAMPLE_PROMPTS = (
    "a red circle at the top left on a blue background",
    "a yellow triangle in the center on a purple background",
    "a white square at the bottom right on a green background",
    "an orange triangle at the top right on a black background",
)

# Parity tests and checks compile with this: the CPU default on AMX machines is bfloat16 (fast, ~1e-2 error).
F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def model_id_from_env(default: str = DEFAULT_MODEL_ID) -> str:
    """The model the notebooks use: ``PIXART_MODEL_ID`` from the environment, else ``default``."""
    return os.environ.get("PIXART_MODEL_ID", default)


def model_name(model_id: str) -> str:
    """A folder name for a model id: the last part of a hub id or a local path (``tiny`` stays ``tiny``).

    A local ``…/<name>/diffusers`` folder (how built and trained models are kept here) is named ``<name>``; one given
    as ``..`` or ``x/..`` by where it is, so its variant folders stay inside the model root.
    """
    path = Path(str(model_id).rstrip("/") or str(model_id))  # "/" stays the root, "" stays empty
    if str(model_id) and path.exists():
        path = Path(os.path.abspath(path))  # ".." resolved, links kept: a linked folder keeps its own name
    name = path.parent.name if path.name == "diffusers" and path.parent.name else path.name
    if name in ("", ".", ".."):
        raise ValueError(f"The model id {str(model_id)!r} names no model: give a hub id (PixArt-alpha/PixArt-XL-2-1024-MS), "
                         "a diffusers folder that exists, or tiny, tiny-sigma, shapes.")
    return name


def example_prompts(model_id: str) -> tuple[str, ...]:
    """Four prompts to show a model with: its own kind of caption for the shapes model, else PixArt's examples."""
    return SHAPES_EXAMPLE_PROMPTS if model_name(model_id) == "shapes" else EXAMPLE_PROMPTS


def baseline_dir(model_id: str, root: Path = MODEL_ROOT) -> Path:
    """Where notebook 1 leaves the PyTorch baseline image and its settings for notebook 2 to compare against."""
    return Path(root) / model_name(model_id) / "baseline"


@dataclass(frozen=True)
class SamplingRecipe:
    """How a checkpoint is meant to be sampled (the one meaning of "recipe" here; compression has schemes): its
    steps, its guidance and the diffusers scheduler class it samples with (``helpers.checkpoints.recipe_scheduler``)."""

    name: str
    num_inference_steps: int
    guidance_scale: float
    scheduler: str

    def defaults(self) -> dict[str, Any]:
        """The call arguments this recipe fills where a call does not give them: steps and guidance, nothing else
        (the negative prompt stays diffusers' default, none)."""
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale}

    def call_arguments(self, **arguments: Any) -> dict[str, Any]:
        """A pipeline call's arguments from options that may be unset (the command line's, a form's): the given
        ones (``None`` values dropped) over this recipe's :meth:`defaults`."""
        return self.defaults() | {name: value for name, value in arguments.items() if value is not None}


LCM_RECIPE = SamplingRecipe("LCM", num_inference_steps=4, guidance_scale=0.0, scheduler="LCMScheduler")
# diffusers' own defaults, with the scheduler of PixArt-XL-2-1024-MS
STANDARD_RECIPE = SamplingRecipe(
    "standard", num_inference_steps=20, guidance_scale=4.5, scheduler="DPMSolverMultistepScheduler"
)


# The step cache's default threshold (``helpers.step_cache``): the largest that kept the shapes model's alignment
# score in both measured runs (benchmarks/results/step-cache-shapes.md, docs/step-cache.md).
STEP_CACHE_THRESHOLD = 0.1

# Requests that may wait for a serving replica before more are refused with 503 (``helpers.serving``, ``serve --max-queued``).
MAX_QUEUED_REQUESTS = 32


def recipe_for(scheduler: Any) -> SamplingRecipe:
    """The LCM recipe for an ``LCMScheduler`` (object or class name), the standard one (DPM-Solver, guided) otherwise."""
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    return LCM_RECIPE if name == LCM_RECIPE.scheduler else STANDARD_RECIPE
