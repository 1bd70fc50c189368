"""Shapes: captioned pictures of one flat shape on a flat background, and a scorer that reads them back.

Captions map to pictures (``render``, ``make_dataset``) for fine-tuning data, and pictures map back to scenes
(``read_scene``) so a model's output can be scored against its prompt (``score_image``, ``alignment_score``)
without a second neural network.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.morphology import remove_small_holes

from .folders import atomic_folder

if TYPE_CHECKING:
    import datasets

SHAPES = ("circle", "square", "triangle")  # what the shipped model was trained on
NEW_SHAPES = ("star", "ring")  # concepts it never saw, taught by a LoRA (helpers.lora_training); the scorer reads them too
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 40),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (140, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
# Shape centre as fractions of (width, height).
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
ATTRIBUTES = ("shape", "color", "position", "background")
RING_WIDTH = 0.25  # of the ring's diameter: its hole is half the diameter, a quarter of the disc
SHAPE_SIZE = 0.36  # of min(width, height): circle diameter, square side, triangle and star box
CENTER_JITTER = 0.04  # of width / height, with an rng
SIZE_JITTER = 0.10  # relative, with an rng
PINHOLE = 0.05  # of a blob's filled area: smaller holes are noise and filled, a ring's hole (a quarter) is kept
CSV_NAME = "img_txt.csv"
NONE = "none"

_ALLOWED = {"shape": SHAPES, "color": tuple(COLORS), "position": tuple(POSITIONS), "background": tuple(COLORS)}
_CAPTION_FORM = (
    "a <color> <shape> at the <top left|top right|bottom left|bottom right> (or: in the center) on a <color> background"
)
_CAPTION_RE = re.compile(
    r"an? (?P<color>[a-z]+) (?P<shape>[a-z]+) "
    r"(?:at the (?P<position>top left|top right|bottom left|bottom right)|in the (?P<center>center)) "
    r"on an? (?P<background>[a-z]+) background\.?"
)


def _article(word: str) -> str:
    """'an' before a vowel ("an orange circle"), so captions read as plain English to the text encoder."""
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Scene:
    """One shape of one colour at one position on a background of another colour."""

    shape: str
    color: str
    position: str
    background: str

    known_shapes: ClassVar[tuple[str, ...]] = SHAPES  # the base model's words: a star is a ConceptScene

    def __post_init__(self) -> None:
        allowed = {**_ALLOWED, "shape": self.known_shapes}
        for field in ATTRIBUTES:
            value = getattr(self, field)
            if value not in allowed[field]:
                raise ValueError(f"Unknown {field} {value!r}; expected one of: {', '.join(allowed[field])}.")
        if self.color == self.background:
            raise ValueError(f"Shape colour and background are both {self.color!r}: the shape would be invisible.")

    @property
    def caption(self) -> str:
        """E.g. "a red circle at the top left on a blue background"."""
        where = "in the center" if self.position == "center" else f"at the {self.position}"
        return (
            f"{_article(self.color)} {self.color} {self.shape} {where} "
            f"on {_article(self.background)} {self.background} background"
        )

    @classmethod
    def from_caption(cls, text: str) -> Scene:
        """Parse a caption of the ``caption`` form (any case and spacing) back into a scene."""
        normal = " ".join(str(text).lower().split())
        match = _CAPTION_RE.fullmatch(normal)
        if match is None:
            raise ValueError(f"Caption {text!r} is not of the form {_CAPTION_FORM!r}.")
        return cls(
            shape=match["shape"],
            color=match["color"],
            position=match["position"] or match["center"],
            background=match["background"],
        )


@dataclass(frozen=True)
class ConceptScene(Scene):
    """A scene whose shape may also be a new concept (``NEW_SHAPES``): a LoRA's data and evaluation."""

    known_shapes: ClassVar[tuple[str, ...]] = SHAPES + NEW_SHAPES


def _scene_class(shapes: Sequence[str]) -> type[Scene]:
    """``Scene`` for the base shapes, ``ConceptScene`` as soon as a new one is among them."""
    return Scene if set(shapes) <= set(SHAPES) else ConceptScene


def all_scenes(shapes: Sequence[str] = SHAPES) -> list[Scene]:
    """Every valid scene of ``shapes`` (background differs from the shape colour): 3 × 8 × 5 × 7 = 840 for the base."""
    kind = _scene_class(shapes)
    return [
        kind(shape, color, position, background)
        for shape, color, position, background in itertools.product(shapes, COLORS, POSITIONS, COLORS)
        if color != background
    ]


# ---------------------------------------------------------------- drawing


def _unit_star(points: int = 5) -> list[tuple[float, float]]:
    """A regular star pointing up, outer and inner corners alternating, stretched to fill the unit box."""
    inner = math.cos(2 * math.pi / points) / math.cos(math.pi / points)  # the radius at which its edges line up
    corners = [
        ((1 if i % 2 == 0 else inner) * math.cos(angle), (1 if i % 2 == 0 else inner) * math.sin(angle))
        for i, angle in enumerate(-math.pi / 2 + math.pi * i / points for i in range(2 * points))
    ]
    xs, ys = zip(*corners)
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in corners]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    """One flat filled shape inside ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "ring":  # a circle with a hole half its diameter
        draw.ellipse(box, outline=fill, width=max(1, round((right - left) * RING_WIDTH)))
    elif shape == "star":  # five points, one up, its tips touching the box's sides
        draw.polygon([(left + x * (right - left), top + y * (bottom - top)) for x, y in _unit_star()], fill=fill)
    else:  # triangle pointing up, apex at the top middle, base along the bottom of the box
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)


def _shape_box(
    scene: Scene, width: int, height: int, rng: np.random.Generator | None
) -> tuple[float, float, float, float]:
    """The box the shape is drawn in: its size and centre, jittered when ``rng`` is given."""
    fx, fy = POSITIONS[scene.position]
    cx, cy, size = fx * width, fy * height, SHAPE_SIZE * min(width, height)
    if rng is not None:
        cx += rng.uniform(-CENTER_JITTER, CENTER_JITTER) * width
        cy += rng.uniform(-CENTER_JITTER, CENTER_JITTER) * height
        size *= 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
    half = size / 2
    return (cx - half, cy - half, cx + half, cy + half)


def render(scene: Scene, width: int = 256, height: int = 256, rng: np.random.Generator | None = None) -> Image.Image:
    """The scene as an RGB picture; with ``rng`` the shape's centre and size vary a little (data variety)."""
    image = Image.new("RGB", (width, height), COLORS[scene.background])
    _draw_shape(ImageDraw.Draw(image), scene.shape, _shape_box(scene, width, height, rng), COLORS[scene.color])
    return image


def _shape_template(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean mask of the ideal shape filling a ``width`` × ``height`` box."""
    mask = Image.new("L", (width, height), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, (0, 0, width - 1, height - 1), 255)
    return np.asarray(mask) > 0


# ---------------------------------------------------------------- dataset


def _csv_rows(csv_path: Path) -> int:
    """Number of data rows in a dataset csv."""
    with open(csv_path, newline="") as file:
        return max(sum(1 for _ in csv.reader(file)) - 1, 0)


def make_dataset(
    folder: Path, count: int, seed: int = 0, width: int = 256, height: int = 256, shapes: Sequence[str] = SHAPES
) -> Path:
    """Write ``count`` random captioned pictures of ``shapes`` as ``folder/images/NNNNN.png`` and ``folder/img_txt.csv``.

    An existing dataset with ``count`` rows is returned unchanged (whatever its shapes); any other is rebuilt. The files are written into
    a temporary sibling folder that is renamed at the end, so a killed run never leaves a finished-looking dataset.
    """
    folder = Path(folder)
    if (folder / CSV_NAME).is_file() and _csv_rows(folder / CSV_NAME) == count:
        return folder
    rng = np.random.default_rng(seed)
    scenes = all_scenes(shapes)
    with atomic_folder(folder) as tmp:
        (tmp / "images").mkdir()
        with open(tmp / CSV_NAME, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["dir", "text"])
            for index in range(count):
                scene = scenes[rng.integers(len(scenes))]
                name = f"images/{index:05d}.png"
                render(scene, width, height, rng).save(tmp / name)
                writer.writerow([name, scene.caption])
    return folder


def _check_dataset_csv(csv_path: Path) -> None:
    """A clear error when the csv is missing or lacks the ``dir`` and ``text`` columns."""
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"No {CSV_NAME} in {csv_path.parent}: expected a csv with columns 'dir' (image path relative to the "
            f"csv's folder) and 'text' (caption), e.g. made by make_dataset()."
        )
    with open(csv_path, newline="") as file:
        header = next(csv.reader(file), [])
    missing = [column for column in ("dir", "text") if column not in header]
    if missing:
        raise ValueError(f"{csv_path} lacks column(s) {', '.join(missing)}; it has: {', '.join(header) or 'none'}.")


def load_captioned_images(folder: Path) -> datasets.Dataset:
    """Load a folder of ``img_txt.csv`` + images as a ``datasets.Dataset`` with columns ``image`` and ``text``.

    Any folder in that layout loads the same way, so a user's own pictures can replace the generated ones.
    """
    folder = Path(folder).resolve()
    csv_path = folder / CSV_NAME
    _check_dataset_csv(csv_path)
    try:
        import datasets
    except ImportError as error:  # optional: only fine-tuning needs it
        raise ImportError("load_captioned_images needs the 'datasets' package: pip install datasets") from error
    data = datasets.load_dataset("csv", data_files=str(csv_path), split="train")
    data = data.map(lambda row: {"image": str(folder / row["dir"])}, remove_columns=["dir"])
    return data.cast_column("image", datasets.Image())


# ---------------------------------------------------------------- scorer


def _nearest(value: np.ndarray, table: dict[str, tuple[float, ...]]) -> str:
    """Name of the table entry closest (Euclidean) to ``value``."""
    return min(table, key=lambda name: float(np.linalg.norm(np.asarray(table[name], dtype=float) - value)))


def _border_pixels(pixels: np.ndarray, fraction: float = 0.04) -> np.ndarray:
    """The pixels of a frame ``fraction`` of the size wide around the picture, as an (N, 3) array."""
    height, width = pixels.shape[:2]
    band = max(1, round(fraction * min(width, height)))
    frame = np.ones((height, width), dtype=bool)
    frame[band:-band, band:-band] = False
    return pixels[frame]


def _shape_mask(pixels: np.ndarray, background: np.ndarray, background_name: str) -> np.ndarray:
    """The largest blob of pixels far from the background colour (speckles, noise and pinholes dropped; a ring's
    hole kept)."""
    # Half the gap to the closest other named colour: any shape colour is beyond it, pixel noise stays below it.
    reference = np.asarray(COLORS[background_name], dtype=float)
    gap = min(
        np.linalg.norm(np.asarray(rgb, dtype=float) - reference)
        for name, rgb in COLORS.items()
        if name != background_name
    )
    # Averaging over 3 × 3 first: noise that straddles the threshold would otherwise fray the edges and the box.
    far = ndimage.uniform_filter(np.linalg.norm(pixels - background, axis=-1), size=3) > gap / 2
    far = ndimage.binary_opening(far, structure=np.ones((3, 3), dtype=bool))  # cuts hairline bridges to speckles
    labels, count = ndimage.label(far)
    if count == 0:
        return far
    sizes = ndimage.sum(far, labels, index=range(1, count + 1))
    blob = labels == 1 + int(np.argmax(sizes))
    return remove_small_holes(blob, max_size=int(PINHOLE * ndimage.binary_fill_holes(blob).sum()))


def _read_shape(mask: np.ndarray) -> tuple[str, tuple[float, float]]:
    """The shape whose ideal template best overlaps (IoU) the mask in its bounding box, and that box's centre."""
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop = mask[top:bottom, left:right]

    def iou(shape: str) -> float:
        template = _shape_template(shape, right - left, bottom - top)
        return float((crop & template).sum() / max((crop | template).sum(), 1))

    # The box centre, not the centroid: a triangle's centroid sits a sixth of its height below where it was placed.
    return max(SHAPES + NEW_SHAPES, key=iou), ((left + right) / 2, (top + bottom) / 2)


def read_scene(image: Image.Image, min_area: float = 0.005) -> dict[str, str]:
    """Read shape, colour, position and background back from a picture (any size, noise tolerated).

    Shape, colour and position are ``"none"`` when no blob of at least ``min_area`` of the picture stands out.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    height, width = pixels.shape[:2]
    background = np.median(_border_pixels(pixels), axis=0)
    background_name = _nearest(background, COLORS)
    mask = _shape_mask(pixels, background, background_name)
    if mask.sum() < min_area * width * height:
        return {"shape": NONE, "color": NONE, "position": NONE, "background": background_name}
    shape, (x, y) = _read_shape(mask)
    return {
        "shape": shape,
        "color": _nearest(np.median(pixels[mask], axis=0), COLORS),
        "position": _nearest(np.array([x / width, y / height]), POSITIONS),
        "background": background_name,
    }


def score_image(image: Image.Image, scene: Scene) -> dict[str, bool]:
    """Per attribute, whether the picture shows what the scene asks for; ``"all"`` when all four do."""
    seen = read_scene(image)
    scores = {attribute: seen[attribute] == getattr(scene, attribute) for attribute in ATTRIBUTES}
    scores["all"] = all(scores.values())
    return scores


def alignment_score(images: Sequence[Image.Image], scenes: Sequence[Scene]) -> dict[str, float]:
    """Fraction of pictures right per attribute, and ``"overall"``: the fraction with all four right."""
    if len(images) != len(scenes):
        raise ValueError(f"Got {len(images)} images but {len(scenes)} scenes; they must pair up.")
    if not images:
        raise ValueError("No images to score.")
    scores = [score_image(image, scene) for image, scene in zip(images, scenes)]
    result = {attribute: float(np.mean([s[attribute] for s in scores])) for attribute in ATTRIBUTES}
    result["overall"] = float(np.mean([s["all"] for s in scores]))
    return result


def evaluation_scenes(count: int = 64, seed: int = 1234) -> list[tuple[Scene, int]]:
    """A fixed evaluation set of ``count`` distinct (scene, seed) pairs covering every value of every attribute.

    The first pairs cycle through the attribute lists together (so coverage is guaranteed), the rest are drawn
    at random; the same arguments always give the same list.
    """
    return _covering_scenes(SHAPES, count, seed)


def concept_scenes(concept: str, count: int = 32, seed: int = 1234) -> list[tuple[Scene, int]]:
    """``evaluation_scenes`` of a new shape (``NEW_SHAPES``): every colour, position and background, its shape only."""
    if concept not in NEW_SHAPES:
        raise ValueError(f"Unknown concept {concept!r}; expected one of: {', '.join(NEW_SHAPES)}.")
    return _covering_scenes((concept,), count, seed)


def _covering_scenes(shapes: Sequence[str], count: int, seed: int) -> list[tuple[Scene, int]]:
    """``count`` distinct (scene, seed) pairs of ``shapes``: first cycling through every attribute, then at random."""
    colors, positions, scenes, kind = list(COLORS), list(POSITIONS), all_scenes(shapes), _scene_class(shapes)
    cover = max(len(shapes), len(colors), len(positions))
    if not cover <= count <= len(scenes):
        raise ValueError(f"count must be between {cover} (to cover every value) and {len(scenes)}, got {count}.")
    # Background offset by half the palette: never the shape colour, and every colour is a background once.
    chosen = [
        kind(
            shapes[i % len(shapes)],
            colors[i % len(colors)],
            positions[i % len(positions)],
            colors[(i + len(colors) // 2) % len(colors)],
        )
        for i in range(cover)
    ]
    rng = np.random.default_rng(seed)
    rest = [scene for scene in scenes if scene not in chosen]
    chosen += [rest[i] for i in rng.permutation(len(rest))[: count - cover]]
    for attribute in ATTRIBUTES:
        expected = set(shapes) if attribute == "shape" else set(_ALLOWED[attribute])
        if {getattr(scene, attribute) for scene in chosen} != expected:
            raise RuntimeError(f"Evaluation scenes miss some {attribute} values.")  # guards the cycling above
    return [(scene, int(s)) for scene, s in zip(chosen, rng.integers(0, 2**31 - 1, size=len(chosen)))]
