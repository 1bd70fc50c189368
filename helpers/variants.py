"""The variant folder, the one contract between stages, and its one owner: this module writes it and reads it.

``model/<model-name>/<VARIANT>/`` holds ``text_encoder/``, ``transformer/``, ``vae_decoder/`` (an
``openvino_model.xml/.bin`` each, with its ``config.json``), ``tokenizer/``, ``scheduler/`` and
``model_index.json``. The index is written last: a folder without it is unfinished. It records every other file's
size and SHA-256, so a folder damaged on its way to another machine is named as such when it is loaded (sizes,
cheap) or verified (checksums), instead of failing inside OpenVINO.

Writing: :func:`save_part` (one part's IR and config, atomically), :func:`link_part`, :func:`make_parts` and
:func:`finish_variant` (the index, last). Reading: :meth:`Variant.load`, which checks the folder and reads its index
once; every stage, the demo, the CLI and the benchmarks ask that object (parts, pipeline class, sampling recipe,
sizes, compression, records).
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from .settings import MODEL_INDEX, MODEL_ROOT, SamplingRecipe, atomic_folder, model_name, recipe_for
from .sizes import native_size, size_choices, wide_size

PARTS = ("text_encoder", "transformer", "vae_decoder")
IR_NAME = "openvino_model.xml"
# The compression scheme each compressed variant is made with: an NNCF method per part (``helpers.compression``
# applies them; "recipe" is kept for the sampling recipe). INT8: nncf's
# asymmetric per-channel weights. INT4 (T5 only, 80 % of the real pipeline's weights): symmetric groups of 128,
# smaller groups where a layer is narrower. W8A8 (the transformer, where the time goes): INT8 weights and
# activations, calibrated; what carries the conditioning and costs little stays float, and so does the attention,
# which OpenVINO then keeps fused (docs/amx.md, "What the W8A8 figures say").
INT8_WEIGHTS = {"mode": "int8_asym"}
INT4_WEIGHTS = {"mode": "int4_sym", "group_size": 128, "group_size_fallback": "adjust"}
W8A8_QUANTIZATION = {
    "mode": "w8a8",
    "smooth_quant_alpha": 0.95,
    "ignored_patterns": (
        r".*transformer\.(adaln_single|caption_projection|pos_embed|proj_out)[./].*",
        r".*\.attn2\.to_[kv]/.*",
    ),
    "ignored_types": ("ScaledDotProductAttention",),
}
COMPRESSION_SCHEMES: dict[str, dict[str, dict]] = {
    "INT8": {"text_encoder": INT8_WEIGHTS, "transformer": INT8_WEIGHTS, "vae_decoder": INT8_WEIGHTS},
    "INT4-T5": {"text_encoder": INT4_WEIGHTS, "transformer": INT8_WEIGHTS, "vae_decoder": INT8_WEIGHTS},
    "W8A8": {"text_encoder": INT8_WEIGHTS, "transformer": W8A8_QUANTIZATION, "vae_decoder": INT8_WEIGHTS},
}
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


def needs_calibration(scheme: dict[str, dict]) -> bool:
    """True when a compression scheme quantizes activations (W8A8), which needs a calibration set."""
    return any(method["mode"] == "w8a8" for method in scheme.values())


def variant_dir(model_id: str, variant: str = "FP16", root: Path = MODEL_ROOT) -> Path:
    """Where the variant folder of a model lives: ``model/<model-name>/<VARIANT>``."""
    return Path(root) / model_name(model_id) / variant


def how_to_make(folder: Path) -> str:
    """The notebook and the command that make a variant folder: compress for INT8, INT4-T5 and W8A8 (by the folder's
    name), convert for FP16 and any other folder."""
    folder = Path(folder)
    model, variant = folder.parent.name, folder.name
    if variant.endswith(DOWNSAMPLED_SUFFIX):
        return f"run `python -m helpers compress --model {model} --variant {variant}`"
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


class Variant:
    """A finished, undamaged variant folder, its index read once: what the stages, the demo, the CLI and the
    benchmarks ask about a variant. :meth:`load` checks the folder; the rest reads what it holds (the part configs
    and the scheduler config, each once)."""

    def __init__(self, folder: Path, index: dict[str, Any]):
        self.folder, self.index = Path(folder), index
        self._configs: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, folder: Path) -> "Variant":
        """The variant in ``folder``; :class:`VariantNotReadyError` for a missing or unfinished folder and
        :class:`DamagedVariantError` when a recorded file is missing or has another size than was written (both
        name the fix)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise VariantNotReadyError(f"No converted model at {folder}: {how_to_make(folder)} first.")
        missing = [part for part in PARTS if not is_part_converted(folder, part)]
        if missing or not (folder / MODEL_INDEX).is_file():
            what = f"parts missing: {', '.join(missing)}" if missing else f"no {MODEL_INDEX}"
            raise VariantNotReadyError(f"The model at {folder} is incomplete ({what}): {how_to_make(folder)}.")
        index = read_index(folder)
        problems = _damaged(folder, index.get("files", {}))
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
        """The diffusers pipeline its model comes from: ``PixArtAlphaPipeline`` (folders made before PixArt-Σ came
        in record none) or ``PixArtSigmaPipeline``."""
        return self.index.get("pipeline", "PixArtAlphaPipeline")

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
        return self.index.get("files", {})

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


def remove_damaged(folder: Path) -> list[str]:
    """Remove the parts (or tokenizer, scheduler) of a finished folder whose files are damaged, and its index.

    The next conversion or compression then makes only those again. Returns the subfolders removed.
    """
    folder = Path(folder)
    damaged = sorted({name.split("/")[0] for name in damaged_files(folder)})
    for sub in damaged:
        shutil.rmtree(folder / sub, ignore_errors=True)
    if damaged:
        (folder / MODEL_INDEX).unlink()
    return damaged


def make_parts(
    out_dir: Path, parts: Iterable[str], make: Callable[[str], Any], action: str, report: Callable[[str], None] = tqdm.write
) -> dict[str, float]:
    """Run ``make(part)`` for each part not yet finished in ``out_dir``, one part's weights in memory at a time.

    Damaged parts of a finished folder are made again. ``action`` is what ``make`` does ("converted"), for the
    lines ``report`` is given. Returns the seconds each part took; parts already there are skipped (and reported).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in remove_damaged(out_dir):
        report(f"{sub}: damaged, made again")
    seconds = {}
    bar = tqdm(list(parts), desc=action, unit="part")
    for part in bar:
        bar.set_postfix_str(part)
        if is_part_converted(out_dir, part):
            report(f"{part}: already {action}, skipped")
            continue
        start = time.perf_counter()
        make(part)
        gc.collect()
        seconds[part] = time.perf_counter() - start
        report(f"{part}: {action} in {seconds[part]:.1f} s")
    return seconds


def save_part(
    out_dir: Path, part: str, model: Any, config: dict[str, Any], compress_to_fp16: bool = True,
    finish: Callable[[Path], Any] | None = None,
) -> Path:
    """Write one part into ``out_dir/part``: its IR (``ov.save_model``), then ``finish(xml)`` if given, and its
    torch config, in a temporary folder renamed at the end."""
    import openvino as ov

    with atomic_folder(Path(out_dir) / part) as tmp:
        ov.save_model(model, tmp / IR_NAME, compress_to_fp16=compress_to_fp16)
        if finish is not None:
            finish(tmp / IR_NAME)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return Path(out_dir) / part


def link_part(source: Path, out_dir: Path, part: str) -> Path:
    """Put ``source``'s finished ``part`` into ``out_dir`` as hard links to its files (copies where links fail)."""
    import os

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
    index = {"_class_name": "OVPixArtPipeline", "parts": list(PARTS), "pipeline": source_pipeline(source), **record, "files": files}
    tmp = out_dir / f".{MODEL_INDEX}.partial"
    tmp.write_text(json.dumps(index, indent=2))
    tmp.replace(out_dir / MODEL_INDEX)
    return Variant(out_dir, index)


def save_variant(variant: Variant, out_dir: Path, settings: dict[str, Any], write_scheduler: Callable[[Path], Any]) -> Variant:
    """A copy of ``variant`` in ``out_dir``: its folders as hard links to its files, but the scheduler, which
    ``write_scheduler(folder)`` writes, and its index with ``settings`` over its record. Built under a temporary name,
    renamed at the end (a folder there before is replaced)."""
    out_dir = Path(out_dir)
    if out_dir.resolve() == variant.folder.resolve():
        raise ValueError(f"Can't save the pipeline into {out_dir}: it was loaded from there. Save it into another folder.")
    record = {key: value for key, value in variant.index.items() if key not in ("_class_name", "parts", "pipeline", "files")}
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
    return Variant(folder, index).pipeline_name if "parts" in index else index["_class_name"]


def folder_size_mb(folder: Path) -> float:
    """Size on disk of everything under ``folder``, in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6


def part_sizes_mb(folder: Path) -> dict[str, float]:
    """Weights size (the IR's ``.bin``) of each part of a variant folder, in MB."""
    return {part: ir_path(folder, part).with_suffix(".bin").stat().st_size / 1e6 for part in PARTS}
