"""The checks of a pipeline call's inputs: each refusal names the problem and the fix, before diffusers' pipeline or
the OpenVINO parts would fail on it obscurely."""

from __future__ import annotations

from typing import Any


def check_generation_inputs(
    prompt: str | list[str] | None,
    num_inference_steps: int,
    height: int | None = None,
    width: int | None = None,
    *,
    guidance_scale: float = 0.0,
    num_images_per_prompt: int = 1,
    multiple: int = 16,
    binning: bool = True,
    max_side: int | None = None,
    scheduler: str = "LCMScheduler",
    max_steps: int | None = None,
) -> None:
    """Raise a ``ValueError`` naming the problem and the fix for inputs the pipeline can't run.

    ``multiple`` is the pixel multiple the latent tiles into patches at (without binning), ``max_side`` the
    largest side the model's aspect-ratio bins have (larger pictures need memory quadratic in their tokens),
    ``max_steps`` the most steps the scheduler takes (LCM: its ``original_inference_steps``).
    """
    if isinstance(prompt, list) and not prompt:
        raise ValueError("The prompt list is empty: pass at least one prompt.")
    prompts = [prompt] if isinstance(prompt, str) else prompt or []
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("A prompt is empty: describe the picture you want, e.g. 'a red circle on a blue background'.")
    if not is_whole(num_inference_steps) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps={num_inference_steps!r} is not allowed: use at least 1 step (LCM: 4).")
    # diffusers takes a one-step sample from the scheduler's second output, which only LCMScheduler returns
    if num_inference_steps == 1 and scheduler != "LCMScheduler":
        raise ValueError(
            f"num_inference_steps=1 is not allowed with {scheduler}: one step needs the LCM scheduler; use at least "
            f"2 steps (this checkpoint's recipe: 20)."
        )
    if max_steps is not None and num_inference_steps > max_steps:
        raise ValueError(f"num_inference_steps={num_inference_steps} is more than {scheduler} takes: use at most {max_steps} "
                         f"(its original_inference_steps; the LCM recipe runs 4).")
    if not is_whole(num_images_per_prompt) or num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt={num_images_per_prompt!r} is not allowed: ask for at least 1 picture per prompt.")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
        raise ValueError(
            f"guidance_scale={guidance_scale!r} is not allowed: use 0 or more (0: no guidance, the LCM recipe; "
            f"4.5: the standard recipe)."
        )
    # With resolution binning the pipeline maps any size to its nearest bin; without, the latent must tile into patches.
    step = 8 if binning else multiple
    for name, size in (("height", height), ("width", width)):
        if size is not None and (not is_whole(size) or size < step or size % step):
            hint = f"{max(step, (size or 0) // step * step)}" if is_whole(size) else "a whole number"
            raise ValueError(f"{name}={size!r} is not allowed: use a positive multiple of {step} (e.g. {hint}).")
        if size is not None and max_side and size > max_side:
            raise ValueError(
                f"{name}={size} is larger than this model draws: at most {max_side}, the largest side of its "
                f"aspect-ratio bins (e.g. {name}={max_side})."
            )


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
