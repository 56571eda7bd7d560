import torch
from vision_tokenizers import BaseTokenizer, TokenizerSpec, register_tokenizer

class Box4(BaseTokenizer):  # any class with the BaseTokenizer interface
    def _encode(self, pixels):  # pixels in spec.pixel_range, (B,3,R,R)
        return (torch.nn.functional.avg_pool2d(pixels, 4) * 255).round().to(torch.uint8)
    def _decode(self, tokens):
        return torch.nn.functional.interpolate(tokens.float() / 255, scale_factor=4, mode="nearest")

register_tokenizer(
    TokenizerSpec(name="box4_256", family="box4", resolution=256, kind="discrete", token_shape=(3, 64, 64),
                  bits_per_token=8, codebook_size=256),
    build=lambda spec, files, device, dtype: Box4(spec, device, dtype))
