import pytest
import torch

import vision_tokenizers as vt
from vision_tokenizers.sd_vae import dequantize_latents, quantize_latents


@pytest.fixture(scope="module")
def tiny_vae_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                        layers_per_block=1, sample_size=64)
    root = tmp_path_factory.mktemp("weights")
    vae.save_pretrained(root / "sd-vae-ft-mse")  # the hub repo's file names: config.json + safetensors
    return root, vae.eval()


def test_q8_convention_matches_diffusers_autoencoder_tiny():
    from diffusers import AutoencoderTiny

    z = torch.randn(2, 4, 8, 8) * 2
    expected = AutoencoderTiny().scale_latents(z).mul(255).round().byte()
    assert torch.equal(quantize_latents(z), expected)
    assert (dequantize_latents(quantize_latents(z)) - z.clamp(-3, 3)).abs().max() <= 3 / 255 + 1e-6


@torch.no_grad()
def test_vae_loads_through_real_loader_and_uses_posterior_mode(tiny_vae_dir):
    root, reference = tiny_vae_dir
    tok = vt.load("vae_sd_mse_512", weights_dir=root, offline=True)
    x = torch.rand(2, 3, 64, 64)
    latents = tok.encode(x)
    torch.testing.assert_close(latents, reference.encode(x * 2 - 1).latent_dist.mode())
    assert torch.equal(latents, tok.encode(x))  # deterministic: the mode, never a sample
    expected = ((reference.decode(latents.clone()).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(tok.decode(latents), expected)


@torch.no_grad()
def test_vae_q8_tokens_are_uint8_and_decode(tiny_vae_dir):
    root, reference = tiny_vae_dir
    tok = vt.load("vae_sd_mse_q8_512", weights_dir=root, offline=True)
    x = torch.rand(2, 3, 64, 64)
    tokens = tok.encode(x)
    assert tokens.dtype == torch.uint8 and tokens.shape == (2, 4, 32, 32)
    mode = reference.encode(x * 2 - 1).latent_dist.mode() * reference.config.scaling_factor
    assert torch.equal(tokens, quantize_latents(mode))
    out = tok.decode(tokens)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
