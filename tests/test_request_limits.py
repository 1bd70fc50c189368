"""The limits on one request (helpers/request_limits.py), shared by the images API, the demo and the CLI."""

import asyncio

import pytest

from helpers.request_limits import (
    MAX_BODY_BYTES,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEPS,
    BodyTooLarge,
    check_body_limits,
    check_request_limits,
    read_body,
)


def test_everything_at_its_limit_passes():
    check_request_limits("a" * MAX_PROMPT_CHARS, "b" * MAX_PROMPT_CHARS, MAX_STEPS, MAX_IMAGES, MAX_SEED, MAX_GUIDANCE)
    check_request_limits("a cat", None, None, None, 0, 0)  # the fields left out: the recipe's


@pytest.mark.parametrize(
    "fields, says",
    [
        ({"prompt": "a" * (MAX_PROMPT_CHARS + 1)}, f"prompt is {MAX_PROMPT_CHARS + 1} characters, more than the {MAX_PROMPT_CHARS} allowed"),
        ({"negative_prompt": "b" * (MAX_PROMPT_CHARS + 1)}, "negative_prompt is"),
        ({"num_inference_steps": MAX_STEPS + 1}, f"num_inference_steps={MAX_STEPS + 1} is more than the {MAX_STEPS} allowed"),
        ({"n": MAX_IMAGES + 1}, f"n={MAX_IMAGES + 1} is more than {MAX_IMAGES} pictures per request"),
        ({"seed": MAX_SEED + 1}, "seed=18446744073709551616 is not allowed: use a whole number from 0 to 2**64 - 1"),
        ({"seed": -1}, "seed=-1 is not allowed"),
        ({"seed": 1.5}, "seed=1.5 is not allowed"),
        ({"seed": True}, "seed=True is not allowed"),
        ({"guidance_scale": MAX_GUIDANCE + 0.5}, f"guidance_scale=20.5 is not allowed: use a number from 0 to {MAX_GUIDANCE:g}"),
        ({"guidance_scale": float("nan")}, "guidance_scale=nan is not allowed"),
        ({"guidance_scale": "4.5"}, "guidance_scale='4.5' is not allowed"),
    ],
    ids=["prompt", "negative", "steps", "n", "seed-large", "seed-negative", "seed-fraction", "seed-bool", "guidance",
         "guidance-nan", "guidance-text"],
)
def test_over_a_limit_names_the_field_the_limit_and_the_fix(fields, says):
    with pytest.raises(ValueError, match="^" + says.replace("*", r"\*").replace("(", r"\(")):
        check_body_limits({"prompt": "a cat", **fields})


def test_other_types_are_left_to_the_pipelines_checks():
    check_request_limits(prompt=["a cat"], num_inference_steps="many", n="2")  # the pipeline names these


class Body:
    """A request as Starlette gives it: its headers and its body in chunks."""

    def __init__(self, chunks: list[bytes], declared: int | None = None):
        self.chunks, self.headers = chunks, {} if declared is None else {"content-length": str(declared)}
        self.read = 0

    async def stream(self):
        for chunk in self.chunks:
            self.read += len(chunk)
            yield chunk


def test_a_body_within_the_limit_is_read_whole():
    request = Body([b'{"prompt": ', b'"a cat"}'], declared=19)
    assert asyncio.run(read_body(request)) == b'{"prompt": "a cat"}'


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    request = Body([b"x" * 10], declared=MAX_BODY_BYTES + 1)
    with pytest.raises(BodyTooLarge, match=f"is {MAX_BODY_BYTES + 1} bytes, more than the 64 KiB allowed"):
        asyncio.run(read_body(request))
    assert request.read == 0


def test_an_undeclared_body_is_cut_at_the_limit():
    request = Body([b"x" * 2**14] * 100)  # 1.6 MB, no length said
    with pytest.raises(BodyTooLarge, match="more than the 64 KiB allowed"):
        asyncio.run(read_body(request))
    assert request.read <= MAX_BODY_BYTES + 2**14  # stopped at the chunk that crossed the limit
