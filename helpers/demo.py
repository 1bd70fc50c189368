"""Demo: the Gradio app over the variants on disk, and its command line: a tab that generates pictures, and one that
edits a picture: uploaded into Gradio's ``ImageEditor``, the mask painted over it with a white brush (the painted
layer's pixels are the mask, white = repaint as diffusers takes it), a strength slider; nothing painted redraws the
whole picture (image-to-image)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .edit_inputs import editor_inputs
from .editing import steps_to_run
from .lora import available_loras
from .pipeline import OVPixArtPipeline
from .settings import MODEL_ROOT, STEP_CACHE_THRESHOLD, example_prompts
from .sizes import largest_side, parse_size
from .variants import VARIANTS, VariantNotReadyError, available_variants

EXAMPLE_SEEDS = (42, 42, 0, 0)
NO_LORA = "none"
BRUSH_SIZE = 48  # pixels: a stroke or two covers a shape of the shapes model's pictures


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

    def generate(
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
    ) -> tuple[Image.Image, float, str]:
        """One picture, its seconds and the steps its call ran (computed and reused with the step cache);
        ``on_step(done, total)`` follows the denoising steps.

        ``step_cache``: the cache's threshold, 0 for off. ``lora``: one of :attr:`loras` at ``lora_strength``, or none.
        """
        height, width = parse_size(size, self.sizes)
        steps = int(steps)  # prompt, steps and size are checked by the pipeline's own __call__
        options = dict(negative_prompt=negative_prompt or "", num_inference_steps=steps, guidance_scale=float(guidance_scale),
                       height=height, width=width)
        return self.draw(prompt, seed, variant, steps, on_step, float(step_cache), lora, lora_strength, **options)

    def edit(
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
    ) -> tuple[Image.Image, float, str]:
        """The picture edited after the prompt (where ``mask`` is white, or all of it), at its size, as :meth:`generate`
        gives pictures; ``on_step`` counts the steps ``strength`` runs."""
        steps, strength = int(steps), float(strength)
        options = dict(image=image, mask_image=mask, strength=strength, num_inference_steps=steps,
                       guidance_scale=float(guidance_scale), height=image.height, width=image.width)
        return self.draw(prompt, seed, variant, steps_to_run(steps, strength), on_step, 0.0, lora, lora_strength, **options)

    def draw(self, prompt: str, seed: int, variant: str, steps: int, on_step: Callable[[int, int], None] | None,
             step_cache: float, lora: str, lora_strength: float, **options) -> tuple[Image.Image, float, str]:
        """One call of a variant's pipeline with the step cache and adapter asked for; its picture, seconds and steps."""
        with self._lock:
            pipe = self.pipeline(variant)
            self._set_step_cache(pipe, step_cache)
            self._set_lora(pipe, lora, float(lora_strength))
            start = time.perf_counter()
            output = pipe(
                prompt,
                generator=torch.Generator("cpu").manual_seed(int(seed)),
                callback=(lambda step, t, latents: on_step(step + 1, steps)) if on_step else None,
                **options,
            )
            seconds = time.perf_counter() - start
            return output.images[0], seconds, output.record.steps_summary()

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


def request_handler(backend: DemoBackend) -> Callable:
    """The app's handler of one request: the picture, a line saying how it was drawn, and the seed used."""
    import random

    import gradio as gr

    def generate(prompt, negative_prompt, seed, randomize, steps, guidance, size, variant, step_cache=0.0, lora=NO_LORA,
                 lora_strength=1.0, progress=gr.Progress()):
        seed = random.randint(0, 2**31 - 1) if randomize else int(seed)
        progress(0, desc="Encoding the prompt")
        try:
            image, seconds, steps_run = backend.generate(
                prompt, negative_prompt, seed, steps, guidance, size, variant, step_cache,
                on_step=lambda done, total: progress(done / total, desc=f"Denoising step {done}/{total}"),
                lora=lora, lora_strength=lora_strength,
            )
        except (ValueError, VariantNotReadyError) as error:  # a message in the page, not a stack trace
            raise gr.Error(str(error)) from None
        adapter = f" · LoRA {lora} at {float(lora_strength):g}" if lora != NO_LORA else ""
        return image, f"{seconds:.1f} s · {variant} · seed {seed} · {image.width}×{image.height} · {steps_run}{adapter}", seed

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
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Describe the picture")
            negative = gr.Textbox(label="Negative prompt", value="")
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
            button = gr.Button("Generate", variant="primary")
        with gr.Column():
            image = gr.Image(label="Picture", type="pil", format="png", elem_id="result")
            info = gr.Textbox(label="Generation", interactive=False, elem_id="info")
    inputs = [prompt, negative, seed, randomize, steps, guidance, size, variant, step_cache, lora, lora_strength]
    gr.Examples(
        [[p, "", s, False, recipe.num_inference_steps, recipe.guidance_scale, backend.sizes[0], backend.default_variant, 0.0, NO_LORA, 1.0]
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
    """The tab's handler of one request: the edited picture and a line saying how it was drawn."""
    import gradio as gr

    def edit(editor, prompt, strength, seed, steps, guidance, variant, lora=NO_LORA, lora_strength=1.0, progress=gr.Progress()):
        progress(0, desc="Encoding the picture and the prompt")
        try:
            image, mask = editor_inputs(editor, backend.max_side)
            picture, seconds, steps_run = backend.edit(
                prompt, int(seed), steps, guidance, image, mask, strength, variant,
                on_step=lambda done, total: progress(done / total, desc=f"Denoising step {done}/{total}"),
                lora=lora, lora_strength=lora_strength,
            )
        except (ValueError, VariantNotReadyError) as error:  # a message in the page, not a stack trace
            raise gr.Error(str(error)) from None
        adapter = f" · LoRA {lora} at {float(lora_strength):g}" if lora != NO_LORA else ""
        return picture, (f"{seconds:.1f} s · {variant} · seed {int(seed)} · {picture.width}×{picture.height} · "
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
            prompt = gr.Textbox(label="Edit prompt", lines=2, placeholder="Describe the edited picture")
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

