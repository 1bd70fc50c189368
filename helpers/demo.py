"""Demo: the Gradio app over the variants on disk, and its command line."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from .lora import available_loras
from .pipeline import OVPixArtPipeline
from .settings import MODEL_ROOT, STEP_CACHE_THRESHOLD, example_prompts
from .sizes import parse_size
from .variants import VARIANTS, VariantNotReadyError, available_variants

EXAMPLE_SEEDS = (42, 42, 0, 0)
NO_LORA = "none"


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
        with self._lock:
            pipe = self.pipeline(variant)
            self._set_step_cache(pipe, float(step_cache))
            self._set_lora(pipe, lora, float(lora_strength))
            options = dict(negative_prompt=negative_prompt or "", num_inference_steps=steps, guidance_scale=float(guidance_scale),
                           height=height, width=width)
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
    """The Gradio app over every variant of ``model_id`` on disk (``gr.Blocks``, queued one request at a time)."""
    import gradio as gr

    backend = DemoBackend(model_id, device, root, ov_config)
    generate = request_handler(backend)
    recipe = backend.recipe
    title = f"{backend.family} on OpenVINO"
    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nModel `{model_id}` on {device}, {recipe.name} recipe.")
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
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


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

