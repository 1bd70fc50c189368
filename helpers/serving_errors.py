"""The images API's errors, as OpenAI's API writes them (``{"error": {"message", "type", "param", "code"}}``, which the
``openai`` client raises with their message): :class:`APIError` carries one with its HTTP status; :func:`field_of`
finds the request field a check's message is about."""

from __future__ import annotations

RETRY_HEADERS = {"Retry-After": "1"}  # on a 503: the openai client waits that long, then retries by itself
PIPELINE_FIELDS = {"num_images_per_prompt": "n", "num_inference_steps": "num_inference_steps",
                   "guidance_scale": "guidance_scale", "height": "size", "width": "size", "mask_image": "mask"}
REQUEST_FIELDS = ("prompt", "n", "seed", "response_format", "negative_prompt", "lora", "image", "mask", "strength",
                  "stream", "partial_images", "quality")


def field_of(message: str) -> str | None:
    """The request field a check's message is about (its ``param`` in the error), from the name it starts with."""
    name = message.replace("=", " ").split(" ", 1)[0]  # "n=0 is ...", "prompt is missing ..."
    return PIPELINE_FIELDS.get(name, name if name in REQUEST_FIELDS else None)


def one_line(error: BaseException) -> str:
    """An error's type and first line (of the painter's own error, which Ray's ``RayTaskError`` carries)."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    """An error as OpenAI's API writes it (the ``openai`` client reads its message)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class APIError(Exception):
    """An answer other than 200, in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(message, kind, param, code), headers
