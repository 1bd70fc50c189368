"""Folders written whole or not at all (helpers/folders.py): writers killed at several points, two writers at once,
and a conversion killed part-way, never leave a folder that loads half-written, nor lose the good one."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.folders import atomic_folder
from helpers.variants import Variant, VariantNotReadyError

FILES = 8
WRITER = """
import sys, time
from pathlib import Path
from helpers.folders import atomic_folder

final, version = Path(sys.argv[1]), sys.argv[2]
with atomic_folder(final) as tmp:
    print("locked", flush=True)
    for index in range({files}):
        (tmp / f"{{index}}.txt").write_text(version * 1000)
        print(index, flush=True)
        time.sleep(0.05)
print("done", flush=True)
""".format(files=FILES)


def writer(final: Path, version: str) -> subprocess.Popen:
    """A process writing ``FILES`` files of ``version`` into ``final`` through :func:`atomic_folder`, a line a file."""
    return subprocess.Popen([sys.executable, "-c", WRITER, str(final), version], stdout=subprocess.PIPE, text=True)


def version_of(final: Path) -> str:
    """The one version every file of a whole folder holds; fails on a folder with missing or mixed files."""
    contents = {path.name: path.read_text() for path in final.iterdir() if not path.name.startswith(".")}
    assert sorted(contents) == sorted(f"{index}.txt" for index in range(FILES)), sorted(contents)
    versions = {text[:1] for text in contents.values()}
    assert len(versions) == 1 and all(len(text) == 1000 for text in contents.values()), versions
    return versions.pop()


def leftovers(final: Path) -> list[str]:
    return sorted(path.name for path in final.parent.iterdir() if path.name.startswith("."))


def write(final: Path, version: str) -> None:
    process = writer(final, version)
    assert process.wait(timeout=60) == 0


@pytest.mark.parametrize("kill_after", ["locked", "0", str(FILES // 2), str(FILES - 1)])
def test_a_writer_killed_at_any_point_leaves_the_old_folder_whole(tmp_path, kill_after):
    final = tmp_path / "part"
    write(final, "a")
    process = writer(final, "b")
    for line in process.stdout:
        if line.strip() == kill_after:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    # killed before its last file, or at the swap: the old folder, whole; the new one only once it is whole
    assert version_of(final) == "a" or (kill_after == str(FILES - 1) and version_of(final) == "b")
    write(final, "b")  # the next writer clears what the killed one left and finishes
    assert version_of(final) == "b" and leftovers(final) == []


def test_two_writers_at_once_leave_one_whole_folder(tmp_path):
    final = tmp_path / "part"
    first = writer(final, "a")
    assert first.stdout.readline().strip() == "locked"
    second = writer(final, "b")  # starts while the first writes: it waits for the lock, then writes its own
    first_lines, second_lines = first.communicate(timeout=60)[0].split(), second.communicate(timeout=60)[0].split()
    assert first.returncode == second.returncode == 0
    assert first_lines[-1] == "done" and second_lines == ["locked", *map(str, range(FILES)), "done"]
    assert version_of(final) == "b" and leftovers(final) == []  # the last to finish is kept


def test_a_failed_block_keeps_the_old_folder(tmp_path):
    final = tmp_path / "part"
    write(final, "a")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "0.txt").write_text("b" * 1000)
        raise RuntimeError("the writer failed")
    assert version_of(final) == "a" and leftovers(final) == []


def test_a_swap_cut_between_its_two_renames_is_completed_by_the_next_writer(tmp_path):
    """Where the system cannot exchange two folders in one step, a swap is two renames: a kill between them leaves
    the old folder aside (``.<name>.old``), which the next writer puts back before it writes."""
    final = tmp_path / "part"
    write(final, "a")
    final.rename(tmp_path / ".part.old")
    (tmp_path / ".part.partial").mkdir()  # the new one, half-written
    with pytest.raises(RuntimeError), atomic_folder(final):
        assert version_of(final) == "a"  # back in place before anything else
        raise RuntimeError("stop here")
    assert version_of(final) == "a" and leftovers(final) == []


def test_a_conversion_killed_part_way_never_loads_then_finishes(tiny_source, tmp_path):
    """``python -m helpers convert`` killed while writing a part, then after a part: each time the folder is refused
    as unfinished (no model_index.json) and its finished parts are whole; a third run completes it."""
    out = tmp_path / "tiny" / "FP16"
    command = [sys.executable, "-m", "helpers", "convert", "--model", str(tiny_source), "--out", str(out)]
    for ready in (lambda: any(out.glob(".*.partial")), lambda: (out / "text_encoder" / "openvino_model.xml").exists()):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not ready() and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        with pytest.raises(VariantNotReadyError):
            Variant.load(out)
        for part in (path for path in out.iterdir() if not path.name.startswith(".")):
            assert (part / "config.json").exists() or part.name in ("tokenizer", "scheduler"), part
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    variant = Variant.load(out)
    assert variant.damaged_files(checksums=True) == {} and not list(out.glob(".*.partial"))
