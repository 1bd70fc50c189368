"""Making a variant folder's parts: one part's weights in memory at a time, each part written whole.

:func:`make_parts` runs a stage's ``make(part)`` (conversion's, compression's) for the parts not yet there, after
:func:`prepare_folder` has removed what must be made again (a damaged part, or every part of a folder in another
format); :func:`save_part` writes one part's IR (``ov.save_model``) and config. ``helpers.variants`` then finishes
the folder (``finish_variant``: its index, last).
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from .folders import atomic_folder
from .settings import MODEL_INDEX
from .variants import (
    COPIED,
    DOWNSAMPLED_PART,
    IR_NAME,
    MADE_PARTS,
    VARIANT_CLASS,
    damaged_files,
    is_outdated,
    is_part_converted,
    read_index,
)


def remove_outdated(folder: Path) -> bool:
    """Remove what a variant folder in another format holds (its recorded folders and its index), so that it is made
    again whole rather than finished with parts of the old format. True when there was such a folder."""
    folder = Path(folder)
    index = read_index(folder)
    if index.get("_class_name") != VARIANT_CLASS or not is_outdated(index):  # never a diffusers folder's files
        return False
    recorded = {name.split("/")[0] for name in index.get("files", {}) if "/" in name}
    for sub in recorded | {*MADE_PARTS, *COPIED, DOWNSAMPLED_PART}:
        shutil.rmtree(folder / sub, ignore_errors=True)
    (folder / MODEL_INDEX).unlink()
    return True


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


def prepare_folder(out_dir: Path, report: Callable[[str], None] = tqdm.write) -> Path:
    """``out_dir``, created, with what must be made again removed: every part of a folder in another format, the
    damaged parts of a finished one. A stage calls it before it asks which parts are still to make."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if remove_outdated(out_dir):
        report(f"{out_dir}: written in another folder format, made again")
    for sub in remove_damaged(out_dir):
        report(f"{sub}: damaged, made again")
    return out_dir


def make_parts(
    out_dir: Path, parts: Iterable[str], make: Callable[[str], Any], action: str, report: Callable[[str], None] = tqdm.write
) -> dict[str, float]:
    """Run ``make(part)`` for each part not yet finished in ``out_dir``, one part's weights in memory at a time.

    The folder is prepared first (:func:`prepare_folder`). ``action`` is what ``make`` does ("converted"), for the
    lines ``report`` is given. Returns the seconds each part took; parts already there are skipped (and reported).
    """
    out_dir = prepare_folder(out_dir, report)
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
