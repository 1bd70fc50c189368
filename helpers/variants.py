"""The variant folder, the one contract between stages: its format and its index, read and checked here, and
finished here (its parts are made by ``helpers.part_writing``, for conversion and compression).

``model/<model-name>/<VARIANT>/`` holds ``text_encoder/``, ``transformer/``, ``vae_decoder/``, ``vae_encoder/`` (edits),
``vae_tiny_decoder/`` (drafts, previews; a model with a tiny VAE), an IR each with its ``config.json``; ``tokenizer/``, ``scheduler/`` and
``model_index.json``. The index is written last: a folder without it is unfinished. It records the folder format's
version (a folder of another version is refused, with the command that makes it again) and every other file's size
and SHA-256, so a folder damaged on its way to another machine is named as such when it is loaded (sizes, cheap) or
verified (checksums), instead of failing inside OpenVINO.

Writing: :func:`link_part` (a part of another folder, linked) and :func:`finish_variant` (the index, last). Reading:
:meth:`Variant.load`, which checks the folder and reads its index once; every stage, the demo, the CLI and the
benchmarks ask that object (parts, pipeline class, sampling recipe, sizes, compression, records).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from .folders import atomic_folder, write_text_atomically
from .schemes import COMPRESSION_SCHEMES
from .settings import MODEL_INDEX, MODEL_ROOT, SamplingRecipe, model_name, recipe_for
from .sizes import native_size, size_choices, wide_size

PARTS = ("text_encoder", "transformer", "vae_decoder")  # what a folder needs to draw
VAE_ENCODER = "vae_encoder"  # what edits need too (image-to-image, inpainting); folders made before it lack it
TINY_VAE_DECODER = "vae_tiny_decoder"  # the draft decoder and previews (a TAESD), where the model has one
MADE_PARTS = (*PARTS, VAE_ENCODER, TINY_VAE_DECODER)  # what conversion and compression make
IR_NAME = "openvino_model.xml"
# The index's version of the folder format: raised when a folder of the previous one can't be read as it is.
FORMAT_VERSION = 1
VARIANT_CLASS = "OVPixArtPipeline"  # the index's ``_class_name``; a diffusers folder's names its diffusers pipeline
# FP16 is converted (notebook 1), the others are compressed from it (notebook 3) with their scheme.
VARIANTS = ("FP16", *COMPRESSION_SCHEMES)
# Opt-in: a variant named after its base variant (``W8A8-ToDo``: W8A8), whose folder is the base's parts (linked) plus
# DOWNSAMPLED_PART, the transformer with token downsampling (``helpers.token_downsampling``) for the first steps.
DOWNSAMPLED_SUFFIX = "-ToDo"
DOWNSAMPLED_VARIANTS = ("FP16-ToDo", "W8A8-ToDo")
DOWNSAMPLED_PART = "downsampled_transformer"
COPIED = ("tokenizer", "scheduler")  # taken from the diffusers folder as they are


class VariantNotReadyError(FileNotFoundError):
    """A variant folder that is missing or unfinished; the message says which notebook or command makes it."""


class DamagedVariantError(VariantNotReadyError):
    """A finished variant folder whose files are not what was written: a copy cut short, a file edited or lost."""


class OutdatedVariantError(VariantNotReadyError):
    """A finished variant folder in another format than :data:`FORMAT_VERSION` (or none recorded): made again,
    not read."""


def variant_dir(model_id: str, variant: str = "FP16", root: Path = MODEL_ROOT) -> Path:
    """Where the variant folder of a model lives: ``model/<model-name>/<VARIANT>``; a variant name that is not a plain
    folder name (``../x``, ``a/b``) is refused, so no variant is read or written outside the model's folder."""
    if variant in ("", ".", "..") or Path(variant).name != variant or "\\" in variant:
        raise ValueError(f"The variant {variant!r} is not a folder name: give one of the model's variant folders "
                         f"({', '.join(VARIANTS)}, or a name of your own without '/').")
    return Path(root) / model_name(model_id) / variant


def how_to_make(folder: Path) -> str:
    """The notebook and the command that make a variant folder: compress for INT8, INT4-T5 and W8A8 (by the folder's
    name), convert for FP16 and any other folder."""
    folder = Path(folder)
    model, variant = folder.parent.name, folder.name
    if variant.endswith(DOWNSAMPLED_SUFFIX):
        return f"run notebook 8 (08-faster-across-steps) or `python -m helpers compress --model {model} --variant {variant}`"
    if variant in VARIANTS[1:]:
        return f"run notebook 3 (03-compress) or `python -m helpers compress --model {model} --variant {variant}`"
    return f"run notebook 1 (01-convert) or `python -m helpers convert --model {model}`"


def base_variant(variant: str) -> str:
    """The variant a downsampled one is made like (``W8A8-ToDo`` → ``W8A8``); other names as they are."""
    return variant.removesuffix(DOWNSAMPLED_SUFFIX)


def is_part_converted(folder: Path, part: str) -> bool:
    """True when ``folder/part`` holds an IR and its weights (parts are written in a temporary folder, then renamed)."""
    xml = ir_path(folder, part)
    return xml.is_file() and xml.with_suffix(".bin").is_file()


def present_parts(folder: Path) -> list[str]:
    """The parts a variant folder holds, of those conversion and compression make."""
    return [part for part in MADE_PARTS if is_part_converted(folder, part)]


def read_index(folder: Path) -> dict[str, Any]:
    """The ``model_index.json`` of a variant folder (an empty dict when there is none)."""
    path = Path(folder) / MODEL_INDEX
    return json.loads(path.read_text()) if path.is_file() else {}


def file_checksum(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def file_records(folder: Path, show_progress: bool = False) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file of a variant folder but its index, by path relative to the folder."""
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != MODEL_INDEX and not _is_temporary(f, folder))
    bar = tqdm(files, desc="checksums", unit="file", disable=not show_progress)
    return {f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": file_checksum(f)} for f in bar}


def _is_temporary(path: Path, folder: Path) -> bool:
    return any(name.startswith(".") for name in path.relative_to(folder).parts)


def damaged_files(folder: Path, checksums: bool = False) -> dict[str, str]:
    """What is wrong with each recorded file of a finished variant folder, by relative path (empty when intact).

    Sizes are compared always (cheap), checksums only when ``checksums`` is true (they read every byte).
    """
    return _damaged(Path(folder), read_index(folder).get("files", {}), checksums)


def _damaged(folder: Path, records: dict[str, dict[str, Any]], checksums: bool = False) -> dict[str, str]:
    problems = {}
    for name, record in tqdm(records.items(), desc="verify", unit="file", disable=not checksums):
        path = folder / name
        if not path.is_file():
            problems[name] = "is missing"
        elif path.stat().st_size != record["size"]:
            problems[name] = f"has {path.stat().st_size:,} bytes where {record['size']:,} were written (a copy cut short?)"
        elif checksums and file_checksum(path) != record["sha256"]:
            problems[name] = "has other contents than were written (its SHA-256 differs)"
    return problems


def damage_message(folder: Path, problems: dict[str, str]) -> str:
    """One line naming the damaged files of a variant folder and the fix."""
    listed = "; ".join(f"{folder / name} {problem}" for name, problem in problems.items())
    return f"The model at {folder} is damaged: {listed}. Copy the folder again, or {how_to_make(folder)} (it remakes what is damaged)."


def is_outdated(index: dict[str, Any]) -> bool:
    """True for the index of a finished folder in another folder format than this code reads (or none recorded)."""
    return index.get("format_version") != FORMAT_VERSION


def outdated_message(folder: Path, index: dict[str, Any]) -> str:
    """One line saying that a variant folder was made by another version of this project, and the command that
    makes it again."""
    found = index.get("format_version", "none")
    return (f"The model at {folder} was made by another version of this project (folder format {found}; this one "
            f"reads {FORMAT_VERSION}): {how_to_make(folder)} to make it again.")


class Variant:
    """A finished, undamaged variant folder, its index read once: what the stages, the demo, the CLI and the
    benchmarks ask about a variant. :meth:`load` checks the folder; the rest reads what it holds (the part configs
    and the scheduler config, each once)."""

    def __init__(self, folder: Path, index: dict[str, Any]):
        self.folder, self.index = Path(folder), index
        self._configs: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, folder: Path) -> "Variant":
        """The variant in ``folder``; :class:`VariantNotReadyError` for a missing or unfinished folder,
        :class:`OutdatedVariantError` for one in another folder format and :class:`DamagedVariantError` when a
        recorded file is missing or has another size than was written (each names the fix)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise VariantNotReadyError(f"No converted model at {folder}: {how_to_make(folder)} first.")
        missing = [part for part in PARTS if not is_part_converted(folder, part)]
        if missing or not (folder / MODEL_INDEX).is_file():
            what = f"parts missing: {', '.join(missing)}" if missing else f"no {MODEL_INDEX}"
            raise VariantNotReadyError(f"The model at {folder} is incomplete ({what}): {how_to_make(folder)}.")
        index = read_index(folder)
        if is_outdated(index):
            raise OutdatedVariantError(outdated_message(folder, index))
        problems = _damaged(folder, index["files"])
        if problems:
            raise DamagedVariantError(damage_message(folder, problems))
        return cls(folder, index)

    @classmethod
    def of(cls, model_id: str, name: str = "FP16", root: Path = MODEL_ROOT) -> "Variant":
        """The variant ``name`` of a model, from ``model/<model-name>/<name>``."""
        return cls.load(variant_dir(model_id, name, root))

    def __repr__(self) -> str:
        return f"Variant({str(self.folder)!r})"

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def pipeline_name(self) -> str:
        """The diffusers pipeline its model comes from: ``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline``."""
        return self.index["pipeline"]

    @property
    def family(self) -> str:
        return "PixArt-Σ" if self.pipeline_name == "PixArtSigmaPipeline" else "PixArt-α"

    @property
    def compression(self) -> dict[str, dict]:
        """The compression scheme it was made with (NNCF method by part); empty for FP16."""
        return self.index.get("compression", {})

    @property
    def token_downsampling(self) -> dict[str, Any] | None:
        """The token downsampling record of a ``-ToDo`` variant (factor, blocks, steps); None for the others."""
        return self.index.get("token_downsampling")

    @property
    def step_cache_threshold(self) -> float | None:
        """The step cache's threshold a pipeline was saved with (``save_pretrained``); None: saved without it."""
        return (self.index.get("step_cache") or {}).get("threshold")

    @property
    def subfolders(self) -> list[str]:
        """The folders of its recorded files: the parts, the tokenizer, the scheduler, and what a variant adds."""
        return sorted({name.split("/")[0] for name in self.files if "/" in name})

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """Size and SHA-256 of each file, as recorded when the folder was finished."""
        return self.index["files"]

    def part_dir(self, part: str) -> Path:
        return self.folder / part

    def ir(self, part: str) -> Path:
        return ir_path(self.folder, part)

    def part_config(self, part: str) -> dict[str, Any]:
        """A part's ``config.json`` (the torch module's config), read once."""
        if part not in self._configs:
            self._configs[part] = json.loads((self.folder / part / "config.json").read_text())
        return self._configs[part]

    @property
    def scheduler_config(self) -> dict[str, Any]:
        if "scheduler" not in self._configs:
            self._configs["scheduler"] = scheduler_config(self.folder)
        return self._configs["scheduler"]

    @property
    def recipe(self) -> SamplingRecipe:
        """How its checkpoint is sampled (LCM or standard), from the scheduler config: no model compiled."""
        return recipe_for(self.scheduler_config["_class_name"])

    @property
    def sample_size(self) -> int:
        """The transformer's latent side; times the VAE's 8, the native picture side."""
        return self.part_config("transformer")["sample_size"]

    @property
    def sizes(self) -> list[str]:
        """The picture sizes it draws, as "W×H": its sample size's aspect-ratio bins, squarest first."""
        return size_choices(self.sample_size)

    @property
    def native_size(self) -> tuple[int, int]:
        return native_size(self.sample_size)

    @property
    def wide_size(self) -> tuple[int, int]:
        """``(height, width)`` of its landscape bin closest to 16:9 (1344×768 on 1024² models)."""
        return wide_size(self.sample_size)

    def part_sizes_mb(self) -> dict[str, float]:
        return part_sizes_mb(self.folder)

    def damaged_files(self, checksums: bool = False) -> dict[str, str]:
        """Its recorded files that are missing, cut short or (``checksums``: read every byte) changed."""
        return _damaged(self.folder, self.files, checksums)


def as_variant(variant: Variant | Path) -> Variant:
    """A :class:`Variant` as it is, or the one a folder holds (checked and read)."""
    return variant if isinstance(variant, Variant) else Variant.load(variant)


def check_variant(folder: Path) -> Path:
    """Return ``folder`` if it is a finished, undamaged variant folder; else raise the error :meth:`Variant.load` does."""
    return Variant.load(folder).folder


def is_variant(folder: Path) -> bool:
    """True when ``folder`` is a finished, undamaged variant folder."""
    try:
        Variant.load(folder)
    except VariantNotReadyError:
        return False
    return True


def ir_path(folder: Path, part: str) -> Path:
    """The IR of one part of a variant folder (its weights are the ``.bin`` beside it)."""
    return Path(folder) / part / IR_NAME


def scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler config of a variant (or diffusers) folder."""
    return json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text())


def folder_recipe(folder: Path) -> SamplingRecipe:
    """The sampling recipe of a diffusers folder (a variant's: ``Variant.recipe``), from its scheduler config."""
    return recipe_for(scheduler_config(folder)["_class_name"])


def available_variants(model_id: str, root: Path = MODEL_ROOT) -> list[Variant]:
    """The finished variants of a model on disk, in the order of :data:`VARIANTS`; an error when there is none."""
    folder = Path(root) / model_name(model_id)
    found = {}
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        try:
            found[path.name] = Variant.load(path)
        except VariantNotReadyError:
            continue
    if not found:
        raise VariantNotReadyError(f"No converted model for '{model_id}' under {folder}: {how_to_make(folder / 'FP16')} first.")
    order = (*VARIANTS, *DOWNSAMPLED_VARIANTS)
    return [found[name] for name in sorted(found, key=lambda name: (order.index(name) if name in order else len(order), name))]


def link_part(source: Path, out_dir: Path, part: str) -> Path:
    """Put ``source``'s finished ``part`` into ``out_dir`` as hard links to its files (copies where links fail)."""
    if is_part_converted(out_dir, part):
        return Path(out_dir) / part
    with atomic_folder(Path(out_dir) / part) as tmp:
        for file in sorted((Path(source) / part).iterdir()):
            try:
                os.link(file, tmp / file.name)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(file, tmp / file.name)
    return Path(out_dir) / part


def finish_variant(source: Path, out_dir: Path, record: dict, show_progress: bool = True) -> Variant | None:
    """Copy the tokenizer and scheduler from ``source``; once every part is in place, write ``model_index.json``.

    The index, written last (through a temporary file), holds ``record`` (what the folder was made from and how)
    and each file's size and SHA-256. Returns the finished :class:`Variant` (None while parts are missing).
    """
    source, out_dir = Path(source), Path(out_dir)
    for sub in COPIED:
        if not (out_dir / sub).is_dir():
            with atomic_folder(out_dir / sub) as tmp:
                shutil.copytree(source / sub, tmp, dirs_exist_ok=True)
    if not all(is_part_converted(out_dir, part) for part in PARTS):
        return None
    files = file_records(out_dir, show_progress)
    index = {"_class_name": VARIANT_CLASS, "format_version": FORMAT_VERSION, "parts": present_parts(out_dir),
             "pipeline": source_pipeline(source), **record, "files": files}
    write_text_atomically(out_dir / MODEL_INDEX, json.dumps(index, indent=2))
    return Variant(out_dir, index)


def save_variant(variant: Variant, out_dir: Path, settings: dict[str, Any], write_scheduler: Callable[[Path], Any]) -> Variant:
    """A copy of ``variant`` in ``out_dir``: its folders as hard links to its files, but the scheduler, which
    ``write_scheduler(folder)`` writes, and its index with ``settings`` over its record. Built under a temporary name,
    renamed at the end (a folder there before is replaced)."""
    out_dir = Path(out_dir)
    if out_dir.resolve() == variant.folder.resolve():
        raise ValueError(f"Can't save the pipeline into {out_dir}: it was loaded from there. Save it into another folder.")
    written = ("_class_name", "format_version", "parts", "pipeline", "files")  # by finish_variant, anew
    record = {key: value for key, value in variant.index.items() if key not in written}
    with atomic_folder(out_dir) as tmp:
        for sub in variant.subfolders:
            if sub != "scheduler":
                link_part(variant.folder, tmp, sub)
        write_scheduler(tmp / "scheduler")
        finish_variant(variant.folder, tmp, record | settings, show_progress=False)
    return Variant.load(out_dir)


def source_pipeline(folder: Path) -> str:
    """The diffusers pipeline class of the folder a variant is made from: a diffusers folder's index names it, a
    variant folder's records it."""
    index = read_index(folder)
    return index["pipeline"] if index.get("_class_name") == VARIANT_CLASS else index["_class_name"]


def folder_size_mb(folder: Path) -> float:
    """Size on disk of everything under ``folder``, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6


def part_sizes_mb(folder: Path) -> dict[str, float]:
    """Weights size (the IR's ``.bin``) of each part of a variant folder, in MB."""
    return {part: ir_path(folder, part).with_suffix(".bin").stat().st_size / 1e6 for part in present_parts(folder)}
