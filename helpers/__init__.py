"""Shared code of the PixArt-α and PixArt-Σ on OpenVINO notebooks: one module per stage, in the order of the flow.

Import a name from the module that defines it (``from helpers.conversion import convert_pipeline``): editors and
readers follow it to its definition, and a script loads only the stages it uses (training needs neither OpenVINO
nor Gradio). Each module imports only modules listed above it (``tests/test_layout.py`` checks the README's tree).

- ``settings``     — which model, paths, how each checkpoint is sampled (``SamplingRecipe``), example prompts.
- ``machine``      — facts about this machine: CPU name and flags, memory, versions, memory sampling from /proc.
- ``sizes``        — the aspect-ratio bins of each sample size.
- ``variants``     — the variant folder, the contract between stages, and its one owner: ``Variant.load`` (checked,
  its index read once) and the writers (``save_part``, ``link_part``, ``finish_variant``); compression schemes.
- ``checkpoints``  — diffusers checkpoints on disk (stored dtypes, FP32 copies, schedulers).
- ``building``     — PixArt models built here from configs (tiny, tiny-standard, tiny-sigma, full-size random).
- ``sources``      — a model id resolved to a diffusers folder; ``reference`` — the PyTorch reference pipeline.
- ``static_shapes``, ``step_cache``, ``token_downsampling``, ``tiling`` — what the parts and the conversion use.
- ``conversion``   — the T5 encoder, the transformer and the VAE decoder to OpenVINO IR, part by part.
- ``devices``      — devices, compute precision, whether a variant fits in memory.
- ``parts``        — one small class per OpenVINO part; ``pipeline`` — diffusers' α or Σ pipeline with them in it.
- ``shapes``       — captioned pictures of simple shapes (training data) and a scorer that reads them back.
- ``compression``  — NNCF weight compression and W8A8 quantization, variant folder to variant folder.
- ``comparison``   — pictures, latency, sizes and similarity of variants side by side.
- ``training`` (with ``training_vae``, ``training_features``, ``training_transformer``) — a small PixArt trained here.
- ``demo``         — the Gradio app; ``serving`` — Ray Serve replicas behind an OpenAI-style images API.
- ``cli``          — the terminal route (``python -m helpers --help``).

Nothing in this package knows whether the model is real or small.
"""
