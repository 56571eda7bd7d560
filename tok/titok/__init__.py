"""TiTok (bytedance/1d-tokenizer) written from scratch: 1D ViT tokenizer + MaskGIT-VQGAN pixel decoder."""

from tok.titok.checkpoint import CheckpointMismatch, build_model, check_state_dict, load_titok, read_state_dict
from tok.titok.config import TiTokConfig, ViTSize
from tok.titok.model import TiTokModel
from tok.titok.pixel_decoder import PixelDecoderConfig

__all__ = [
    "CheckpointMismatch", "PixelDecoderConfig", "TiTokConfig", "TiTokModel", "ViTSize",
    "build_model", "check_state_dict", "load_titok", "read_state_dict",
]
