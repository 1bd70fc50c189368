"""Every task a plan can name, by name: the table a step's task is looked up in, in this process or in a child.

    python -m benchmarks.registry TASK JSON     # a child process: what ``benchmarks.runner.in_child`` starts
"""

from __future__ import annotations

import sys

from benchmarks import picture, tasks, token_downsampling, vae_int8
from benchmarks.runner import child_main

TASKS = {
    # the full-size benchmark (benchmarks/benchmark.py)
    "build": tasks.task_build, "convert": tasks.task_convert, "convert_all": tasks.task_convert_all,
    "calibrate": tasks.task_calibrate, "compress": tasks.task_compress, "pipeline": tasks.task_pipeline,
    "latency": tasks.task_latency, "side_by_side": tasks.task_side_by_side, "matmul": tasks.task_matmul_peak,
    # its PixArt-Σ-2K plan
    "build_sigma_part": tasks.task_build_sigma_part, "convert_part": tasks.task_convert_part,
    "calibrate_examples": tasks.task_calibrate_examples, "compress_transformer": tasks.task_compress_transformer,
    # the whole picture against PyTorch (benchmarks/picture.py)
    "picture": picture.task_picture, "picture_draft": picture.task_picture_draft,
    "static_vs_dynamic": picture.task_static_vs_dynamic,
    # token downsampling (benchmarks/token_downsampling.py)
    "todo_quality_torch": token_downsampling.task_quality_torch,
    "todo_quality_openvino": token_downsampling.task_quality_openvino,
    "todo_steps": token_downsampling.task_steps, "todo_picture_distance": token_downsampling.task_picture_distance,
    # the VAE decoder with INT8 activations (benchmarks/vae_int8.py): its calibration latents
    "vae_latents": vae_int8.task_final_latents,
}

if __name__ == "__main__":
    child_main(TASKS, sys.argv[1:])
