"""``POST /v1/images/edits`` of the images API (``helpers.serving``): OpenAI's edits, a multipart form of ``image``, an
optional ``mask`` whose fully transparent pixels mark where to edit, ``prompt``, ``n``, ``size``, ``response_format``,
and beyond OpenAI's fields ``strength``, ``seed``, ``num_inference_steps``, ``guidance_scale``, ``negative_prompt``
and ``lora`` (what the ``openai`` client's ``extra_body`` sends as form fields).

The front reads the form (:func:`read_edit_form`: at most :data:`MAX_UPLOAD_BYTES`, numbers read from their text) into
the body a painter takes; the painter turns its files into the pipeline's ``image`` and ``mask_image``
(:func:`edit_arguments`), so a bad picture is refused with the other checks, in OpenAI's error shape.
"""

from __future__ import annotations

import math
from typing import Any

from .edit_inputs import open_picture, own_size, rgb, transparency_mask
from .request_limits import limited_body
from .sizes import largest_side, parse_size

# A 2048² picture (the largest side a 1024² model draws) and its mask, both PNGs of noise, fit; OpenAI takes 50 MB.
MAX_UPLOAD_BYTES = 32 * 2**20
FILES = ("image", "mask")
WHOLE_NUMBERS, FRACTIONS = ("n", "seed", "num_inference_steps"), ("strength", "guidance_scale")


class UploadError(ValueError):
    """A form the front refuses before any painter sees it: its HTTP status (413: too large) and its field."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


def too_large(declared: int | None) -> UploadError:
    size = f"{declared / 2**20:.0f} MiB" if declared is not None else f"over {MAX_UPLOAD_BYTES // 2**20} MiB"
    return UploadError(f"The upload is {size}, more than the {MAX_UPLOAD_BYTES // 2**20} MiB this server takes: send a "
                       f"smaller picture (PNG, JPEG or WebP, at most 2048 per side).", status=413, param="image")


async def read_edit_form(request: Any) -> dict[str, Any]:
    """The request's form as the body a painter takes: files as bytes, the numbers' text read as numbers."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError("The body is not a multipart form: send image (a file), prompt and the other fields as "
                          "multipart/form-data, as the openai client's images.edit does.")
    parser = MultiPartParser(request.headers, limited_body(request, MAX_UPLOAD_BYTES, too_large), max_files=len(FILES), max_fields=32)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadError(f"The form could not be read ({error.message}): send one image, at most one mask, and fields.") from None
    try:
        return await body_of(form.multi_items())
    finally:
        await form.close()


async def body_of(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields as a request body: ``image[]`` (the openai client's name for a list) read as ``image``,
    ``lora[NAME]`` fields as ``{"lora": {NAME: strength}}``, one value per field."""
    body: dict[str, Any] = {}
    for name, value in items:
        name = name.removesuffix("[]")
        if name in body:
            raise UploadError(f"{name} is sent twice: send one {name}.", param=name)
        if isinstance(value, str) == (name in FILES):  # a file where text goes, or text where a file goes
            wanted = "a file" if name in FILES else "a text field"
            raise UploadError(f"{name} is not {wanted}: send it as {wanted} of the form, as the openai client does.", param=name)
        if name.startswith("lora[") and name.endswith("]"):
            body.setdefault("lora", {})[name[5:-1]] = number(value, float)
        elif name in FILES:
            body[name] = await value.read()
        else:
            body[name] = form_value(name, value)
    return body


def form_value(name: str, text: str) -> Any:
    """A form field's value: a number where the field holds one; text the checks refuse, naming the field, where it
    does not read as one."""
    if name in WHOLE_NUMBERS:
        return number(text, int)
    if name in FRACTIONS:
        return number(text, float)
    return text


def number(text: Any, kind: type) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        return text
    return value if math.isfinite(value) else text


def edit_arguments(body: dict[str, Any], pipe: Any) -> dict[str, Any]:
    """The pipeline call's ``image``, ``mask_image`` (OpenAI's transparent pixels turned white), ``strength`` and
    size (``size``, else the picture's own), or a ``ValueError`` naming the field and the fix."""
    if body.get("image") is None:
        raise ValueError("image is missing: send the picture to edit as a file (the openai client: image=open(path, 'rb')).")
    image = rgb(open_picture(body["image"], "image", max_side=largest_side(pipe.transformer.config.sample_size)))
    mask = None if body.get("mask") is None else transparency_mask(open_picture(body["mask"], "mask"), image)
    size = body.get("size") or "auto"
    height, width = own_size(image, "image", "size") if size == "auto" else parse_size(size, pipe.variant.sizes)
    strength = body.get("strength")
    return {"image": image, "mask_image": mask, "strength": strength, "height": height, "width": width}
