"""Shared code of the PixArt-α on OpenVINO notebooks: one module per stage, in the order of the flow.

Import a name from the module that defines it (``from helpers.conversion import convert_pipeline``): editors and
readers follow it to its definition, and a script loads only the stages it uses (training needs neither OpenVINO
nor Gradio).

- ``settings``     — which model, how each checkpoint is sampled (recipes), example prompts, atomic writes.
- ``variants``     — the variant folder, the contract between stages: layout, part and variant names, compression
  recipes, done-checks, finishing (sizes and checksums), checking, sizes on disk, calibration sets on disk.
- ``sources``      — a hub id, a local diffusers folder, or a PixArt built offline with random weights.
- ``sizes``        — the aspect-ratio bins of each sample size; ``reference`` — the PyTorch reference pipeline.
- ``conversion``   — the T5 encoder, the transformer and the VAE decoder to OpenVINO IR, part by part.
- ``pipeline``     — one small class per part, put into diffusers' own ``PixArtAlphaPipeline`` or ``PixArtSigmaPipeline``.
- ``tiling``       — the VAE decoder over overlapping tiles, for pictures too large to decode whole.
- ``token_downsampling`` — fewer keys in self-attention (ToDo): the attention processor the -ToDo variants trace.
- ``compression``  — NNCF weight compression and W8A8 quantization, variant folder to variant folder.
- ``comparison``   — pictures, latency, sizes and similarity of variants side by side.
- ``demo``         — the Gradio app; ``cli`` — the terminal route (``python -m helpers --help``).
- ``shapes``       — captioned pictures of simple shapes (training data) and a scorer that reads them back.
- ``training``     — a small PixArt trained here on them (notebook 6, ``python -m helpers train``).

Nothing in this package knows whether the model is real or small.
"""
