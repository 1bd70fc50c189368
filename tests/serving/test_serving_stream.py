"""The images API's streams and draft quality (helpers/serving_stream.py): OpenAI's image events as the openai client
reads them, previews then the picture the same request draws unstreamed; the tiny decoder for quality "low"; a client
leaving mid-stream. On the Ray cluster of this folder's conftest.py, one painter of the tiny model."""

import asyncio
import os
import threading
import time

import httpx
import numpy as np
import pytest

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray starts: no usage report sent

from helpers.serving import build_app, decode_picture, deploy  # noqa: E402
from helpers.serving_stream import DrawOptions, draw_options, event_stream, painted_events  # noqa: E402
from helpers.tiny_vae import missing_tiny_vae_message  # noqa: E402
from helpers.variants import PARTS, finish_variant, link_part  # noqa: E402

from .test_serving import AUTH, FAST, KEY, PICTURE, TIMEOUT, post, post_edit  # noqa: E402

STREAMED = {"prompt": "a red circle", "size": "1024x1024", "extra_body": {"num_inference_steps": 4, "seed": 5}}


@pytest.fixture(scope="module")
def url(port, tiny_variant):
    """The images API over one painter of the tiny FP16 variant (which has a tiny decoder), with an API key."""
    return deploy(build_app(tiny_variant, replicas=1, threads=1, api_key=KEY), port=port)


@pytest.fixture(scope="module")
def client(url):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=TIMEOUT)


def pixels(b64_json: str) -> np.ndarray:
    return np.asarray(decode_picture(b64_json), dtype=int)


def test_the_openai_client_streams_previews_then_the_picture(client):
    events = list(client.images.generate(**STREAMED, stream=True, partial_images=2))  # 4 steps: previews after 2, 3
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    first, second, completed = events
    assert [first.partial_image_index, second.partial_image_index] == [0, 1] and first.b64_json != second.b64_json
    preview = decode_picture(first.b64_json)
    assert preview.size == (128, 128) and first.size == "128x128"  # the linear preview: a pixel per latent
    assert (completed.size, completed.output_format, completed.quality, completed.background) == ("1024x1024", "png", "auto", "opaque")
    assert completed.created_at > 0 and completed.usage.total_tokens == 0
    drawn = client.images.generate(**STREAMED)
    assert np.abs(pixels(completed.b64_json) - pixels(drawn.data[0].b64_json)).max() <= 1  # the unstreamed picture


def test_no_partial_images_streams_the_picture_alone(client):
    events = list(client.images.generate(**STREAMED, stream=True, partial_images=0))
    assert [event.type for event in events] == ["image_generation.completed"]
    drawn = client.images.generate(**STREAMED)
    assert np.abs(pixels(events[0].b64_json) - pixels(drawn.data[0].b64_json)).max() <= 1


@pytest.mark.parametrize(
    "fields, param, says",
    [
        ({"stream": True, "partial_images": 4}, "partial_images", "partial_images=4 is not allowed: send a whole number from 0 to 3"),
        ({"stream": True, "partial_images": -1}, "partial_images", "partial_images=-1 is not allowed"),
        ({"stream": True, "partial_images": "2"}, "partial_images", "partial_images='2' is not allowed"),
        ({"partial_images": 1.5}, "partial_images", "partial_images=1.5 is not allowed"),
        ({"stream": "yes"}, "stream", "stream='yes' is not allowed: send true"),
        ({"stream": True, "n": 2}, "n", "n=2 is not streamed: a stream carries one picture; send n=1"),
        ({"quality": "best"}, "quality", "quality='best' is not allowed: send 'low'"),
        ({"stream": True, "prompt": None}, "prompt", "prompt is missing"),  # the painter's check, before any event
        ({"stream": True, "size": "1000x1000"}, None, "can't make '1000x1000'"),
    ],
    ids=["partial-4", "partial-negative", "partial-text", "partial-fraction", "stream-text", "stream-n-2", "quality",
         "stream-no-prompt", "stream-size"],
)
def test_bad_stream_fields_400_name_the_field(url, fields, param, says):
    response = post(url, {**FAST, **fields})
    error = response.json()["error"]  # a JSON answer, not a stream
    assert response.status_code == 400 and response.headers["content-type"] == "application/json", response.text
    assert says in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_the_openai_client_raises_a_refused_stream(client):
    import openai

    with pytest.raises(openai.BadRequestError, match="partial_images=5 is not allowed"):
        client.images.generate(**STREAMED, stream=True, partial_images=5)


def test_quality_low_draws_a_draft_with_the_tiny_decoder(url, client):
    body = {**FAST, "seed": 9}
    full, draft, high = post(url, body), post(url, {**body, "quality": "low"}), post(url, {**body, "quality": "high"})
    assert [r.headers["X-Decoder"] for r in (full, draft, high)] == ["full", "tiny", "full"]
    full, draft, high = (pixels(r.json()["data"][0]["b64_json"]) for r in (full, draft, high))
    assert np.abs(full - draft).mean() > 1  # the same latents, another decoder
    assert np.array_equal(full, high)  # the request after a draft decodes with the full VAE again
    events = list(client.images.generate(**STREAMED, stream=True, partial_images=1, quality="low"))
    assert events[0].size == "1024x1024" and events[-1].quality == "low"  # the tiny decoder's previews: full size
    drawn = client.images.generate(**STREAMED, quality="low")
    assert np.abs(pixels(events[-1].b64_json) - pixels(drawn.data[0].b64_json)).max() <= 1


def test_edits_stream_and_draw_drafts(url, client):
    extra = {"strength": 1.0, "seed": 3, "num_inference_steps": 4}
    events = list(client.images.edit(image=("in.png", PICTURE, "image/png"), prompt="a red circle", stream=True,
                                      partial_images=1, quality="low", extra_body=extra))
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[-1].size == "256x256"  # the picture's own size
    fields = {key: str(value) for key, value in extra.items()}
    draft = post_edit(url, {"image": PICTURE}, {**fields, "quality": "low"})
    assert draft.headers["X-Decoder"] == "tiny"
    assert np.abs(pixels(events[-1].b64_json) - pixels(draft.json()["data"][0]["b64_json"])).max() <= 1


def test_a_client_leaving_mid_stream_frees_the_painter(url, client):
    """The only painter: a stream left after its first preview must not hold it (the next requests would wait)."""
    body = {**FAST, "num_inference_steps": 40, "stream": True, "partial_images": 3, "seed": 1}
    with httpx.stream("POST", f"{url}/images/generations", json=body, headers=AUTH, timeout=TIMEOUT) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        names = (line for line in response.iter_lines() if line.startswith("event:"))
        assert next(names) == "event: image_generation.partial_image"
    assert post(url, {**FAST, "seed": 2}).status_code == 200  # within TIMEOUT
    assert [event.type for event in client.images.generate(**STREAMED, stream=True)] == ["image_generation.completed"]


def test_the_options_of_a_body_and_of_a_form():
    assert draw_options({}) == DrawOptions(stream=False, partial_images=0, quality="auto")
    assert draw_options({"stream": True, "partial_images": 3, "quality": "low"}).decoder == "tiny"
    form = draw_options({"stream": "true", "partial_images": "2", "n": "1"}, edit=True)  # what the edits form holds
    assert form == DrawOptions(stream=True, partial_images=2, quality="auto")
    with pytest.raises(ValueError, match="stream='true' is not allowed"):
        draw_options({"stream": "true"})  # JSON's booleans are booleans


def test_a_stream_closed_early_stops_its_call():
    """What a client leaving does in the painter: Ray cancels the stream; the call stops at its next step, and the
    painter's call returns (its lock and decoder freed)."""
    steps, ended = [], threading.Event()

    def pipe(prompt, callback, callback_steps, **arguments):  # calls its step callback as diffusers' pipelines do
        try:
            for step in range(1000):
                callback(step, 0, None)
                steps.append(step)
                time.sleep(0.01)
        finally:
            ended.set()

    async def leave_early():
        events = painted_events(lambda through: through("a cat"), pipe, DrawOptions(stream=True), edit=False)
        waiting = asyncio.ensure_future(events.__anext__())
        while not steps:
            await asyncio.sleep(0.01)
        waiting.cancel()  # as Ray cancels a request whose client left
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(leave_early())
    assert ended.wait(TIMEOUT) and len(steps) < 1000


def test_a_call_that_fails_mid_stream_ends_it_with_an_error_event_naming_the_request():
    def pipe(prompt, callback, callback_steps, **arguments):
        raise RuntimeError("the painter broke\nsecond line")

    async def events() -> list[dict]:
        return [event async for event in painted_events(lambda through: through("a cat"), pipe, DrawOptions(stream=True), edit=False)]

    async def streamed(items: list[dict]) -> list[str]:
        async def source():
            for item in items:
                yield item
        return [text async for text in event_stream(source(), "req-7")]

    painted = asyncio.run(events())
    assert [event["type"] for event in painted] == ["error"] and painted[0]["error"]["type"] == "server_error"
    sent = asyncio.run(streamed(painted))
    assert sent[0].startswith("event: error\n") and ("The picture could not be drawn (RuntimeError: the painter broke): "
                                                      "retry, or report its request id. Request id: req-7.") in sent[0]


def test_a_model_without_a_tiny_decoder_refuses_drafts(port, tiny_variant, tmp_path):
    """Last: it deploys over the module's application."""
    folder = tmp_path / "no-tiny" / "FP16"
    for part in (*PARTS, "vae_encoder"):
        link_part(tiny_variant, folder, part)
    finish_variant(tiny_variant, folder, {"variant": "FP16"}, show_progress=False)
    url = deploy(build_app(folder, replicas=1, threads=1), port=port)
    for fields in ({"quality": "low"}, {"quality": "low", "stream": True, "partial_images": 1}):
        response = post(url, {**FAST, **fields}, headers={})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == "quality", response.text
        assert error["message"].startswith("quality='low' (a draft) is not served by this model: ask for quality 'auto'")
        assert missing_tiny_vae_message(folder.resolve()) in error["message"]
    drawn = post(url, {**FAST, "quality": "auto"}, headers={})
    assert drawn.status_code == 200 and drawn.headers["X-Decoder"] == "full"
