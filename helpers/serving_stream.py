"""The images API's streams and draft quality (``helpers.serving``), in OpenAI's fields.

- ``"stream": true`` answers with server-sent events as OpenAI's images API writes them, which the ``openai`` client
  iterates (``client.images.generate(..., stream=True, partial_images=2)``): ``partial_images`` (0 to 3) events
  ``image_generation.partial_image`` (``image_edit.…`` on the edits route), each a preview after evenly spread steps
  (``helpers.previews``), then one ``image_generation.completed``, the picture the same request draws unstreamed.
  A stream carries one picture: ``n`` > 1 is refused.
- ``"quality": "low"`` decodes with the tiny VAE (``pipe.set_decoder("tiny")``, a draft) and previews with it; any
  other of OpenAI's qualities, or none, with the model's own VAE (previews: the linear projection).

The painter runs the call in a thread of its own (:func:`painted_events`), so its event loop stays free; a client that
leaves stops the call at its next step (:class:`StreamStopped`). The front turns the events into the HTTP stream
(:func:`event_stream`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from .serving_errors import one_line

MAX_PARTIAL_IMAGES = 3  # OpenAI's bound
QUALITIES = ("auto", "low", "medium", "high", "xhigh", "max", "standard", "hd")  # OpenAI's; only "low" is a draft
EVENT_PREFIX = {False: "image_generation", True: "image_edit"}  # the events' type, by route
# OpenAI's completed event carries token counts (its GPT models bill tokens); none are counted here
NO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}, "output_tokens": 0,
            "total_tokens": 0}
FORM_FLAGS = {"true": True, "false": False}  # the edits route's form sends booleans as text


@dataclass(frozen=True)
class DrawOptions:
    """What a request asks beyond the pipeline's call: a stream and its previews, and the quality."""

    stream: bool = False
    partial_images: int = 0
    quality: str = "auto"

    @property
    def decoder(self) -> str:
        """The decoder that draws the picture, and the previews: ``"tiny"`` for a draft, else ``"full"``."""
        return "tiny" if self.quality == "low" else "full"


def form_number(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def draw_options(body: dict[str, Any], edit: bool = False) -> DrawOptions:
    """A request's ``stream``, ``partial_images`` and ``quality``, or a ``ValueError`` naming the field and the fix."""
    stream, partial, quality = body.get("stream"), body.get("partial_images"), body.get("quality")
    if edit:  # a form's text
        stream, partial = FORM_FLAGS.get(stream, stream) if isinstance(stream, str) else stream, form_number(partial)
    if stream not in (None, True, False):
        raise ValueError(f"stream={stream!r} is not allowed: send true for server-sent events, or false (the default).")
    if partial is not None and (not isinstance(partial, int) or isinstance(partial, bool) or not 0 <= partial <= MAX_PARTIAL_IMAGES):
        raise ValueError(f"partial_images={partial!r} is not allowed: send a whole number from 0 to {MAX_PARTIAL_IMAGES} "
                         "(the previews streamed before the picture).")
    if quality is not None and quality not in QUALITIES:
        raise ValueError(f"quality={quality!r} is not allowed: send 'low' (a draft, decoded by the tiny VAE) or "
                         "'auto', 'medium', 'high' (the model's own VAE).")
    n = body.get("n", 1)
    if stream and isinstance(n, int) and n > 1:  # OpenAI's events name no picture: one picture a stream
        raise ValueError(f"n={n} is not streamed: a stream carries one picture; send n=1 (or leave it out) and one "
                         "request per picture, or stream=false for n pictures in one answer.")
    return DrawOptions(bool(stream), partial or 0, quality or "auto")


def painter_options(body: dict[str, Any], pipe: Any, edit: bool = False) -> DrawOptions:
    """:func:`draw_options`, checked against the painter's model: a draft needs its tiny decoder, previews (when
    streamed) the decoder's."""
    from .previews import LatentRGB
    from .tiny_vae import missing_tiny_vae_message
    from .variants import TINY_VAE_DECODER, VariantNotReadyError

    options = draw_options(body, edit)
    if options.decoder == "tiny" and TINY_VAE_DECODER not in pipe.variant.index["parts"]:
        raise ValueError("quality='low' (a draft) is not served by this model: ask for quality 'auto' (its own VAE). "
                         + missing_tiny_vae_message(pipe.variant.folder))
    if options.stream and options.partial_images and options.decoder == "full":
        try:
            LatentRGB.of(pipe)  # read from the folder's config, nothing compiled
        except VariantNotReadyError as error:
            raise ValueError(f"partial_images={options.partial_images} needs previews this model lacks: send "
                             f"partial_images=0. {error}") from None
    return options


def png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_event(kind: str, picture: Any, options: DrawOptions, edit: bool, **more: Any) -> dict[str, Any]:
    """One of OpenAI's image events (``kind``: ``partial_image`` or ``completed``), its picture a base64 PNG."""
    return {"type": f"{EVENT_PREFIX[edit]}.{kind}", "b64_json": png_base64(picture), "created_at": int(time.time()),
            "size": f"{picture.width}x{picture.height}", "quality": options.quality, "background": "opaque",
            "output_format": "png", **more}


def error_event(message: str) -> dict[str, Any]:
    """An error in the stream, in OpenAI's error shape (the ``openai`` client raises it as an ``APIError``)."""
    return {"type": "error", "error": {"message": message, "type": "server_error", "param": None, "code": None}}


class StreamStopped(Exception):
    """Raised in the call's step callback once its stream has ended early (the client left): the call stops there."""


def stopper(stop: threading.Event) -> Callable[[int, int, Any], None]:
    def callback(step: int, timestep: int, latents: Any) -> None:
        if stop.is_set():
            raise StreamStopped
    return callback


def drawing(pipe: Any, options: DrawOptions, edit: bool, stop: threading.Event, put: Callable) -> Callable:
    """The pipeline call of a stream (what the painter calls with the request's arguments): it ``put``s an event per
    preview (:func:`~helpers.previews.pictures_as_they_form`) and returns the call's output; it raises
    :class:`StreamStopped` at the step after ``stop`` is set."""
    from .previews import Preview, pictures_as_they_form

    def call(prompt: str, **arguments: Any) -> Any:
        arguments |= {"callback": stopper(stop), "callback_steps": 1}
        if not options.partial_images:
            return pipe(prompt, **arguments)
        preview = "tiny" if options.decoder == "tiny" else "linear"
        index = 0
        for item in pictures_as_they_form(pipe, prompt, previews=options.partial_images, preview=preview, **arguments):
            if not isinstance(item, Preview):
                return item
            put(image_event("partial_image", item.images[0], options, edit, partial_image_index=index))  # PNG once
            index += 1

    return call


async def painted_events(paint: Callable, pipe: Any, options: DrawOptions, edit: bool) -> AsyncIterator[dict]:
    """The events of one streamed request: ``paint(through=...)`` (the painter's call, its adapters and decoder set)
    runs in a thread; its previews and its picture come as they are made, an error as an error event. Closed early
    (the client left, Ray cancelled the request), the call stops at its next step."""
    loop, found, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

    def put(item: dict | None) -> None:
        try:
            loop.call_soon_threadsafe(found.put_nowait, item)
        except RuntimeError:  # the replica's loop closed (it is stopping): nobody listens
            pass

    def work() -> None:
        try:
            output = paint(through=drawing(pipe, options, edit, stop, put))
            put(image_event("completed", output.images[0], options, edit, usage=NO_USAGE))
        except StreamStopped:
            pass
        except Exception as error:  # the call failed while drawing: the stream's headers are sent, so an event says it
            logging.getLogger("ray.serve").exception("A streamed request failed while drawing")
            put(error_event(f"The picture could not be drawn ({one_line(error)}): retry, or report its request id."))
        finally:
            put(None)

    threading.Thread(target=work, name="stream", daemon=True).start()
    try:
        while (event := await found.get()) is not None:
            yield event
    finally:
        stop.set()  # a stream ended early: the call stops at its next step, and frees the painter


def where_headers(drawn: dict) -> dict[str, str]:
    """An answer's headers: which replica on which node drew it, and with which decoder ("tiny": a draft)."""
    return {"X-Replica": drawn["replica"], "X-Node": drawn["node"], "X-Decoder": drawn["decoder"]}


def sse(event: dict[str, Any]) -> str:
    """One server-sent event as OpenAI writes them: its type as the event's name, the whole event as JSON data."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def event_stream(events: Any, request_id: str = "?") -> AsyncIterator[str]:
    """The painter's events (a Ray Serve streaming response) as server-sent events. A painter lost mid-stream ends it
    with an error event; an error event names the request id; a client that leaves cancels the painter's call."""
    from ray.exceptions import RayActorError

    finished = False
    try:
        async for event in events:
            if event["type"] == "error":
                event["error"]["message"] += f" Request id: {request_id}."
            yield sse(event)
        finished = True
    except RayActorError:
        finished = True
        yield sse(error_event("The replica drawing this request stopped before it finished: retry; Ray Serve sends "
                              "it to another replica."))
    finally:
        if not finished:
            events.cancel()  # best effort: Ray also cancels a request whose client left
