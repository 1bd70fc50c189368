"""Demo: the Gradio app over the variants on disk, and its command line: a tab that generates pictures, and one that
edits a picture: uploaded into Gradio's ``ImageEditor``, the mask painted over it with a white brush (the painted
layer's pixels are the mask, white = repaint as diffusers takes it), a strength slider; nothing painted redraws the
whole picture (image-to-image). Both show the picture forming: the linear preview (``helpers.previews``) after each
step, then the picture; a checkbox decodes a generated one with the tiny VAE (a draft)."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import numpy as np
import torch
from PIL import Image

from .edit_inputs import editor_inputs
from .editing import steps_to_run
from .lora import available_loras
from .pipeline import OVPixArtPipeline
from .previews import Preview, pictures_as_they_form
from .request_limits import MAX_PROMPT_CHARS, check_request_limits
from .settings import MODEL_ROOT, STEP_CACHE_THRESHOLD, example_prompts
from .sizes import largest_side, parse_size
from .variants import VARIANTS, VariantNotReadyError, available_variants

EXAMPLE_SEEDS = (42, 42, 0, 0)
NO_LORA = "none"
BRUSH_SIZE = 48  # pixels: a stroke or two covers a shape of the shapes model's pictures
Drawn = tuple[Image.Image, float, str]  # a picture, its seconds and the steps its call ran


class DemoBackend:
    """Generates pictures for the demo: one compiled pipeline per variant, used by one request at a time.

    Gradio's queue already runs one request at a time (concurrency limit 1); the lock keeps the compiled models
    from being called from two threads even if that setting changes.
    """

    def __init__(self, model_id: str, device: str = "AUTO", root: Path = MODEL_ROOT, ov_config: dict | None = None):
        self.model_id, self.device, self.root, self.ov_config = model_id, device, Path(root), ov_config
        self.variants = {variant.name: variant for variant in available_variants(model_id, root)}  # each read once
        names = list(self.variants)
        # the last regular variant on disk (W8A8 once made: the fastest on CPU); opt-in ones (-ToDo) are never preselected
        self.default_variant = next((name for name in reversed(names) if name in VARIANTS), names[-1])
        first = self.variants[names[0]]
        self.sizes, self.recipe, self.family = first.sizes, first.recipe, first.family
        self.max_side = largest_side(first.sample_size)  # the largest side the model draws: edits are fitted to it
        self.loras = available_loras(model_id, root)  # model/<model-name>/lora/: each loaded into every pipeline
        self._pipelines: dict[str, OVPixArtPipeline] = {}
        self._lock = threading.Lock()

    def pipeline(self, variant: str) -> OVPixArtPipeline:
        """The compiled pipeline of a variant, compiled on first use."""
        if variant not in self.variants:
            raise ValueError(f"Unknown variant {variant!r}: choose one of {', '.join(self.variants)}.")
        if variant not in self._pipelines:
            pipe = OVPixArtPipeline.from_pretrained(self.variants[variant], self.device, self.ov_config, compile=False)
            for name, path in self.loras.items():  # before compiling: switching between them compiles nothing
                pipe.load_lora_weights(path, adapter_name=name)
            pipe.compile()
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[variant] = pipe
        return self._pipelines[variant]

    def generate(self, *args: Any, **kwargs: Any) -> Drawn:
        """:meth:`generating`'s picture, seconds and steps, its previews passed over."""
        return last(self.generating(*args, **kwargs))

    def generating(
        self,
        prompt: str,
        negative_prompt: str,
        seed: int,
        steps: int,
        guidance_scale: float,
        size: str,
        variant: str,
        step_cache: float = 0.0,
        on_step: Callable[[int, int], None] | None = None,
        lora: str = NO_LORA,
        lora_strength: float = 1.0,
        draft: bool = False,
    ) -> Iterator[Preview | Drawn]:
        """One picture as it forms: a :class:`Preview` after each step but the last, then the picture, its seconds and
        the steps its call ran (computed and reused with the step cache); ``on_step(done, total)`` follows the steps.

        ``step_cache``: the cache's threshold, 0 for off. ``lora``: one of :attr:`loras` at ``lora_strength``, or none.
        ``draft``: decoded by the tiny VAE (this request only).
        """
        height, width = parse_size(size, self.sizes)
        steps = int(steps)  # prompt, steps and size are checked by the pipeline's own __call__
        options = dict(negative_prompt=negative_prompt or "", num_inference_steps=steps, guidance_scale=float(guidance_scale),
                       height=height, width=width)
        yield from self.drawing(prompt, seed, variant, steps, on_step, float(step_cache), lora, lora_strength, draft, **options)

    def edit(self, *args: Any, **kwargs: Any) -> Drawn:
        """:meth:`editing`'s picture, seconds and steps, its previews passed over."""
        return last(self.editing(*args, **kwargs))

    def editing(
        self,
        prompt: str,
        seed: int,
        steps: int,
        guidance_scale: float,
        image: Image.Image,
        mask: Image.Image | None,
        strength: float,
        variant: str,
        on_step: Callable[[int, int], None] | None = None,
        lora: str = NO_LORA,
        lora_strength: float = 1.0,
    ) -> Iterator[Preview | Drawn]:
        """The picture edited after the prompt (where ``mask`` is white, or all of it), at its size, as :meth:`generating`
        gives pictures; ``on_step`` and the previews count the steps ``strength`` runs."""
        steps, strength = int(steps), float(strength)
        options = dict(image=image, mask_image=mask, strength=strength, num_inference_steps=steps,
                       guidance_scale=float(guidance_scale), height=image.height, width=image.width)
        yield from self.drawing(prompt, seed, variant, steps_to_run(steps, strength), on_step, 0.0, lora, lora_strength,
                                False, **options)

    def drawing(self, prompt: str, seed: int, variant: str, steps: int, on_step: Callable[[int, int], None] | None,
                step_cache: float, lora: str, lora_strength: float, draft: bool, **options) -> Iterator[Preview | Drawn]:
        """One call of a variant's pipeline with the step cache, adapter and decoder asked for: its linear previews at
        the picture's size, then its picture, seconds and steps.

        The previews stay linear when drafting too: a tiny decode after every step would cost more time than the
        draft saves on the one decode at the end; the linear one costs nothing."""
        check_request_limits(prompt, options.get("negative_prompt"), options["num_inference_steps"], seed=int(seed),
                             guidance_scale=options["guidance_scale"])  # the images API's limits: others may call
        with self._lock:
            pipe = self.pipeline(variant)
            self._set_step_cache(pipe, step_cache)
            self._set_lora(pipe, lora, float(lora_strength))
            try:
                pipe.set_decoder("tiny" if draft else "full")  # a folder without a tiny decoder says what adds one
                start = time.perf_counter()
                forming = pictures_as_they_form(
                    pipe, prompt, generator=torch.Generator("cpu").manual_seed(int(seed)),
                    callback=(lambda step, t, latents: on_step(step + 1, steps)) if on_step else None, **options)
                output = yield from previews_of(forming, (options["width"], options["height"]))
                seconds = time.perf_counter() - start
            finally:
                pipe.set_decoder("full")  # a draft is this request's only, even when it failed
        yield output.images[0], seconds, output.record.steps_summary()

    def _set_lora(self, pipe: OVPixArtPipeline, lora: str, strength: float) -> None:
        """This request's adapter at its strength, or none (switching compiles nothing)."""
        if lora not in (NO_LORA, *self.loras):
            raise ValueError(f"Unknown LoRA {lora!r}: choose one of {', '.join([NO_LORA, *self.loras])}.")
        if lora != NO_LORA:
            pipe.set_adapters(lora, strength)
        pipe.set_lora_enabled(lora != NO_LORA)

    @staticmethod
    def _set_step_cache(pipe: OVPixArtPipeline, threshold: float) -> None:
        """Turn the pipeline's step cache on at ``threshold`` (off at 0)."""
        if threshold == 0:
            pipe.disable_step_cache()
        else:
            pipe.enable_step_cache(threshold)


def previews_of(forming: Iterator, size: tuple[int, int]) -> Generator[Preview, None, Any]:
    """Pass on a call's previews (:func:`~helpers.previews.pictures_as_they_form`) at the picture's ``size``, so that the
    result image keeps its place in the page as it forms; return the call's output. Closed early (a request
    cancelled), it still waits for the call to end: the backend's lock is not let go while the pipeline runs."""
    try:
        for item in forming:
            if not isinstance(item, Preview):
                return item
            yield replace(item, images=[one.resize(size, Image.Resampling.BILINEAR) for one in item.images])
    finally:
        with contextlib.suppress(Exception):  # the call's error, if any, was already the request's
            for _ in forming:
                pass


def last(items: Iterator) -> Any:
    """The last of ``items``, the others dropped as they come."""
    return collections.deque(items, maxlen=1)[0]


@contextlib.contextmanager
def messages_in_page() -> Iterator[None]:
    """A bad request's error as a message in the page, not a stack trace."""
    import gradio as gr

    try:
        yield
    except (ValueError, VariantNotReadyError) as error:
        raise gr.Error(str(error)) from None


def as_it_forms(drawing: Iterator[Preview | Drawn], progress: Callable, other_outputs: int) -> Generator[tuple, None, Drawn]:
    """A handler's outputs while the picture forms: each preview in the result image (the ``other_outputs`` left as
    they are) and the progress bar at its step; returns the picture, its seconds and steps."""
    import gradio as gr

    with messages_in_page():
        for item in drawing:
            if not isinstance(item, Preview):
                return item
            coming = item.step + 1  # the bar names what runs while this preview shows
            progress(item.step / item.steps, desc=f"Denoising step {coming}/{item.steps}" + (", then the decode" if coming == item.steps else ""))
            yield (item.images[0], *[gr.skip()] * other_outputs)


def request_handler(backend: DemoBackend) -> Callable:
    """The app's handler of one request, a generator: a preview in the result image after each step but the last, then
    the picture, a line saying how it was drawn, and the seed used."""
    import random

    import gradio as gr

    def generate(prompt, negative_prompt, seed, randomize, steps, guidance, size, variant, step_cache=0.0, lora=NO_LORA,
                 lora_strength=1.0, draft=False, progress=gr.Progress()):
        seed = random.randint(0, 2**31 - 1) if randomize else int(seed)
        progress(0, desc="Encoding the prompt")
        drawing = backend.generating(prompt, negative_prompt, seed, steps, guidance, size, variant, step_cache,
                                     lora=lora, lora_strength=lora_strength, draft=bool(draft))
        image, seconds, steps_run = yield from as_it_forms(drawing, progress, other_outputs=2)
        adapter = f" · LoRA {lora} at {float(lora_strength):g}" if lora != NO_LORA else ""
        decoder = " · draft decode (tiny VAE)" if draft else ""
        yield image, f"{seconds:.1f} s · {variant} · seed {seed} · {image.width}×{image.height} · {steps_run}{adapter}{decoder}", seed

    return generate


def build_demo(model_id: str, device: str = "AUTO", root: Path = MODEL_ROOT, ov_config: dict | None = None):
    """The Gradio app over every variant of ``model_id`` on disk (``gr.Blocks``, queued one request at a time): a tab
    that generates, one that edits."""
    import gradio as gr

    backend = DemoBackend(model_id, device, root, ov_config)
    title = f"{backend.family} on OpenVINO"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nModel `{model_id}` on {device}, {backend.recipe.name} recipe.")
        with gr.Tab("Generate"):
            generate_tab(backend, model_id)
        with gr.Tab("Edit"):
            edit_tab(backend)
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def generate_tab(backend: DemoBackend, model_id: str) -> None:
    """The generate tab: a prompt and the call's settings, the picture, and examples."""
    import gradio as gr

    generate, recipe = request_handler(backend), backend.recipe
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Describe the picture", max_length=MAX_PROMPT_CHARS)
            negative = gr.Textbox(label="Negative prompt", value="", max_length=MAX_PROMPT_CHARS)
            with gr.Row():
                seed = gr.Number(label="Seed", value=42, precision=0, minimum=0)
                randomize = gr.Checkbox(label="Randomize seed", value=False)
            with gr.Row():
                steps = gr.Slider(1, 50, value=recipe.num_inference_steps, step=1, label="Steps")
                guidance = gr.Slider(0.0, 10.0, value=recipe.guidance_scale, step=0.5, label="Guidance scale")
            with gr.Row():
                size = gr.Dropdown(backend.sizes, value=backend.sizes[0], label="Size (W×H)", allow_custom_value=True)
                variant = gr.Dropdown(list(backend.variants), value=backend.default_variant, label="Variant")
            step_cache = gr.Slider(
                0.0, 0.5, value=0.0, step=0.05, label="Step cache threshold (0: off)",
                info=f"Reuse the transformer's blocks while its first block barely changes: faster, a little less exact ({STEP_CACHE_THRESHOLD} is the measured default; turning it on or off compiles the transformer again)",
            )
            with gr.Row():
                lora = gr.Dropdown([NO_LORA, *backend.loras], value=NO_LORA, label="LoRA adapter",
                                   info="from model/<model>/lora/; switching compiles nothing")
                lora_strength = gr.Slider(0.0, 1.5, value=1.0, step=0.1, label="LoRA strength")
            draft = gr.Checkbox(label="Draft decode (tiny VAE)", value=False,
                                info="a draft: the tiny VAE decodes in a fraction of the time, with less detail")
            button = gr.Button("Generate", variant="primary")
        with gr.Column():
            image = gr.Image(label="Picture", type="pil", format="png", elem_id="result")
            info = gr.Textbox(label="Generation", interactive=False, elem_id="info")
    inputs = [prompt, negative, seed, randomize, steps, guidance, size, variant, step_cache, lora, lora_strength, draft]
    gr.Examples(
        [[p, "", s, False, recipe.num_inference_steps, recipe.guidance_scale, backend.sizes[0], backend.default_variant, 0.0, NO_LORA, 1.0, False]
         for p, s in zip(example_prompts(model_id), EXAMPLE_SEEDS)],
        inputs=inputs,
    )
    button.click(generate, inputs=inputs, outputs=[image, info, seed], api_name="generate")
    prompt.submit(generate, inputs=inputs, outputs=[image, info, seed], api_name=False)


def described(mask: Image.Image | None, strength: float) -> str:
    """What the edit did, for the info line: inpainting of the painted share, or image-to-image."""
    if mask is None:
        return f"image-to-image at strength {strength:g}"
    share = (np.asarray(mask) > 127).mean()
    return f"inpainting {share:.0%} of the picture at strength {strength:g}"


def edit_handler(backend: DemoBackend) -> Callable:
    """The tab's handler of one request, a generator as :func:`request_handler`'s: previews, then the edited picture
    and a line saying how it was drawn."""
    import gradio as gr

    def edit(editor, prompt, strength, seed, steps, guidance, variant, lora=NO_LORA, lora_strength=1.0, progress=gr.Progress()):
        progress(0, desc="Encoding the picture and the prompt")
        with messages_in_page():
            image, mask = editor_inputs(editor, backend.max_side)
        drawing = backend.editing(prompt, int(seed), steps, guidance, image, mask, strength, variant, lora=lora,
                                  lora_strength=lora_strength)
        picture, seconds, steps_run = yield from as_it_forms(drawing, progress, other_outputs=1)
        adapter = f" · LoRA {lora} at {float(lora_strength):g}" if lora != NO_LORA else ""
        yield picture, (f"{seconds:.1f} s · {variant} · seed {int(seed)} · {picture.width}×{picture.height} · "
                        f"{described(mask, float(strength))} · {steps_run}{adapter}")

    return edit


def edit_tab(backend: DemoBackend) -> None:
    """The edit tab's layout and its ``/edit`` API."""
    import gradio as gr

    recipe = backend.recipe
    with gr.Row():
        with gr.Column():
            editor = gr.ImageEditor(
                label="Picture (paint where to redraw)", type="pil", format="png",
                sources=("upload", "clipboard"), layers=False, transforms=(), elem_id="editor",
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=BRUSH_SIZE),
            )
            prompt = gr.Textbox(label="Edit prompt", lines=2, placeholder="Describe the edited picture",
                                max_length=MAX_PROMPT_CHARS)
            strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Strength",
                                 info="how much to redraw, where you painted (nothing painted: all of it): 0.3 small "
                                 "changes, 0.8 keeps the layout, 1 from noise; it runs that share of the steps")
            with gr.Row():
                seed = gr.Number(label="Seed", value=42, precision=0, minimum=0)
                steps = gr.Slider(1, 50, value=recipe.num_inference_steps, step=1, label="Steps")
                guidance = gr.Slider(0.0, 10.0, value=recipe.guidance_scale, step=0.5, label="Guidance scale")
            with gr.Row():
                variant = gr.Dropdown(list(backend.variants), value=backend.default_variant, label="Variant")
                lora = gr.Dropdown([NO_LORA, *backend.loras], value=NO_LORA, label="LoRA adapter")
                lora_strength = gr.Slider(0.0, 1.5, value=1.0, step=0.1, label="LoRA strength")
            button = gr.Button("Edit", variant="primary")
        with gr.Column():
            edited = gr.Image(label="Edited picture", type="pil", format="png", elem_id="edited")
            info = gr.Textbox(label="Edit", interactive=False, elem_id="edit-info")
    inputs = [editor, prompt, strength, seed, steps, guidance, variant, lora, lora_strength]
    button.click(edit_handler(backend), inputs=inputs, outputs=[edited, info], api_name="edit")


def local_theme():
    """Gradio's default theme with system fonts: the default one loads Google Fonts, a call outside this machine."""
    import gradio as gr

    system = [gr.themes.Font("ui-sans-serif"), gr.themes.Font("system-ui"), gr.themes.Font("sans-serif")]
    return gr.themes.Default(font=system, font_mono=[gr.themes.Font("ui-monospace"), gr.themes.Font("monospace")])


def launch_demo(demo, port: int | None = None, block: bool = True):
    """Serve the demo on 127.0.0.1 only, with no share link; returns the demo (its ``local_url`` is set)."""
    demo.launch(
        server_name="127.0.0.1", server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        theme=local_theme(), ssr_mode=False, quiet=True,
    )
    return demo

