"""The Gradio demo: its helpers, its handler's previews and draft decode, a real browser (Debian's chromium through
Playwright) on both tabs and on the picture as it forms, and 8 requests at once."""

import contextlib
import os
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from helpers import variants
from helpers.demo import DemoBackend, build_demo, launch_demo, request_handler
from helpers.edit_inputs import editor_inputs
from helpers.pipeline import generate
from helpers.settings import LCM_RECIPE
from helpers.sizes import parse_size
from helpers.variants import PARTS, Variant, VariantNotReadyError, available_variants, finish_variant, variant_dir

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it (Playwright's own download can't run here)


@pytest.fixture(scope="module")
def demo_url(model_root, tiny_compressed):
    demo = launch_demo(build_demo("tiny", "CPU", root=model_root), block=False)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def backend(model_root, tiny_compressed) -> DemoBackend:
    """The demo's backend over tiny's variants, its pipelines compiled once for the tests that draw with it."""
    return DemoBackend("tiny", "CPU", root=model_root)


def test_variants_on_disk_fp16_first(model_root, tiny_compressed):
    assert [variant.name for variant in available_variants("tiny", root=model_root)] == ["FP16", "INT8", "INT4-T5", "W8A8"]


def test_no_variant_says_run_notebook_1(tmp_path):
    with pytest.raises(VariantNotReadyError, match="run notebook 1"):
        available_variants("tiny", root=tmp_path)


def test_a_variant_folder_is_read_once_from_the_demo_to_the_pipeline(model_root, tiny_compressed, monkeypatch):
    reads = Counter()
    read_index = variants.read_index
    monkeypatch.setattr(variants, "read_index", lambda folder: reads.update([Path(folder).name]) or read_index(folder))
    backend = DemoBackend("tiny", "CPU", root=model_root)
    backend.pipeline("INT8")
    assert set(reads) == set(backend.variants) and set(reads.values()) == {1}, reads


@pytest.mark.parametrize(
    "prompt, seed, steps, message",
    [
        ("a" * 4001, 1, 2, "prompt is 4001 characters, more than the 4000 allowed"),
        ("a red circle", 2**64, 2, "seed=18446744073709551616 is not allowed"),
        ("a red circle", 1, 101, "num_inference_steps=101 is more than the 100 allowed"),
    ],
    ids=["prompt", "seed", "steps"],
)
def test_the_images_api_limits_hold_in_the_demo(backend, prompt, seed, steps, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        backend.generate(prompt, "", seed, steps, 0.0, "1024×1024", "INT8")
    with pytest.raises(ValueError, match=re.escape(message)):
        backend.edit(prompt, seed, steps, 0.0, Image.new("RGB", (256, 256)), None, 0.5, "INT8")


def test_sizes_are_the_aspect_ratio_bins(tiny_variant):
    sizes = Variant.load(tiny_variant).sizes
    assert sizes[0] == "1024×1024" and "1344×768" in sizes and "768×1344" in sizes
    assert parse_size("1344x768", sizes) == (768, 1344)
    with pytest.raises(ValueError, match="can't make '1000×1000'.*1024×1024"):
        parse_size("1000×1000", sizes)


def test_backend_follows_the_checkpoint_recipe(backend, monkeypatch):
    assert backend.recipe == LCM_RECIPE
    steps = []
    # a clock that reads the steps done: the seconds span the whole call, from before the first step to after the last
    monkeypatch.setattr("helpers.demo.time", SimpleNamespace(perf_counter=lambda: float(len(steps))))
    image, seconds, cache = backend.generate("a red circle", "", 1, 2, 0.0, "768×1344", "INT8", on_step=lambda done, total: steps.append((done, total)))
    assert image.size == (768, 1344) and seconds == 2 and cache == "2 steps"  # no step cache: no steps reused
    assert steps == [(1, 2), (2, 2)]
    image, _, cache = backend.generate("a red circle", "", 1, 6, 0.0, "768×1344", "INT8", step_cache=0.3)
    assert image.size == (768, 1344) and re.fullmatch(r"6 steps \((\d) computed, (\d) reused\)", cache)
    assert sum(int(n) for n in re.findall(r"\d", cache)[1:]) == 6
    with pytest.raises(ValueError, match="Unknown variant 'INT3'"):
        backend.generate("a red circle", "", 1, 2, 0.0, "1024×1024", "INT3")


def test_the_adapter_list_and_strength_switch_without_compiling(tmp_path, tiny_variant, tiny_adapter):
    (tmp_path / "tiny" / "lora").mkdir(parents=True)
    (tmp_path / "tiny" / "FP16").symlink_to(tiny_variant)
    (tmp_path / "tiny" / "lora" / "random").symlink_to(tiny_adapter)  # a model's adapters: model/<model>/lora/
    backend = DemoBackend("tiny", "CPU", root=tmp_path)
    assert list(backend.loras) == ["random"]
    draw = lambda **lora: backend.generate("a red circle", "", 1, 2, 0.0, "1024×1024", "FP16", **lora)[0].tobytes()  # noqa: E731
    base = draw()
    compiled = backend.pipeline("FP16").transformer.compile_count
    assert draw(lora="random", lora_strength=1.0) != base and draw(lora="random", lora_strength=0.0) == base
    assert draw() == base and backend.pipeline("FP16").transformer.compile_count == compiled
    with pytest.raises(ValueError, match="Unknown LoRA 'other': choose one of none, random"):
        draw(lora="other")


def test_the_editors_painted_layer_is_the_mask_and_strength_picks_the_steps(backend):
    picture = Image.new("RGBA", (1001, 750), (0, 0, 255, 255))  # a photo's odd size: cut to multiples of 8
    layer = Image.new("RGBA", picture.size)
    layer.paste((255, 255, 255, 255), (500, 400, 700, 600))  # the brush's white, opaque where painted
    image, mask = editor_inputs({"background": picture, "layers": [layer], "composite": None}, max_side=2048)
    assert image.mode == "RGB" and image.size == mask.size == (1000, 744)
    painted = np.asarray(mask) == 255
    assert painted[450, 600] and not painted[100, 100] and 0.04 < painted.mean() < 0.06
    assert editor_inputs({"background": picture, "layers": [Image.new("RGBA", picture.size)]}, 2048)[1] is None  # nothing painted
    assert editor_inputs({"background": Image.new("RGB", (4096, 1024)), "layers": []}, 2048)[0].size == (2048, 512)
    with pytest.raises(ValueError, match="No picture to edit: upload one"):
        editor_inputs({"background": None, "layers": []}, 2048)
    steps = []
    edited, _, summary = backend.edit(
        "a red circle", 1, 4, 0.0, image.resize((256, 184)), mask.resize((256, 184)), 0.5, "INT8",
        on_step=lambda done, total: steps.append((done, total)))
    assert edited.size == (256, 184) and summary == "2 steps" and steps == [(1, 2), (2, 2)]


def test_the_handler_yields_a_preview_a_step_then_the_picture_a_plain_call_draws(backend):
    import gradio as gr

    handler, bar = request_handler(backend), []
    *previews, (image, info, seed) = handler("a red circle", "", 3, False, 6, 0.0, "1024×1024", "INT8",
                                             progress=lambda done, desc: bar.append((done, desc)))
    assert len(previews) == 5  # a preview after each step but the last, whose picture is the result
    assert bar[0] == (0, "Encoding the prompt") and [done for done, _ in bar[1:]] == [step / 6 for step in range(1, 6)]
    assert bar[1][1] == "Denoising step 2/6" and bar[-1][1] == "Denoising step 6/6, then the decode"  # what runs now
    assert all(picture.size == (1024, 1024) and rest == [gr.skip(), gr.skip()] for picture, *rest in previews)
    assert len({picture.tobytes() for picture, *_ in previews}) == 5  # each step's own latents
    plain, _ = generate(backend.pipeline("INT8"), "a red circle", seed=3, num_inference_steps=6, guidance_scale=0.0,
                        height=1024, width=1024)
    assert image.tobytes() == plain.tobytes() and seed == 3 and info.endswith("· 6 steps")  # previews change nothing


def test_a_draft_decodes_with_the_tiny_vae_for_its_request_only(backend):
    import gradio as gr

    handler = request_handler(backend)
    draw = lambda prompt="a red circle", draft=False: list(handler(prompt, "", 3, False, 2, 0.0, "1024×1024", "INT8", draft=draft))[-1]  # noqa: E731
    full, _, _ = draw()
    drafted, info, _ = draw(draft=True)
    assert drafted.size == full.size and drafted.tobytes() != full.tobytes() and info.endswith("· draft decode (tiny VAE)")
    assert backend.pipeline("INT8").decoder == "full"
    with pytest.raises(gr.Error, match="A prompt is empty"):  # the call fails after the switch: still switched back
        draw("   ", draft=True)
    assert backend.pipeline("INT8").decoder == "full"


def test_a_draft_without_a_tiny_decoder_says_what_adds_one(tmp_path, tiny_source, tiny_variant):
    import gradio as gr

    folder = variant_dir("tiny", "FP16", root=tmp_path)  # a folder converted before tiny decoders: the parts to draw alone
    for part in PARTS:
        shutil.copytree(tiny_variant / part, folder / part)
    finish_variant(tiny_source, folder, {"variant": "FP16", "source": str(tiny_source)}, show_progress=False)
    handler = request_handler(DemoBackend("tiny", "CPU", root=tmp_path))
    with pytest.raises(gr.Error, match=r"has no tiny VAE decoder \(vae_tiny_decoder/\).*decoder='full'"):
        list(handler("a red circle", "", 1, False, 2, 0.0, "1024×1024", "FP16", draft=True))


def loaded_size(image) -> list[int]:
    """A result's own picture (served as a file: Gradio's icons are data: SVGs), once loaded: its size."""
    from playwright.sync_api import expect

    expect(image).to_have_attribute("src", re.compile(r"/gradio_api/file="), timeout=60_000)
    image.scroll_into_view_if_needed()  # the image loads lazily
    image.page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=30_000)
    return image.evaluate("img => [img.naturalWidth, img.naturalHeight]")


@contextlib.contextmanager
def browser_page(url: str):
    """A page of Debian's chromium at ``url``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.goto(url)
        yield page
        browser.close()


def test_browser_generates_edits_and_shows_errors(demo_url, tmp_path):
    from playwright.sync_api import expect

    with browser_page(demo_url) as page:
        page.get_by_label("Prompt", exact=True).fill("A small cactus with a happy face in the Sahara desert.")
        page.get_by_role("button", name="Generate").click()
        # the info line comes with the final picture (the previews before it leave it as it was)
        expect(page.locator("#info textarea")).to_have_value(re.compile(r"s · W8A8 · seed 42 · 1024×1024 · \d+ steps$"), timeout=60_000)
        assert loaded_size(page.locator("#result img")) == [1024, 1024]

        page.get_by_label("Prompt", exact=True).fill("   ")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text("A prompt is empty").first).to_be_visible(timeout=30_000)
        assert "Traceback" not in page.content()
        edit_where_the_brush_paints(page, tmp_path / "picture.png")


# Every picture the result image shows, in order: the previews, then the final one (an <img> replaced or its src changed).
RECORD_RESULT_SOURCES = """() => {
    window.resultSources = [];
    const record = () => {
        const src = document.querySelector('#result img')?.getAttribute('src') ?? '';
        if (src.includes('/gradio_api/file=') && window.resultSources.at(-1) !== src) window.resultSources.push(src);
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def test_browser_shows_the_picture_forming(demo_url):
    from playwright.sync_api import expect

    with browser_page(demo_url) as page:
        page.get_by_label("Prompt", exact=True).fill("a red circle")
        steps = page.get_by_label("number input for Steps")
        steps.fill("6")
        steps.press("Enter")
        page.evaluate(RECORD_RESULT_SOURCES)
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#info textarea")).to_have_value(re.compile(r"· 6 steps$"), timeout=60_000)
        sources = page.evaluate("window.resultSources")
        print(f"{len(sources)} pictures shown")
        assert sources[-1] == page.locator("#result img").get_attribute("src")  # the final picture, shown last
        assert len(set(sources[:-1])) >= 2, sources  # previews before it: the picture formed in the page


def edit_where_the_brush_paints(page, picture: Path) -> None:
    """The edit tab: a picture uploaded, one stroke of the brush (the tool selected at first), then Edit."""
    from playwright.sync_api import expect

    Image.new("RGB", (256, 256), (0, 0, 255)).save(picture)
    page.get_by_role("tab", name="Edit").click()
    page.get_by_label("Edit prompt").fill("a red circle")
    page.locator("#editor input[type=file]").set_input_files(picture)
    expect(page.get_by_role("button", name="Undo")).to_be_enabled()  # the picture is on the canvas (undoable)
    canvas = page.locator("#editor canvas").first
    canvas.scroll_into_view_if_needed()  # the mouse paints where the canvas is on the screen
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 20, y + 10, steps=5)
    page.mouse.up()
    page.get_by_role("button", name="Edit", exact=True).click()
    info = page.locator("#edit-info textarea")
    expect(info).to_have_value(re.compile(r"s · W8A8 · seed 42 · 256×256 · inpainting \d+% of the picture at strength 0.8 · 3 steps$"),
                               timeout=60_000)
    assert loaded_size(page.locator("#edited img")) == [256, 256]  # the picture's own size
    assert " 0% of" not in info.input_value()  # the stroke is the mask


@pytest.mark.parametrize(
    "steps,guidance,size,message",
    [
        # Gradio refuses a value outside a slider's range itself, before the app sees it
        (0, 0.0, "1024×1024", "Value 0 is less than minimum value 1."),
        (2, -1.0, "1024×1024", "Value -1.0 is less than minimum value 0.0."),
        (2, 0.0, "4096×4096", "The model can't make '4096×4096': pick one of its sizes"),
        (2, 0.0, "", "The model can't make '': pick one of its sizes"),
    ],
)
def test_bad_input_through_the_api_gets_the_message(demo_url, steps, guidance, size, message):
    from gradio_client import Client

    client = Client(demo_url, verbose=False)
    with pytest.raises(Exception, match=re.escape(message)):
        client.predict("a red circle", "", 1, False, steps, guidance, size, "INT8", 0.0, api_name="/generate")


def test_eight_concurrent_requests_all_answered(demo_url):
    from gradio_client import Client

    client = Client(demo_url, verbose=False)
    start = time.perf_counter()
    # every other request with the step cache on: the one compiled pipeline switches between the two ways
    jobs = [client.submit(f"a shape number {i}", "", i, False, 4, 0.0, "1024×1024", "INT8", 0.2 * (i % 2), api_name="/generate") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: job.result(timeout=300), jobs))
    print(f"8 concurrent requests answered in {time.perf_counter() - start:.1f} s")
    assert sorted(seed for _, _, seed in results) == list(range(8))  # every request answered once, none lost
    for path, info, seed in results:
        assert Image.open(path).size == (1024, 1024)
        assert f"seed {seed}" in info
        assert ("reused" in info) == (seed % 2 == 1), info
