"""LlamaGen VQ tokenizer (VQ-16 `vq_ds16_t2i.pt`), the pixel decoder behind Tar's AR-DTok, written from scratch."""

from tok.llamagen_vq.blocks import AttnBlock, Decoder, Downsample, Encoder, ResnetBlock, Upsample
from tok.llamagen_vq.config import CODEBOOK_USED_LEN, VQConfig
from tok.llamagen_vq.model import VQModel
from tok.llamagen_vq.quantizer import VectorQuantizer

__all__ = [
    "CODEBOOK_USED_LEN", "AttnBlock", "Decoder", "Downsample", "Encoder", "ResnetBlock", "Upsample", "VQConfig",
    "VQModel", "VectorQuantizer",
]
