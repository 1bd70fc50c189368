"""Serving on Ray Serve (helpers/serving.py), on the cluster of 2 nodes of this folder's conftest.py.

The tiny model draws 1024² pictures (its bins are the 1024 ones) in 2 steps: about a second each on one core.
"""

import io
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray starts: no usage report sent

import ray  # noqa: E402
from ray import serve  # noqa: E402

from helpers.request_limits import MAX_BODY_BYTES, MAX_GUIDANCE, MAX_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS  # noqa: E402
from helpers.serving import Painter, build_app, decode_picture, deploy, running_painters  # noqa: E402
from helpers.serving_edits import MAX_UPLOAD_BYTES, UploadError, read_edit_form  # noqa: E402
from helpers.variants import DamagedVariantError  # noqa: E402

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FAST = {"prompt": "a red circle", "num_inference_steps": 2, "size": "1024x1024"}
TIMEOUT = 120  # seconds a client waits: a request that hangs fails the test instead of the run


@pytest.fixture(scope="module")
def url(port, tiny_variant, tiny_adapter):
    """The images API over 2 replicas of the tiny FP16 variant with a LoRA adapter, with an API key; its base URL
    (``.../v1``)."""
    app = build_app(tiny_variant, replicas=2, threads=1, api_key=KEY, max_queued_requests=32, loras={"random": tiny_adapter})
    return deploy(app, port=port)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body, headers=AUTH, **options) -> httpx.Response:
    return httpx.post(f"{url}/images/generations", json=body, headers=headers, timeout=TIMEOUT, **options)


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


PICTURE = png(Image.fromarray((np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)))


def openai_mask(width: int = 256, height: int = 256, hole: bool = True) -> bytes:
    """OpenAI's mask: opaque, with the bottom-right quarter fully transparent (where to edit) when ``hole``."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    if hole:
        mask.paste((0, 0, 0, 0), (width // 2, height // 2, width, height))
    return png(mask)


def post_edit(url: str, files: dict, fields: dict | None = None, headers=AUTH) -> httpx.Response:
    """A multipart edits request of the tiny model (2 steps), as the openai client sends it."""
    data = {"prompt": "a red circle", "num_inference_steps": "2", **(fields or {})}
    return httpx.post(f"{url}/images/edits", files=files, data=data, headers=headers, timeout=TIMEOUT)


def pictures(response: httpx.Response) -> list[Image.Image]:
    return [decode_picture(item["b64_json"]) for item in response.json()["data"]]


def test_openai_client_generates_with_extra_fields(url):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=TIMEOUT)
    assert [model.id for model in client.models.list()] == ["tiny/FP16"]
    result = client.images.generate(prompt="a red circle", n=2, size="768x1344", response_format="b64_json",
                                    extra_body={"num_inference_steps": 2, "seed": 7, "guidance_scale": 0.0, "negative_prompt": ""})
    images = pictures_of(result)
    assert result.created > 0 and [image.size for image in images] == [(768, 1344)] * 2
    assert result.data[0].b64_json != result.data[1].b64_json  # n pictures, not n copies
    again = client.images.generate(prompt="a red circle", size="768x1344", extra_body={"num_inference_steps": 2, "seed": 7, "n": 2})
    assert [item.b64_json for item in again.data] == [item.b64_json for item in result.data]  # the seed decides, whichever replica draws


def test_a_request_picks_its_adapter_and_strength_by_name(url):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=TIMEOUT)
    draw = lambda **extra: client.images.generate(prompt="a red circle", extra_body={"num_inference_steps": 2, "seed": 3, **extra}).data[0].b64_json  # noqa: E731
    base, adapted, half = draw(), draw(lora="random"), draw(lora={"random": 0.5})
    assert len({base, adapted, half}) == 3  # the adapter at 1 and at 0.5: three pictures
    assert draw(lora={"random": 0.0}) == base and draw() == base  # strength 0, and the next request without it


def test_health_says_ready_with_both_replicas(url):
    health = httpx.get(url.removesuffix("/v1") + "/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json() == {"status": "ready", "model": "tiny/FP16", "replicas": 2}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["missing", "wrong"])
def test_without_the_key_401(url, headers):
    edit = post_edit(url, {"image": PICTURE}, headers=headers)
    for response in (post(url, FAST, headers=headers), httpx.get(f"{url}/models", headers=headers), edit):
        assert response.status_code == 401 and "Authorization: Bearer" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, param, says",
    [
        ({**FAST, "prompt": "  "}, None, "A prompt is empty"),
        ({**FAST, "prompt": None}, "prompt", "prompt is missing"),
        ({**FAST, "n": 0}, "n", "at least 1 picture"),
        ({**FAST, "n": MAX_IMAGES + 1}, "n", f"at most {MAX_IMAGES}"),
        ({**FAST, "size": "1000x1000"}, None, "can't make '1000x1000': pick one of its sizes, e.g. 1024×1024"),
        ({**FAST, "num_inference_steps": 0}, "num_inference_steps", "at least 1 step"),
        ({**FAST, "num_inference_steps": 10_000_000}, "num_inference_steps", f"more than the {MAX_STEPS} allowed"),
        ({**FAST, "prompt": "a" * (MAX_PROMPT_CHARS + 1)}, "prompt", f"{MAX_PROMPT_CHARS + 1} characters, more than the {MAX_PROMPT_CHARS}"),
        ({**FAST, "negative_prompt": "b" * (MAX_PROMPT_CHARS + 1)}, "negative_prompt", f"more than the {MAX_PROMPT_CHARS} allowed"),
        ({**FAST, "guidance_scale": -1}, "guidance_scale", f"use a number from 0 to {MAX_GUIDANCE:g}"),
        ({**FAST, "guidance_scale": 1e300}, "guidance_scale", f"use a number from 0 to {MAX_GUIDANCE:g}"),
        ({**FAST, "seed": "seven"}, "seed", "whole number"),
        ({**FAST, "seed": 2**70}, "seed", "use a whole number from 0 to 2**64 - 1"),
        ({**FAST, "seed": -1}, "seed", "use a whole number from 0 to 2**64 - 1"),
        ({**FAST, "response_format": "url"}, "response_format", "ask for b64_json"),
        ({**FAST, "lora": "other"}, "lora", "lora='other' is not served here: ask for one of random"),
        ({**FAST, "lora": ["random"]}, "lora", "send an adapter's name"),
    ],
    ids=["empty-prompt", "no-prompt", "n-0", "n-too-many", "size", "steps", "steps-too-many", "prompt-too-long",
         "negative-too-long", "guidance-negative", "guidance-too-large", "seed-text", "seed-too-large", "seed-negative", "url",
         "lora-unknown", "lora-shape"],
)
def test_bad_input_400_names_the_fix(url, body, param, says):
    response = post(url, body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error", response.text
    assert says in error["message"] and error["param"] == param


def test_body_not_json_400(url):
    response = post(url, None, content=b"prompt=a cat", headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]["message"]
    response = post(url, ["a cat"])
    assert response.status_code == 400 and "not an object" in response.json()["error"]["message"]
    response = httpx.post(f"{url}/images/edits", json=FAST, headers=AUTH, timeout=TIMEOUT)  # edits take a form
    assert response.status_code == 400 and "not a multipart form" in response.json()["error"]["message"]


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "chunked"])
def test_a_body_over_the_limit_413(url, declare_length):
    body = b'{"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}'
    content = body if declare_length else iter([body[:1000], body[1000:]])  # an iterator: sent chunked, no length
    response = httpx.post(f"{url}/images/generations", content=content, headers={**AUTH, "Content-Type": "application/json"}, timeout=TIMEOUT)
    error = response.json()["error"]
    assert response.status_code == 413 and f"more than the {MAX_BODY_BYTES // 2**10} KiB allowed" in error["message"], response.text


def test_a_limit_is_refused_on_the_edits_route_too(url):
    response = post_edit(url, {"image": PICTURE}, {"num_inference_steps": str(MAX_STEPS + 1)})
    assert response.status_code == 400 and response.json()["error"]["param"] == "num_inference_steps"
    assert post_edit(url, {"image": PICTURE}, {"num_inference_steps": "2"}).status_code == 200  # under the limit: drawn


def test_openai_client_edits_with_and_without_a_mask(url):
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=TIMEOUT)
    extra = {"strength": 0.5, "seed": 3, "num_inference_steps": 2}  # one step of LCM's two
    whole = client.images.edit(image=("in.png", PICTURE, "image/png"), prompt="a red circle", size="1344x768",
                               response_format="b64_json", extra_body=extra)
    assert [image.size for image in pictures_of(whole)] == [(1344, 768)]
    masked = client.images.edit(image=PICTURE, mask=("mask.png", openai_mask(), "image/png"), prompt="a red circle", n=2, extra_body=extra)
    first, second = (np.asarray(image, dtype=float) for image in pictures_of(masked))
    assert first.shape == (256, 256, 3)  # the picture's own size
    # two pictures of different noise: the same outside the transparent quarter (the picture's latents, kept), not in it
    assert np.abs(first[:96, :96] - second[:96, :96]).max() <= 2
    assert np.abs(first[160:, 160:] - second[160:, 160:]).mean() > 5


def test_an_upload_over_the_limit_413(url):
    response = post_edit(url, {"image": b"\x89PNG" + bytes(MAX_UPLOAD_BYTES)})
    error = response.json()["error"]
    assert response.status_code == 413 and error["param"] == "image" and "more than the 32 MiB this server takes" in error["message"]


@pytest.mark.parametrize(
    "files, fields, param, says",
    [
        ({"image": b"not a picture"}, {}, "image", "image is not a picture: send a PNG, JPEG or WebP file"),
        ({"image": png(Image.new("RGB", (4096, 16)))}, {}, "image", "image is 4096×16, larger than this model draws: send a picture of at most 2048"),
        ({"image": PICTURE, "mask": openai_mask(128, 128)}, {}, "mask", "mask is 128×128 but image is 256×256"),
        ({"image": PICTURE, "mask": openai_mask(hole=False)}, {}, "mask", "no fully transparent pixel, so nothing to edit"),
        ({"image": PICTURE, "mask": png(Image.new("RGB", (256, 256)))}, {}, "mask", "mask has no transparency: send a PNG with an alpha channel"),
        ({"image": PICTURE}, {"strength": "0"}, "strength", "strength=0.0 is not allowed: use a number in (0, 1]"),
        ({"image": PICTURE}, {"strength": "1.5"}, "strength", "strength=1.5 is not allowed"),
        ({"image": PICTURE}, {"size": "1000x1000"}, None, "can't make '1000x1000'"),
        ({"image": PICTURE}, {"seed": str(2**64)}, "seed", "use a whole number from 0 to 2**64 - 1"),
        ({"mask": openai_mask()}, {}, "image", "image is missing"),
        ({"image": PICTURE}, {"mask": "transparent"}, "mask", "mask is not a file: send it as a file of the form"),
    ],
    ids=["not-a-picture", "too-large", "mask-size", "mask-empty", "mask-opaque", "strength-0", "strength-1.5", "size", "seed",
         "no-image", "mask-text"],
)
def test_bad_edits_400_name_the_field(url, files, fields, param, says):
    response = post_edit(url, files, fields)
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error", response.text
    assert says in error["message"] and error["param"] == param


def form_request(files: dict, fields: dict, declare_length: bool = True, chunk: int = 2**20):
    """A Starlette request of a multipart form as httpx encodes it, its body arriving in chunks (without a
    Content-Length header unless ``declare_length``)."""
    import asyncio

    from starlette.requests import Request

    encoded = httpx.Request("POST", "http://test/v1/images/edits", files=files, data=fields)
    body = encoded.read()
    headers = [(k.lower().encode(), v.encode()) for k, v in encoded.headers.items() if declare_length or k.lower() != "content-length"]
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    messages = [{"type": "http.request", "body": part, "more_body": i + 1 < len(chunks)} for i, part in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    request = Request({"type": "http", "method": "POST", "path": "/v1/images/edits", "headers": headers}, receive)
    return asyncio.run(read_edit_form(request))


def test_the_form_becomes_the_body_a_painter_takes():
    fields = {"prompt": "a cat", "n": "2", "strength": "0.6", "seed": "seven", "lora[star]": "0.5", "guidance_scale": "inf"}
    body = form_request({"image[]": PICTURE, "mask": openai_mask()}, fields)
    assert body == {"prompt": "a cat", "n": 2, "strength": 0.6, "seed": "seven", "lora": {"star": 0.5}, "guidance_scale": "inf",
                    "image": PICTURE, "mask": openai_mask()}  # text that is no number stays, for the checks to name


def test_an_upload_without_its_length_is_cut_at_the_limit():
    with pytest.raises(UploadError, match="more than the 32 MiB this server takes") as refused:
        form_request({"image": bytes(MAX_UPLOAD_BYTES + 1)}, {"prompt": "a cat"}, declare_length=False)
    assert refused.value.status == 413 and refused.value.param == "image"


def test_16_concurrent_requests_over_2_nodes(url, cluster):
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda seed: post(url, {**FAST, "size": "1344x768", "seed": seed}), range(16)))
    assert [response.status_code for response in responses] == [200] * 16
    assert all([image.size for image in pictures(response)] == [(1344, 768)] for response in responses)
    steps = FAST.get("num_inference_steps")
    assert all(response.headers["X-Steps"] == f"{steps} steps" for response in responses)  # each call's record
    nodes = {response.headers["X-Node"] for response in responses}
    assert len(nodes) == 2 and nodes <= {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def painter_replicas() -> list:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [ray.get_actor(actor["name"], namespace=actor["namespace"]) for actor in names if "SERVE_REPLICA::pixart#Painter" in actor["name"]]


def test_killed_replica_is_replaced_and_no_request_lost(url):
    """Two long requests, one on each replica (a replica takes one at a time), and short ones queued behind them; one
    replica killed while both draw: its request gets a 503 that says retry, every other request its picture."""
    long = {**FAST, "num_inference_steps": 45}  # about 9 s on one core: both still draw when the kill comes
    with ThreadPoolExecutor(6) as pool:
        drawing = [pool.submit(post, url, {**long, "seed": seed}) for seed in range(2)]
        time.sleep(3)
        queued = [pool.submit(post, url, {**FAST, "seed": seed}) for seed in range(4)]
        assert not any(future.done() for future in drawing)
        ray.kill(painter_replicas()[0], no_restart=True)
        answers = [future.result() for future in drawing]  # each within TIMEOUT: none hangs
        behind = [future.result() for future in queued]
    assert sorted(response.status_code for response in answers) == [200, 503]
    refused = next(response for response in answers if response.status_code == 503)
    assert "retry" in refused.json()["error"]["message"] and refused.headers["Retry-After"] == "1", refused.text
    assert [response.status_code for response in behind] == [200] * 4  # queued, not lost: drawn by the other replica
    assert post(url, long | {"num_inference_steps": 2}).status_code == 200  # the retry answers
    deadline = time.time() + 90
    while running_painters() < 2 and time.time() < deadline:  # Ray Serve starts a replacement
        time.sleep(1)
    assert running_painters() == 2


def test_a_painter_that_raises_answers_500_and_serves_on(port, tiny_variant):
    """A painter whose call raises (a bug, not bad input): a 500 in OpenAI's shape, the error's first line and the
    request id; the same replica draws the next request."""
    from helpers.serving import ImagesAPI

    class RaisingPainter(Painter):  # defined here: Ray pickles it whole to its replica
        def _paint(self, prompt, *args, **kwargs):
            if prompt == "raise":
                raise RuntimeError("the painter broke\nsecond line of its message")
            return super()._paint(prompt, *args, **kwargs)

    painter = serve.deployment(RaisingPainter, ray_actor_options={"num_cpus": 0}).bind(str(tiny_variant), 1)
    serve.run(serve.deployment(ImagesAPI, ray_actor_options={"num_cpus": 0}).bind(painter, "tiny/FP16"),
              name="raising", route_prefix="/raising")
    try:
        raising = f"http://127.0.0.1:{port}/raising/v1"
        failed = post(raising, {**FAST, "prompt": "raise"}, headers={"X-Request-ID": "req-42"})
        error = failed.json()["error"]
        assert failed.status_code == 500 and error["type"] == "server_error", failed.text
        assert error["message"] == ("The picture could not be drawn (RuntimeError: the painter broke): retry, or report "
                                    "request id req-42.")
        drawn = post(raising, FAST)
        assert drawn.status_code == 200 and pictures(drawn)[0].size == (1024, 1024)
        assert running_painters("raising") == 0  # named Painter only in the main application: count its own
        states = serve.status().applications["raising"].deployments["RaisingPainter"].replica_states
        assert states == {"RUNNING": 1}  # not restarted: the replica that raised drew the picture
    finally:
        serve.delete("raising")


def test_full_queue_503_says_retry(port, tiny_variant):
    """One replica, one request queued: of 6 at once, the ones beyond get 503 at once, and a retry answers."""
    url = deploy(build_app(tiny_variant, replicas=1, threads=1, max_queued_requests=1), port=port)
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda seed: post(url, {**FAST, "seed": seed}, headers={}), range(6)))
    refused = [response for response in responses if response.status_code == 503]
    assert refused and sum(response.status_code == 200 for response in responses) + len(refused) == 6
    for response in refused:
        error = response.json()["error"]
        assert "retry" in error["message"] and "max_queued_requests=1" in error["message"]
        assert response.headers["Retry-After"] == "1"
    assert post(url, FAST, headers={}).status_code == 200


def test_damaged_variant_is_not_deployed(tiny_variant, tmp_path):
    copy = shutil.copytree(tiny_variant, tmp_path / "tiny" / "FP16")
    weights = copy / "transformer" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DamagedVariantError, match=r"transformer/openvino_model.bin has 100 bytes.*Copy the folder again"):
        build_app(copy)


def test_serve_command_refuses_a_damaged_folder_before_ray(tiny_variant, tmp_path, capsys):
    from helpers.cli import main

    copy = shutil.copytree(tiny_variant, tmp_path / "tiny" / "FP16")
    (copy / "vae_decoder" / "config.json").unlink()
    assert main(["serve", "--model", "tiny", "--model-root", str(tmp_path)]) == 1
    assert "vae_decoder/config.json is missing. Copy the folder again" in capsys.readouterr().err


def test_serve_command_answers_then_stops_on_ctrl_c(model_root, tiny_variant):
    """``python -m helpers serve`` with a local Ray of its own: one picture through the openai client, then Ctrl-C
    stops Serve and that Ray (no process of it left)."""
    import signal
    import subprocess
    import sys

    from openai import OpenAI

    port = free_port()
    command = [sys.executable, "-m", "helpers", "serve", "--model", "tiny", "--model-root", str(model_root),
               "--replicas", "1", "--threads-per-replica", "1", "--port", str(port), "--api-key", KEY]
    # as from a terminal: Ctrl-C's default disposition (a SIGINT ignored by whoever started pytest would stay ignored)
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    # read all the time: Ray's logs would fill the pipe, and a server blocked writing to it never stops
    reader = threading.Thread(target=lambda: [lines.append(line) for line in server.stdout], daemon=True)
    reader.start()
    try:
        deadline = time.time() + TIMEOUT
        while not any(line.startswith("Serving tiny/FP16") for line in lines) and time.time() < deadline:
            time.sleep(0.5)  # its first line of its own says where it serves
        serving = next(line for line in lines if line.startswith("Serving tiny/FP16"))
        assert f"at http://127.0.0.1:{port}/v1" in serving
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT)
        result = client.images.generate(prompt="a red circle", size="1024x1024", extra_body={"num_inference_steps": 2})
        assert pictures_of(result)[0].size == (1024, 1024)
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("serve did not stop on Ctrl-C; its last lines:\n" + "".join(lines[-30:]))
        assert server.returncode == 0, "".join(lines[-30:])
        reader.join(timeout=10)
        assert "Stopped serving.\n" in lines
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def pictures_of(result) -> list[Image.Image]:
    return [decode_picture(item.b64_json) for item in result.data]
