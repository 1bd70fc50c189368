"""Shared code of the PixArt-α and PixArt-Σ on OpenVINO notebooks: one module per stage, in the order of the flow.

Import a name from the module that defines it (``from helpers.conversion import convert_pipeline``): editors and
readers follow it to its definition, and a script loads only the stages it uses (training needs neither OpenVINO
nor Gradio). Each module imports only modules listed above it (``tests/test_layout.py`` checks the README's tree).

- ``folders``, ``machine``, ``settings``, ``sizes`` — folders written whole, machine facts, which model and how each
  checkpoint is sampled (``SamplingRecipe``), the aspect-ratio bins and the one "W×H" reader.
- ``schemes``, ``variants``, ``part_writing`` — the compression schemes; the variant folder, the contract between
  stages, and its one owner (``Variant.load``, ``finish_variant``, ``save_variant``); its parts written whole.
- ``checkpoints``, ``building``, ``sources``, ``editing``, ``reference`` — diffusers checkpoints, PixArt models built
  here, a model id resolved to a diffusers folder, image-to-image and inpainting on diffusers' call (for both
  pipelines), the PyTorch reference pipeline.
- ``record``, ``call_checks``, ``request_limits``, ``static_shapes``, ``tiling``, ``devices`` — a call's record, its
  input checks, what one request to the API, the demo or the CLI may ask for, static shapes (``reshape``), tiled
  decoding, devices and memory.
- ``parts`` — the core: one small class per OpenVINO part. ``step_cache`` and ``token_downsampling`` — pieces the
  loader composes around the transformer, each removable.
- ``conversion`` — the T5 encoder, the transformer and the VAE decoder and encoder to OpenVINO IR, part by part.
- ``pipeline`` — diffusers' α or Σ pipeline with the OpenVINO parts in it (``from_pretrained``, ``save_pretrained``).
- ``shapes``, ``compression``, ``comparison`` — captioned shapes and their scorer; NNCF compression; variants compared.
- ``training`` (with ``training_vae``, ``training_features``, ``training_transformer``) — a small PixArt trained here.
- ``demo``         — the Gradio app; ``serving`` — Ray Serve replicas behind an OpenAI-style images API (with
  ``serving_access``, ``serving_errors``, ``serving_edits``, ``serving_stream``).
- ``cli``          — the terminal route (``python -m helpers --help``).

Nothing in this package knows whether the model is real or small.
"""
