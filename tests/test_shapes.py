"""Shapes: captions round-trip, pictures are read back exactly, scores catch every wrong attribute, datasets load."""

import csv
import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageFilter

from helpers.settings import DEFAULT_MODEL_ID, EXAMPLE_PROMPTS, MODEL_ROOT, example_prompts
from helpers.shapes import (
    ATTRIBUTES,
    COLORS,
    POSITIONS,
    SHAPES,
    Scene,
    alignment_score,
    all_scenes,
    evaluation_scenes,
    load_captioned_images,
    make_dataset,
    read_scene,
    render,
    score_image,
)

ALLOWED = {"shape": SHAPES, "color": tuple(COLORS), "position": tuple(POSITIONS), "background": tuple(COLORS)}


def generated_look(image: Image.Image, rng: np.random.Generator, noise: float = 10.0) -> Image.Image:
    """Soft edges and pixel noise, roughly like a generated picture."""
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=float)
    pixels = pixels + rng.normal(0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_all_scenes_and_caption_round_trip():
    scenes = all_scenes()
    assert len(scenes) == len(set(scenes)) == 3 * 8 * 5 * 7
    for scene in scenes:
        assert Scene.from_caption(scene.caption) == scene


def test_caption_text():
    assert (
        Scene("circle", "red", "top left", "blue").caption
        == "a red circle at the top left on a blue background"
    )
    assert Scene("circle", "red", "center", "blue").caption == "a red circle in the center on a blue background"
    assert Scene("square", "orange", "center", "black").caption.startswith("an orange square")


def test_from_caption_tolerates_case_and_spacing():
    scene = Scene.from_caption("  A Red   CIRCLE at the Top  Left\non a blue background ")
    assert scene == Scene("circle", "red", "top left", "blue")


@pytest.mark.parametrize(
    "text",
    [
        "a red circle",
        "a red circle at the middle on a blue background",
        "a red circle at the center on a blue background",
        "two red circles at the top left on a blue background",
        "",
    ],
)
def test_bad_captions_name_the_expected_form(text):
    with pytest.raises(ValueError, match="not of the form"):
        Scene.from_caption(text)


def test_caption_with_unknown_value_names_the_field():
    with pytest.raises(ValueError, match="Unknown shape 'hexagon'.*circle, square, triangle"):
        Scene.from_caption("a red hexagon at the top left on a blue background")
    with pytest.raises(ValueError, match="Unknown color 'pink'"):
        Scene.from_caption("a pink circle at the top left on a blue background")


@pytest.mark.parametrize(
    "fields, message",
    [
        (("star", "red", "center", "blue"), "Unknown shape 'star'"),
        (("circle", "teal", "center", "blue"), "Unknown color 'teal'.*red, orange"),
        (("circle", "red", "middle", "blue"), "Unknown position 'middle'.*top left"),
        (("circle", "red", "center", "grey"), "Unknown background 'grey'"),
        (("circle", "red", "center", "red"), "invisible"),
    ],
)
def test_invalid_scenes_raise(fields, message):
    with pytest.raises(ValueError, match=message):
        Scene(*fields)


def test_render_is_exact_without_rng():
    scene = Scene("square", "green", "top left", "white")
    image = render(scene, 100, 100)
    assert image.mode == "RGB" and image.size == (100, 100)
    pixels = np.asarray(image)
    assert tuple(pixels[28, 28]) == COLORS["green"] and tuple(pixels[0, 0]) == COLORS["white"]
    assert tuple(pixels[72, 72]) == COLORS["white"]
    assert np.array_equal(pixels, np.asarray(render(scene, 100, 100)))


@pytest.mark.parametrize("size", [(128, 128), (192, 320)])
def test_rendered_scenes_are_read_back(size):
    rng = np.random.default_rng(7)
    for scene, _ in evaluation_scenes(40):
        image = generated_look(render(scene, *size, rng=rng), rng)
        assert read_scene(image) == dataclasses.asdict(scene), scene.caption


def test_blank_picture_has_no_shape():
    read = read_scene(Image.new("RGB", (64, 64), COLORS["blue"]))
    assert read == {"shape": "none", "color": "none", "position": "none", "background": "blue"}


def test_red_square_is_not_a_blue_circle():
    image = render(Scene("square", "red", "top left", "white"), 128, 128)
    asked = Scene.from_caption("a blue circle at the top left on a white background")
    scores = score_image(image, asked)
    assert scores == {"shape": False, "color": False, "position": True, "background": True, "all": False}
    assert alignment_score([image], [asked])["overall"] == 0.0


@pytest.mark.parametrize(
    "scene", [("triangle", "yellow", "bottom right", "purple"), ("circle", "black", "center", "orange")]
)
def test_changing_one_attribute_fails_only_that_attribute(scene):
    scene = Scene(*scene)
    image = render(scene, 128, 128)
    assert score_image(image, scene)["all"]
    for attribute in ATTRIBUTES:
        for value in ALLOWED[attribute]:
            try:
                changed = dataclasses.replace(scene, **{attribute: value})
            except ValueError:  # colour equal to background
                continue
            if changed == scene:
                continue
            scores = score_image(image, changed)
            assert not scores[attribute] and not scores["all"], changed.caption
            assert all(scores[other] for other in ATTRIBUTES if other != attribute), changed.caption


def test_alignment_score_fractions():
    scenes = [Scene("circle", "red", "top left", "blue"), Scene("square", "green", "center", "white")]
    images = [render(scene, 96, 96) for scene in scenes]
    wrong_shape = dataclasses.replace(scenes[0], shape="triangle")
    wrong_color_and_place = dataclasses.replace(scenes[1], color="black", position="top right")
    result = alignment_score(images * 2, scenes + [wrong_shape, wrong_color_and_place])
    assert result == {"shape": 0.75, "color": 0.75, "position": 0.75, "background": 1.0, "overall": 0.5}
    with pytest.raises(ValueError, match="2 images but 1 scenes"):
        alignment_score(images, scenes[:1])


def test_evaluation_scenes_cover_everything_and_are_fixed():
    pairs = evaluation_scenes()
    assert len(pairs) >= 64
    assert pairs == evaluation_scenes()
    assert pairs != evaluation_scenes(seed=1)
    scenes = [scene for scene, _ in pairs]
    assert len(set(scenes)) == len(scenes)
    for attribute, values in ALLOWED.items():
        assert {getattr(scene, attribute) for scene in scenes} == set(values), attribute
    assert all(isinstance(seed, int) for _, seed in pairs)
    assert len(evaluation_scenes(8)) == 8
    with pytest.raises(ValueError, match="count must be"):
        evaluation_scenes(3)


def test_make_dataset_layout(tmp_path):
    folder = make_dataset(tmp_path / "shapes", 6, seed=3, width=64, height=64)
    with open(folder / "img_txt.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["dir", "text"] and len(rows) == 6
    assert [row["dir"] for row in rows] == [f"images/{i:05d}.png" for i in range(6)]
    for row in rows:
        image = Image.open(folder / row["dir"])
        assert image.size == (64, 64)
        assert score_image(image, Scene.from_caption(row["text"]))["all"]
    assert [path.name for path in tmp_path.iterdir()] == ["shapes"]  # no temporary folder left behind


def test_make_dataset_reuses_or_rebuilds(tmp_path):
    folder = make_dataset(tmp_path / "shapes", 3, width=32, height=32)
    marker = folder / "images" / "marker"
    marker.touch()
    make_dataset(folder, 3, width=32, height=32)
    assert marker.exists()  # same row count: left unchanged
    make_dataset(folder, 4, width=32, height=32)
    assert not marker.exists() and len(list((folder / "images").iterdir())) == 4


def test_load_captioned_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = make_dataset(tmp_path / "shapes", 6, width=64, height=64)
    data = load_captioned_images(folder)
    assert len(data) == 6 and set(data.column_names) == {"image", "text"}
    assert isinstance(data.features["image"], datasets.Image)
    with open(folder / "img_txt.csv", newline="") as file:
        assert data["text"] == [row["text"] for row in csv.DictReader(file)]
    assert data[0]["image"].size == (64, 64)


def test_load_captioned_images_explains_a_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No img_txt.csv.*'dir'.*'text'"):
        load_captioned_images(tmp_path)
    (tmp_path / "img_txt.csv").write_text("file_name,caption\nimages/0.png,a red circle\n")
    with pytest.raises(ValueError, match="lacks column\\(s\\) dir, text"):
        load_captioned_images(tmp_path)


def test_the_shapes_model_is_shown_captions_it_can_draw():
    prompts = example_prompts("shapes")
    assert prompts == example_prompts(str(MODEL_ROOT / "shapes" / "diffusers"))
    scenes = [Scene.from_caption(prompt) for prompt in prompts]  # raises on a caption of another form
    assert len({scene.shape for scene in scenes}) == 3 and len({scene.position for scene in scenes}) == 4
    assert example_prompts("tiny") == example_prompts(DEFAULT_MODEL_ID) == EXAMPLE_PROMPTS
