"""The tiny VAE decoder: TAESD (diffusers' ``AutoencoderTiny``) converted beside the other parts, for draft pictures and
previews. ``madebyollin/taesd`` decodes PixArt-α's latents, ``madebyollin/taesdxl`` PixArt-Σ's; the ``shapes`` model
ships its own, distilled from its VAE (``helpers.tiny_vae_training``).

diffusers users swap it in as ``pipe.vae = AutoencoderTiny.from_pretrained(...)``; here ``pipe.vae = pipe.tiny_vae``
does the same, and ``pipe.set_decoder("tiny")`` / ``set_decoder("full")`` is the one-word switch the CLI, the demo and
the images API use. Draft quality: never the default.
"""

from __future__ import annotations

from typing import Any

import torch

from .parts import OVModelPart, OVVaeDecoder
from .variants import TINY_VAE_DECODER, VariantNotReadyError, how_to_make

DECODERS = ("full", "tiny")  # what set_decoder takes: the model's own VAE, or the tiny one (draft quality)


class OVTinyVaeDecoder(OVModelPart):
    """The tiny decoder's IR, called as the pipeline calls its VAE: it carries the full VAE's ``config`` (so the
    pipeline scales the latents as it always does) and encoder (so edits still encode), and scales the latents back
    to what TAESD decodes: the latents as the denoising loop holds them (:meth:`decode_scaled`)."""

    part_name = TINY_VAE_DECODER
    use_tiling = False

    @classmethod
    def beside(cls, full_vae: OVVaeDecoder, make: Any) -> "OVTinyVaeDecoder":
        """The tiny decoder of the variant ``make`` (a :meth:`~helpers.parts.PartMaker.make`) makes parts of, standing in
        for ``full_vae``."""
        tiny = make(cls, TINY_VAE_DECODER)
        tiny.config, tiny.encoder = full_vae.config, full_vae.encoder
        if full_vae.input_shapes and not full_vae.use_tiling:  # a reshaped pipeline's shapes (the tiny one never tiles)
            tiny.reshape(full_vae.input_shapes)
        return tiny

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        return (self.decode_scaled(latents * self.config.scaling_factor),)

    def decode_scaled(self, latents: torch.Tensor) -> torch.Tensor:
        """Pictures in [-1, 1] from the latents of the denoising loop (what the step callback sees)."""
        return self.infer(latent_sample=latents)

    def encode(self, sample: torch.Tensor, return_dict: bool = True):
        return OVVaeDecoder.encode(self, sample, return_dict)


class TinyVaeMixin:
    """``tiny_vae`` and ``set_decoder`` on the OpenVINO pipeline (its ``full_vae`` and ``part_maker`` are set by
    ``from_pretrained``)."""

    _tiny_vae: OVTinyVaeDecoder | None = None

    @property
    def tiny_vae(self) -> OVTinyVaeDecoder:
        """The folder's tiny decoder, made at first use; a folder without one is refused with what makes one."""
        if self._tiny_vae is None:
            if TINY_VAE_DECODER not in self.variant.index["parts"]:
                raise VariantNotReadyError(missing_tiny_vae_message(self.variant.folder))
            self._tiny_vae = OVTinyVaeDecoder.beside(self.full_vae, self.part_maker.make)
        return self._tiny_vae

    @property
    def decoder(self) -> str:
        """``"tiny"`` while the tiny decoder draws (draft quality), else ``"full"``."""
        return "tiny" if self.vae is self._tiny_vae else "full"

    def set_decoder(self, decoder: str) -> None:
        """Decode with the model's own VAE (``"full"``) or the tiny one (``"tiny"``: draft quality, a fraction of the
        time); nothing else changes, so the same seed draws the same latents."""
        if decoder not in DECODERS:
            raise ValueError(f"decoder={decoder!r} is not a decoder: choose 'full' (the model's VAE) or 'tiny' (a draft).")
        self.vae = self.tiny_vae if decoder == "tiny" else self.full_vae


def missing_tiny_vae_message(folder) -> str:
    """One line: the folder has no tiny decoder, and what adds one."""
    return (f"The model at {folder} has no tiny VAE decoder ({TINY_VAE_DECODER}/), which draft decoding and tiny previews "
            f"need: put an AutoencoderTiny (TAESD) in the diffusers folder's tiny_vae/ (the hub's madebyollin/taesd for "
            f"PixArt-α, taesdxl for Σ are fetched when reachable), then {how_to_make(folder.with_name('FP16'))}"
            f"{'' if folder.name == 'FP16' else ', then ' + how_to_make(folder)}; or decode with decoder='full'.")
