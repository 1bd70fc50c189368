"""Serving past one machine: a variant folder behind an OpenAI-style images API, on Ray Serve.

Two deployments make one application (:func:`build_app`):

- :class:`Painter`, the replicas that draw: each loads the variant folder on its own node, compiles it once with
  its own thread count (OpenVINO's ``INFERENCE_NUM_THREADS``, ``torch.set_num_threads``, and as many of Ray's CPUs,
  so replicas do not fight over cores) and draws one request at a time (``max_ongoing_requests=1``); the requests
  waiting for a painter are bounded (``max_queued_requests``).
- :class:`ImagesAPI`, the HTTP front (FastAPI): ``POST /v1/images/generations`` in the shape OpenAI's images API and
  OVMS speak, ``POST /v1/images/edits`` (OpenAI's multipart form, ``helpers.serving_edits``), ``GET /v1/models``,
  ``GET /health``; the bearer token; and the errors, as OpenAI's JSON: 400 for bad input (the pipeline's own checks,
  raised in the painter; the limits, ``helpers.request_limits``, checked here), 401 without the token, 413 for a body
  or upload over the limit, 503 with "retry" when the painters' queue is full or a painter stopped while drawing, 500
  with the request id (``X-Request-ID``) for anything else that failed while drawing, its traceback logged.
  ``"stream": true`` answers with OpenAI's image events, previews then the picture, and ``"quality": "low"`` draws a
  draft with the tiny VAE (``helpers.serving_stream``).

:func:`start_ray` starts a local Ray (or joins a cluster) without usage stats or dashboard, :func:`deploy` puts the
application behind Ray's HTTP proxy, :func:`shutdown` stops both. ``python -m helpers serve`` does all three.
"""


import asyncio
import base64
import functools
import io
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from .request_limits import BodyTooLarge, check_body_limits, read_body
from .serving_access import is_authorized
from .serving_edits import UploadError, edit_arguments, read_edit_form
from .serving_errors import RETRY_HEADERS, APIError, field_of, one_line
from .serving_stream import draw_options, event_stream, painted_events, painter_options, png_base64, where_headers
from .settings import MAX_QUEUED_REQUESTS
from .variants import Variant, as_variant

APP_NAME = "pixart"


def served_model_id(variant: Variant) -> str:
    """The id ``GET /v1/models`` lists and requests may name: ``<model-name>/<VARIANT>`` (e.g. ``tiny/FP16``)."""
    return f"{variant.folder.parent.name}/{variant.name}"


def api_size(height: int, width: int) -> str:
    """A size as the images API writes it, "WxH"."""
    return f"{width}x{height}"


def generation_call(body: dict[str, Any], pipe: Any, edit: bool = False) -> tuple[str, dict[str, Any], int | None]:
    """The prompt, the pipeline call's arguments and the seed of a request body, or a ``ValueError`` naming the
    problem and the fix: the fields the pipeline knows are checked by its own checks (``check_call_inputs``, the size
    by ``parse_size`` against the model's bins); this adds only what the API adds (types; the front checked the
    limits, ``helpers.request_limits``). An ``edit`` (the edits route's body) adds its picture, mask and strength
    (``helpers.serving_edits``)."""
    from .sizes import parse_size

    prompt, n, seed = body.get("prompt"), body.get("n", 1), body.get("seed")
    if not isinstance(prompt, str):
        raise ValueError('prompt is missing or not a string: send {"prompt": "a red circle on a blue background"}.')
    if body.get("response_format", "b64_json") not in ("b64_json", None):
        raise ValueError(f"response_format={body['response_format']!r} is not served: ask for b64_json (the pictures come in the answer).")
    negative = body.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f"negative_prompt={negative!r} is not allowed: send a string (\"\" for none).")
    if edit:
        asked = edit_arguments(body, pipe)
    else:
        asked = dict(zip(("height", "width"), parse_size(body.get("size") or api_size(*pipe.variant.native_size), pipe.variant.sizes)))
    arguments = pipe.recipe.call_arguments(
        negative_prompt=negative, num_inference_steps=body.get("num_inference_steps"),
        guidance_scale=body.get("guidance_scale"), num_images_per_prompt=n, **asked,
    )
    pipe.check_call_inputs(prompt, **arguments)
    return prompt, arguments, seed


def requested_adapters(body: dict[str, Any], served: list[str]) -> dict[str, float]:
    """The adapters a request asks for (its ``lora`` field, through the openai client's ``extra_body``): a name, or
    names with strengths; none without the field. A name the server was not started with is refused."""
    asked = body.get("lora")
    if asked is None:
        return {}
    asked = {asked: 1.0} if isinstance(asked, str) else asked
    if not isinstance(asked, dict) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in asked.values()):
        raise ValueError(f'lora={body["lora"]!r} is not allowed: send an adapter\'s name ("lora": "ring") or names with strengths ("lora": {{"ring": 0.8}}).')
    unknown = [name for name in asked if name not in served]
    if unknown:
        raise ValueError(f"lora={unknown[0]!r} is not served here: ask for one of {', '.join(served) or 'none (serve --lora NAME=PATH adds some)'}.")
    return {name: float(weight) for name, weight in asked.items()}


def served_lora(text: str) -> tuple[str, Path]:
    """``serve --lora NAME=PATH`` read and checked."""
    name, _, path = text.partition("=")
    if not name or not path or not Path(path).exists():
        raise ValueError(f"--lora {text!r}: give NAME=PATH with a PEFT folder or a .safetensors file at PATH.")
    return name, Path(path)


def decode_picture(b64_json: str):
    """A picture of an answer's ``data`` (its ``b64_json``), as a PIL image."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


class Painter:
    """One replica that draws: the variant compiled once, one picture request at a time."""

    def __init__(self, folder: str, threads: int, device: str = "CPU", ov_config: dict | None = None, loras: dict[str, str] | None = None):
        import torch

        from .pipeline import OVPixArtPipeline

        torch.set_num_threads(threads)  # torch's share of the work (the scheduler, the tensors between parts)
        variant = Variant.load(folder)  # this node's copy: a damaged one stops the replica with the file and the fix
        config = {"INFERENCE_NUM_THREADS": threads, **(ov_config or {})}
        self.pipe = OVPixArtPipeline.from_pretrained(variant, device, ov_config=config, compile=False)
        if threads == 1 and device == "CPU":
            # OpenVINO 2026.4.1's CPU plugin dies (SIGFPE) compiling the T5 IR for one thread in bf16; T5 runs once
            # per request, so it computes in f32 there
            self.pipe.text_encoder.ov_config = {**config, "INFERENCE_PRECISION_HINT": "f32"}
        for name, path in (loras or {}).items():  # before compiling: their branches are compiled once, here
            self.pipe.load_lora_weights(path, adapter_name=name)
        self.loras = list(loras or {})
        self.pipe.compile()  # here, once: a replica is ready (and routed requests) only when compiled
        self.pipe.set_progress_bar_config(disable=True)
        self._drawing = threading.Lock()  # one call at a time: a stopped stream's call may still finish its step

    def where(self) -> dict[str, str]:
        """This replica's id and the Ray node it runs on (the answer's X-Replica and X-Node headers)."""
        import ray

        return {"replica": serve.get_replica_context().replica_id.unique_id, "node": ray.get_runtime_context().get_node_id()}

    def _checked(self, body: dict[str, Any], edit: bool) -> tuple:
        """A request's call (prompt, arguments, seed), adapters and options, or a ``ValueError`` naming the fix."""
        prompt, arguments, seed = generation_call(body, self.pipe, edit)
        return prompt, arguments, seed, requested_adapters(body, self.loras), painter_options(body, self.pipe, edit)

    async def draw(self, body: dict[str, Any], edit: bool = False) -> dict[str, Any]:
        """The pictures a request asks for (an ``edit``: of its picture), base64 PNGs, with where they were drawn; for
        bad input, ``{"error": the check's message}`` (returned, not raised: Ray would log each as a failed request).

        The pipeline runs in a thread: the replica's event loop stays free for Ray's health checks."""
        try:
            *call, options = self._checked(body, edit)
        except ValueError as error:
            return {"error": str(error)}
        output = await asyncio.to_thread(self._paint, *call, options.decoder)
        return {"images": [png_base64(image) for image in output.images], "steps": output.record.steps_summary(),
                "decoder": options.decoder, **self.where()}

    async def stream(self, body: dict[str, Any], edit: bool = False):
        """A streamed request's events (``helpers.serving_stream``): first ``{"error": ...}`` for bad input (and no
        more), or where it is drawn; then OpenAI's image events, previews and the picture, as they are made."""
        try:
            *call, options = self._checked(body, edit)
        except ValueError as error:
            yield {"error": str(error)}
            return
        yield {**self.where(), "decoder": options.decoder}
        async for event in painted_events(functools.partial(self._paint, *call, options.decoder), self.pipe, options, edit):
            yield event

    def _paint(self, prompt: str, arguments: dict[str, Any], seed: int | None, adapters: dict[str, float],
               decoder: str = "full", through=None):
        """The call, with this request's adapters and decoder; ``through``: what calls the pipeline (a stream's)."""
        import torch

        with self._drawing:
            if adapters:  # this request's adapters: strengths switched, nothing compiled
                self.pipe.set_adapters(list(adapters), list(adapters.values()))
            self.pipe.set_lora_enabled(bool(adapters))
            generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
            self.pipe.set_decoder(decoder)
            try:
                return (through or self.pipe)(prompt, generator=generator, **arguments)
            finally:
                self.pipe.set_decoder("full")  # a draft is this request's only


def images_response(drawn: dict) -> JSONResponse:
    """The answer to a request: OpenAI's images response, which replica on which node drew it, and the steps its
    call ran (the call's record: computed and reused with the step cache)."""
    body = {"created": int(time.time()), "data": [{"b64_json": image} for image in drawn["images"]]}
    return JSONResponse(body, headers={**where_headers(drawn), "X-Steps": drawn["steps"]})


def running_painters(app_name: str = APP_NAME) -> int:
    """How many painter replicas are running (compiled) in the application."""
    application = serve.status().applications.get(app_name)
    deployment = application.deployments.get("Painter") if application else None
    return deployment.replica_states.get("RUNNING", 0) if deployment else 0


# The routes are bound when the class is decorated: what they call is defined above it.
app = FastAPI(title="PixArt on OpenVINO: images API", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(APIError)
async def _api_error(request: Request, error: APIError) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status, headers=error.headers)


@serve.ingress(app)
class ImagesAPI:
    """The HTTP front: OpenAI's images API over the painters, the token, and the errors as OpenAI writes them."""

    def __init__(self, painter, model_id: str, api_key: str | None = None):
        self.painter, self.model_id, self.api_key = painter, model_id, api_key or None

    def _authorize(self, request: Request) -> None:
        if not is_authorized(request.headers.get("authorization"), self.api_key):
            raise APIError(401, "Missing or wrong API key: send the header 'Authorization: Bearer <key>' with the "
                           "key the server was started with (the openai client: api_key=...).", code="invalid_api_key")

    @app.post("/v1/images/generations")
    async def generate(self, request: Request) -> JSONResponse:
        self._authorize(request)
        try:
            body = json.loads(await read_body(request))
        except BodyTooLarge as error:
            raise APIError(413, str(error)) from None
        except ValueError:
            raise APIError(400, 'The body is not JSON: send {"prompt": "...", "n": 1, "size": "WxH"} with '
                           "Content-Type: application/json.") from None
        if not isinstance(body, dict):
            raise APIError(400, f'The body is JSON but not an object ({type(body).__name__}): send {{"prompt": "..."}}.')
        return await self._answer(request, body)

    @app.post("/v1/images/edits")
    async def edit(self, request: Request) -> JSONResponse:
        """OpenAI's edits: the form read here (its size bounded), the picture and mask read by the painter."""
        self._authorize(request)
        try:
            body = await read_edit_form(request)
        except UploadError as error:
            raise APIError(error.status, str(error), param=error.param) from None
        return await self._answer(request, body, edit=True)

    async def _answer(self, request: Request, body: dict, edit: bool = False) -> JSONResponse | StreamingResponse:
        if body.get("model") not in (None, self.model_id):
            raise APIError(404, f"The model {body['model']!r} is not served here: ask for {self.model_id!r} "
                           "(GET /v1/models), or leave model out.", param="model", code="model_not_found")
        try:
            stream = draw_options(body, edit).stream
            check_body_limits(body)
        except ValueError as error:  # refused here: no painter waited for
            raise APIError(400, str(error), param=field_of(str(error))) from None
        events = self.painter.options(stream=True).stream.remote(body, edit) if stream else None
        request_id = request.headers.get("x-request-id", "?")  # Ray Serve's proxy sets it (or keeps the client's)
        drawn = await self._draw(body, edit, events, request_id)
        if "error" in drawn:  # the pipeline's checks, run in the painter
            raise APIError(400, drawn["error"], param=field_of(drawn["error"]))
        if stream:  # the checks passed: the painter draws, its events follow
            return StreamingResponse(event_stream(events, request_id), media_type="text/event-stream", headers=where_headers(drawn))
        return images_response(drawn)

    async def _draw(self, body: dict, edit: bool, events, request_id: str) -> dict:
        """The painter's answer (a stream's: its first item), the 503s, or a 500 for what failed while drawing (the
        painter serves on: Ray keeps a replica whose call raised)."""
        try:
            return await (events.__anext__() if events is not None else self.painter.draw.remote(body, edit))
        except BackPressureError as error:
            raise APIError(503, f"The server is busy ({error}): retry in a moment; every replica is drawing and "
                           "the queue is full.", kind="server_error", headers=RETRY_HEADERS) from None
        except RayActorError:
            raise APIError(503, "The replica drawing this request stopped before it finished: retry; Ray Serve "
                           "sends it to another replica (and replaces the one that stopped).", kind="server_error",
                           headers=RETRY_HEADERS) from None
        except Exception as error:
            logging.getLogger("ray.serve").exception("Request %s failed while drawing", request_id)
            raise APIError(500, f"The picture could not be drawn ({one_line(error)}): retry, or report request id "
                           f"{request_id}.", kind="server_error") from None

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        return {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": 0, "owned_by": "pixart-openvino"}]}

    @app.get("/health")
    async def health(self) -> dict:
        """Ready once a painter has compiled the variant (Ray marks a replica running when its constructor, which
        compiles, returns); 503 before."""
        running = await asyncio.to_thread(running_painters)
        if not running:
            raise APIError(503, "Starting: no replica has compiled the model yet; retry in a moment.", kind="server_error")
        return {"status": "ready", "model": self.model_id, "replicas": running}


def build_app(
    folder: Path | Variant,
    replicas: int = 1,
    threads: int = 1,
    api_key: str | None = None,
    max_queued_requests: int = MAX_QUEUED_REQUESTS,
    device: str = "CPU",
    ov_config: dict | None = None,
    loras: dict[str, Path] | None = None,
):
    """The Ray Serve application over a variant folder: ``replicas`` painters of ``threads`` threads each behind the
    images API, with ``loras`` (name: path) loaded in each, for requests to ask for by name. The folder is checked here first (``Variant.load``): a damaged one raises its
    :class:`~helpers.variants.DamagedVariantError` (which file, and the fix) before anything is deployed."""
    variant = as_variant(folder)
    for name, value in (("replicas", replicas), ("threads", threads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed: use 1 or more.")
    painter = serve.deployment(
        Painter,
        num_replicas=replicas,
        max_ongoing_requests=1,  # one picture at a time: a second request would only share its cores
        max_queued_requests=max_queued_requests,
        ray_actor_options={"num_cpus": threads},
    )
    front = serve.deployment(
        ImagesAPI, max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0}
    )  # it only awaits the painters: the bound is their queue
    return front.bind(painter.bind(str(variant.folder.resolve()), threads, device, ov_config, {n: str(Path(p).resolve()) for n, p in (loras or {}).items()}), served_model_id(variant), api_key)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """A local Ray instance on this machine (``address`` None) or a connection to a running cluster; no usage
    stats sent, no dashboard."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:  # "local": a new instance, never one found running on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")


def check_capacity(replicas: int, threads: int) -> None:
    """Refuse a deployment the Ray cluster has not the CPUs for (its replicas would wait for them for ever)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    if replicas * threads > cpus:
        raise ValueError(f"{replicas} replicas × {threads} threads need {replicas * threads} CPUs; the Ray cluster has "
                         f"{cpus}: use fewer replicas or --threads-per-replica, or add machines (ray start --address).")


def deploy(app, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME) -> str:
    """Run the application behind Ray's HTTP proxy (on the head node) at ``host:port``; returns its base URL for the
    openai client (``.../v1``). Deploying again under the same name updates it (e.g. fewer replicas); replicas of
    other threads start before the old ones stop, so on a full cluster :func:`undeploy` first."""
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    serve.run(app, name=name, route_prefix="/")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/v1"


def undeploy(name: str = APP_NAME) -> None:
    """Remove the application (its replicas stop, their CPUs are free again); Ray and the proxy keep running."""
    serve.delete(name)


def shutdown(graceful: bool = True) -> None:
    """Stop Serve (every replica and the proxy), then this process's Ray (a local instance ends with it).

    ``graceful=False`` skips Serve's own shutdown, which waits for its replicas: right for a local Ray only, whose
    processes all end with ``ray.shutdown()`` (what Ctrl-C on ``serve`` does then)."""
    import ray

    if ray.is_initialized():
        if graceful:
            serve.shutdown()
        ray.shutdown()
