"""Benchmarks of speed, memory and quality, outside CI (``--quick`` modes and the tables are tested); results in
``results/``, each page in ``docs/`` names its command. Each module imports only modules listed above it
(``tests/test_layout.py`` checks), so the imports form no circle:

    runner.py              what every benchmark shares: RESULTS, the machine line, the results file (resumable
                           JSON written atomically), timing in turns, op profiles, a plan's steps run in order
    inputs.py              what the models are fed: the prompt, example inputs, a part's call, a recipe's scheduler
    plan.py                the full-size benchmark's steps, engines and input sizes (and PixArt-Σ-2K's)
    report.py              its tables and chart
    tasks.py               its tasks: build, convert, calibrate, compress, pipelines, latencies, side by side
    picture.py             the whole picture against PyTorch's best, per recipe and engine
    token_downsampling.py  token downsampling: quality on the shapes model, speed at full size
    step_cache.py          the step cache: quality per threshold, whole pictures and single steps in turns
    vae_int8.py            the VAE decoder with INT8 activations
    lora.py                LoRA in a full-size step: no adapter, run-time rank 16 and 64, fused; the switch
    alignment.py           the alignment score of a model's variants
    alignment_combos.py    what picture.py's fastest combinations cost in alignment on shapes: its caches' settings
    editing.py             edits scored on the shapes model; the VAE encoder against PyTorch, an edit's cost
    lora_alignment.py      a trained LoRA's alignment on its concept and the known prompts, PyTorch and variants
    previews.py            a preview's cost per step, the tiny decoder against the VAE: speed and pictures
    serving.py             Ray Serve: pictures per minute of two layouts, Ray's overhead
    serving_soak.py        Ray Serve for half an hour: good and bad requests, replicas killed; lost, latency, memory
    notebooks.py           the notebooks run one by one on a model: time and peak memory
    registry.py            every task a plan names, by name (and the child process's entry)
    benchmark.py           the full-size benchmark's command (--quick: CI's smoke test; --sigma-2k)
"""
