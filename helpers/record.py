"""The record of one pipeline call: how many denoising steps ran, how many the step cache reused and how many ran
with token downsampling, and the seconds of each part's calls. The result of every call carries it
(``pipe(...).record``); the CLI, the demo, the server and the benchmarks read it."""

from __future__ import annotations

from dataclasses import dataclass, field

# How the parts are named in a record, and shown.
PART_LABELS = {"text_encoder": "T5", "vae_encoder": "VAE encoder", "transformer": "transformer", "vae_decoder": "VAE",
               "vae_tiny_decoder": "tiny VAE"}


@dataclass
class CallRecord:
    """What one call of the pipeline did.

    ``seconds``: each part's calls, in order (``"text_encoder"``, an edit's ``"vae_encoder"``: one per picture given,
    ``"transformer"``: one per denoising step, ``"vae_decoder"``: one per picture, or per tile). ``reused``: steps
    whose blocks the step cache reused (``None`` with the step cache off). ``downsampled``: steps run by a ``-ToDo``
    variant's downsampled transformer. ``num_inference_steps``: the steps the call runs (an edit: its share).
    """

    num_inference_steps: int = 0
    reused: int | None = None
    downsampled: int = 0
    seconds: dict[str, list[float]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Denoising steps run so far (the transformer's calls)."""
        return len(self.seconds.get("transformer", ()))

    @property
    def computed(self) -> int:
        """Steps whose blocks ran in full."""
        return self.steps - (self.reused or 0)

    def total_seconds(self, part: str) -> float:
        return sum(self.seconds.get(part, ()))

    def add(self, part: str, seconds: float) -> None:
        self.seconds.setdefault(part, []).append(seconds)

    def steps_summary(self) -> str:
        """``"20 steps"``; with the step cache or token downsampling ``"20 steps (12 computed, 8 reused; 10 downsampled)"``."""
        kinds = [f"{self.computed} computed, {self.reused} reused"] if self.reused is not None else []
        kinds += [f"{self.downsampled} downsampled"] if self.downsampled else []
        return f"{self.steps} steps" + (f" ({'; '.join(kinds)})" if kinds else "")

    def describe(self) -> str:
        """The steps and each part's seconds: ``"20 steps (12 computed, 8 reused): T5 0.1 s, transformer 3.2 s, VAE 0.4 s"``."""
        times = ", ".join(f"{PART_LABELS.get(part, part)} {self.total_seconds(part):.1f} s" for part in self.seconds)
        return self.steps_summary() + (f": {times}" if times else "")


class Recorder:
    """The record of the call in progress, shared by the parts of one pipeline: each part times its calls into it,
    and the pipeline starts a new one at each call."""

    def __init__(self) -> None:
        self.record = CallRecord()

    def start(self, num_inference_steps: int, step_cache: bool = False) -> CallRecord:
        self.record = CallRecord(num_inference_steps, reused=0 if step_cache else None)
        return self.record
