"""What one request may ask for: the images API, the demo and the CLI refuse more, each naming the limit and the fix.

The pipeline itself keeps diffusers' behaviour (its checks refuse only what cannot run, so ``pipe(...)`` takes what
diffusers' takes); these limits bound what one request may tie a machine up with, where requests come from others:

- steps: at most :data:`MAX_STEPS` (the recipes run 4 or 20; a step at 1024² takes seconds on a CPU);
- prompt and negative prompt: at most :data:`MAX_PROMPT_CHARS` characters each (T5 reads the first 120 tokens, 300
  for Σ, about 600 to 1500 characters; the rest is cut);
- pictures per request (``n``): at most :data:`MAX_IMAGES` (more go as more requests);
- seed: a whole number from 0 to :data:`MAX_SEED` (``torch.Generator.manual_seed``'s range);
- guidance scale: a number from 0 to :data:`MAX_GUIDANCE`;
- the body of a ``POST /v1/images/generations``: at most :data:`MAX_BODY_BYTES` (413 above);
- sizes: the model's own (its aspect-ratio bins, checked by ``helpers.sizes.parse_size``).

Each message starts with the field's name (the images API's ``param``).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from .call_checks import is_whole

MAX_STEPS = 100
MAX_PROMPT_CHARS = 4000  # OpenAI's limit for dall-e-3
MAX_IMAGES = 4
MAX_SEED = 2**64 - 1
MAX_GUIDANCE = 20.0
MAX_BODY_BYTES = 64 * 2**10  # two prompts at the limit, 4 bytes a character, and every other field

LIMITED_FIELDS = ("prompt", "negative_prompt", "num_inference_steps", "n", "seed", "guidance_scale")


class BodyTooLarge(ValueError):
    """A request body over :data:`MAX_BODY_BYTES` (the images API answers 413)."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_request_limits(prompt: Any = None, negative_prompt: Any = None, num_inference_steps: Any = None,
                         n: Any = 1, seed: Any = None, guidance_scale: Any = None) -> None:
    """Raise a ``ValueError`` naming the first field over its limit, the limit and the fix. Fields of another type
    pass: the pipeline's own checks (or the API's) name those."""
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name} is {len(text)} characters, more than the {MAX_PROMPT_CHARS} allowed: shorten it "
                             f"(the text encoder reads only its first few hundred words).")
    if is_whole(num_inference_steps) and num_inference_steps > MAX_STEPS:
        raise ValueError(f"num_inference_steps={num_inference_steps} is more than the {MAX_STEPS} allowed: use at most "
                         f"{MAX_STEPS} (this model's recipe runs far fewer; LCM: 4, the others: 20).")
    if is_whole(n) and n > MAX_IMAGES:
        raise ValueError(f"n={n} is more than {MAX_IMAGES} pictures per request: ask for at most {MAX_IMAGES} and send "
                         "more requests for more.")
    if seed is not None and not (is_whole(seed) and 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed={seed!r} is not allowed: use a whole number from 0 to 2**64 - 1, or leave it out for a "
                         "random picture.")
    if guidance_scale is not None and not (is_number(guidance_scale) and 0 <= guidance_scale <= MAX_GUIDANCE):
        raise ValueError(f"guidance_scale={guidance_scale!r} is not allowed: use a number from 0 to {MAX_GUIDANCE:g} "
                         "(this model's recipe: 0 for LCM, 4.5 for the others).")


def check_body_limits(body: dict[str, Any]) -> None:
    """:func:`check_request_limits` on a request body's fields (the images API's, both routes)."""
    check_request_limits(**{name: body.get(name) for name in LIMITED_FIELDS})


def body_too_large(declared: int | None) -> BodyTooLarge:
    size = f"{declared} bytes" if declared is not None else f"over {MAX_BODY_BYTES} bytes"
    return BodyTooLarge(f"The request body is {size}, more than the {MAX_BODY_BYTES // 2**10} KiB allowed: send a shorter "
                        f"prompt (at most {MAX_PROMPT_CHARS} characters) and only the images API's fields.")


async def limited_body(request: Any, limit: int, too_large: Callable[[int | None], Exception]) -> AsyncIterator[bytes]:
    """A request's body in chunks, refused (``too_large(declared length)``) before a byte is read when its
    ``Content-Length`` is over ``limit``, or (``too_large(None)``) as soon as its chunks add up to more: a body need
    not declare its length."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared))
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(None)
        yield chunk


async def read_body(request: Any) -> bytes:
    """A generations request's body, at most :data:`MAX_BODY_BYTES`."""
    return b"".join([chunk async for chunk in limited_body(request, MAX_BODY_BYTES, body_too_large)])
