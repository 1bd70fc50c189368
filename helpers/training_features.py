"""Cached features (notebook 6's "Caching the features"): every caption's T5 embedding and every picture's VAE
latent, computed once with the frozen encoders, saved with a fingerprint of what they were made from, and reused by
every training step."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .training_vae import encode_pictures, pictures_to_tensor

# The captions that stand for "no caption" while training (one in ten is swapped for one of them), so that
# classifier-free guidance has something to push away from; the shapes model was trained with these two.
NULL_CAPTIONS = ("", "blurry, low quality")


@torch.no_grad()
def encode_captions(pipe, captions: Sequence[str], max_length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 embeddings and attention masks of ``captions``, padded to ``max_length`` tokens.

    The pipeline pads to 120 tokens at inference; T5 masks padding, and so does the transformer's cross-attention,
    so the embeddings of the real tokens are the same at any padded length: a short one saves memory and time.
    """
    tokens = pipe.tokenizer(list(captions), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    if (tokens.attention_mask.sum(1) >= max_length).any():
        raise ValueError(f"A caption is longer than {max_length} tokens: raise max_length.")
    embeddings = pipe.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    return embeddings, tokens.attention_mask


def features_fingerprint(pipe, dataset) -> str:
    """What cached features depend on: the captions, their number, and the VAE's and T5's weights.

    The pictures themselves are not hashed: a folder whose pictures change under the same captions keeps its cache.
    """
    digest = hashlib.sha1()
    for text in dataset["text"]:
        digest.update(text.encode())
    for module in (pipe.vae, pipe.text_encoder):
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(len(dataset)).encode())
    return digest.hexdigest()


def cache_features(pipe, dataset, path: Path, batch_size: int = 32, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The latents and caption embeddings of a dataset, computed once and saved to ``path``.

    ``dataset`` has ``image`` and ``text`` columns (``helpers.shapes.load_captioned_images``). A cache made from other
    captions or another VAE (its fingerprint differs) is recomputed. The unconditional captions ("" and the
    standard recipe's negative prompt) are cached beside them for caption dropout. The VAE encodes on ``device``
    and is left on the CPU; the features are CPU tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path, fingerprint = Path(path), features_fingerprint(pipe, dataset)
    if path.is_file():
        with safe_open(path, "pt") as reader:
            if (reader.metadata() or {}).get("fingerprint") == fingerprint:
                return load_file(path)
    latents, embeddings, masks = [], [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="caching features"):
        rows = dataset[start : start + batch_size]
        latents.append(encode_pictures(pipe.vae, pictures_to_tensor(rows["image"]), device=device))
        embedding, mask = encode_captions(pipe, rows["text"])
        embeddings.append(embedding)
        masks.append(mask)
    pipe.vae.to("cpu")
    null_embeddings, null_masks = encode_captions(pipe, list(NULL_CAPTIONS))
    features = {
        "latents": torch.cat(latents).contiguous(),
        "embeddings": torch.cat(embeddings).contiguous(),
        "masks": torch.cat(masks).contiguous(),
        "null_embeddings": null_embeddings.contiguous(),
        "null_masks": null_masks.contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # a name of its own: two writers never mix
    save_file(features, tmp, metadata={"fingerprint": fingerprint})
    tmp.replace(path)
    return features
