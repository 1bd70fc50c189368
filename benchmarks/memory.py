"""Peak resident memory of this process, anonymous and file-backed apart (memory-mapped weights are file-backed)."""

from __future__ import annotations

import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kib(*keys: str) -> dict[str, int]:
    values = {}
    for line in _STATUS.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in keys:
            values[name] = int(rest.split()[0])
    return values


class PeakMemory:
    """Samples ``RssAnon`` and ``RssFile`` every ``interval`` seconds while the block runs.

    The kernel keeps only the peak of their sum (``VmHWM``); the two peaks apart come from sampling, so a spike
    shorter than the interval can be missed. Reports GiB.
    """

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            now = _status_kib("RssAnon", "RssFile")
            self.anon, self.file = max(self.anon, now["RssAnon"]), max(self.file, now["RssFile"])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        gib = 1024**2
        return {"anon_gib": self.anon / gib, "file_gib": self.file / gib, "total_gib": _status_kib("VmHWM")["VmHWM"] / gib}
