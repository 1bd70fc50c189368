"""Facts about this machine, read once here for the notebooks, the reference and the benchmarks: the CPU's name,
family and model, its instruction-set flags (bf16 and AMX decide which precisions run fast), its memory, the library
versions, all of them in one ``machine()`` record for a results file; and the resident memory of a process or a
process tree sampled from ``/proc``, anonymous and file-backed apart (memory-mapped weights are file-backed); and
``free_memory``, which hands freed heap back to the system between stages. Everything is read from Linux's ``/proc``
(and ``lscpu``); OpenVINO and PyTorch are imported only for ``machine()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterable

# The flags a results file records: the ones that decide how fast bf16 and int8 matrix multiplies run
INSTRUCTIONS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
BF16 = frozenset({"avx512_bf16", "amx_bf16"})
AMX = frozenset({"amx_tile", "amx_bf16", "amx_int8"})
GIB_IN_KIB = 2**20


def cpu_flags() -> set[str]:
    """The instruction-set flags of this machine's CPU (``/proc/cpuinfo``)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_instructions(flags: Iterable[str] | None = None) -> list[str]:
    """The bfloat16 instruction sets (AVX512-BF16, AMX-BF16) among ``flags``, this CPU's by default.

    Without them PyTorch emulates bf16 matrix multiplies, hundreds of times slower than fp32.
    """
    return sorted(BF16.intersection(cpu_flags() if flags is None else flags))


def has_amx(flags: Iterable[str] | None = None) -> bool:
    """True when ``flags`` (this CPU's by default) include Intel AMX, the tile matrix unit."""
    return bool(AMX.intersection(cpu_flags() if flags is None else flags))


def instructions() -> list[str]:
    """This CPU's flags among ``INSTRUCTIONS``, sorted."""
    return sorted(cpu_flags().intersection(INSTRUCTIONS))


def cpu_name() -> str:
    """The CPU's marketing name: lscpu's "Model name", else /proc/cpuinfo's "model name" (no lscpu); "?" if neither."""
    texts = [Path("/proc/cpuinfo").read_text()]
    if shutil.which("lscpu"):
        texts.insert(0, subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    for text in texts:
        for line in text.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def cpu_model() -> str:
    """The CPU's family and model numbers (``/proc/cpuinfo``): the name alone does not tell Xeon generations apart."""
    fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def memory_gib() -> float:
    """This machine's memory (``MemTotal``), in GiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / GIB_IN_KIB
    raise RuntimeError("No MemTotal in /proc/meminfo.")


def openvino_default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes in unless told otherwise (bf16 where the CPU has it, else f32)."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def versions() -> dict[str, str]:
    """The versions of OpenVINO, PyTorch and Python."""
    import openvino
    import torch

    return {"openvino": openvino.__version__, "torch": torch.__version__, "python": platform.python_version()}


def machine() -> dict:
    """What timings and memory depend on, for a results file: CPU, its instructions, cores, memory, versions, date."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "bf16_instructions": bf16_instructions(),
        "instructions": instructions(),
        "cpu_model": cpu_model(),
        "openvino_default_precision": openvino_default_precision(),
        **versions(),
        "date": datetime.date.today().isoformat(),
    }


def free_memory() -> None:
    """Collect garbage and hand freed heap back to the system: glibc keeps it otherwise, and it stays resident."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def status_kib(pid: int) -> dict[str, int]:
    """RssAnon, RssFile and VmHWM of one process in KiB (0 where absent: zombies and kernel threads)."""
    values = dict.fromkeys(("RssAnon", "RssFile", "VmHWM"), 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values


def process_tree(root: int) -> list[int]:
    """The root and all its descendants, from the parent pid in /proc/*/stat (works without CONFIG_PROC_CHILDREN)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name in parentheses may hold spaces: the fields after the last ")" are safe
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # vanished between listing and reading
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree = [root]
    for pid in tree:  # grows while walked: breadth first
        tree.extend(children.get(pid, ()))
    return tree


class PeakMemory:
    """Peak resident memory of a process (this one by default) or of its whole tree, in GiB: ``anon`` and ``file``
    (RssAnon and RssFile summed over the processes), ``total`` and ``hwm`` (the largest process's own peak).

    The kernel keeps only each process's peak of the sum (VmHWM); the anon/file split and a tree's sum come from
    sampling every ``interval`` seconds, so a spike shorter than that can be missed. ``total`` is the sampled sum,
    never below ``hwm``: for one process, its VmHWM (or a sample a little above it). Samples in a background thread as a context manager
    (``report()`` afterwards), or in the caller's thread with ``watch(process)``.
    """

    def __init__(self, pid: int | None = None, tree: bool = False, interval: float = 0.02):
        self.pid, self.tree, self.interval = pid or os.getpid(), tree, interval
        self.anon = self.file = self.total = self.hwm = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def sample(self) -> None:
        """One reading of every process, folded into the peaks."""
        anon = file = hwm = 0
        for pid in process_tree(self.pid) if self.tree else [self.pid]:
            try:
                status = status_kib(pid)
            except (OSError, ValueError):
                continue  # vanished between listing and reading
            anon, file, hwm = anon + status["RssAnon"], file + status["RssFile"], max(hwm, status["VmHWM"])
        self.anon, self.file = max(self.anon, anon / GIB_IN_KIB), max(self.file, file / GIB_IN_KIB)
        self.hwm = max(self.hwm, hwm / GIB_IN_KIB)
        self.total = max(self.total, (anon + file) / GIB_IN_KIB, self.hwm)

    def watch(self, process: subprocess.Popen) -> int:
        """Samples until ``process`` exits; returns its exit code."""
        while process.poll() is None:
            self.sample()
            time.sleep(self.interval)
        return process.returncode

    def _sample_until_stopped(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # the peak the kernel kept up to the block's end

    def report(self) -> dict[str, float]:
        return {"anon_gib": self.anon, "file_gib": self.file, "total_gib": self.total}
