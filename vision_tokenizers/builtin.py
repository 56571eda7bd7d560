"""The built-in tokenizers: plain-data specs registered through the same public door a plug-in uses
(`register_tokenizer`), each with its family's builder named lazily as ``"module:build"`` so that listing names
imports no network code.
"""

from __future__ import annotations

from vision_tokenizers.diffusers_autoencoder import NAMED_SPECS as DIFFUSERS_SPECS
from vision_tokenizers.registry import register_tokenizer
from vision_tokenizers.spec import TokenizerSpec, WeightFile

FAMILY_BUILDERS = {
    family: f"vision_tokenizers.{family}:build" for family in ("sd_vae", "taesd", "magvit2", "titok", "tatok")
}
# The released-size network with random weights from `spec.random_config` (speed without weight files).
FAMILY_RANDOM_BUILDERS = {family: f"{builder}_random" for family, builder in FAMILY_BUILDERS.items()}

_SD_VAE_FILES = tuple(
    WeightFile(f, local_dir="sd-vae-ft-mse", repo_id="stabilityai/sd-vae-ft-mse")
    for f in ("config.json", "diffusion_pytorch_model.safetensors")
)
# config.json of stabilityai/sd-vae-ft-mse (diffusers 0.4.2; scaling_factor is the class default 0.18215).
_SD_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3,
    "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 256,
}
_TAESD_COMMIT = "5cccb12dc72074a4be35680c3b108548a7c69978"
_TAEF2_FILES = tuple(
    WeightFile(f"taef2_{part}.pth", local_dir="taesd", sha256=digest,
               url=f"https://raw.githubusercontent.com/madebyollin/taesd/{_TAESD_COMMIT}/taef2_{part}.pth")
    for part, digest in (("encoder", "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6"),
                         ("decoder", "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"))
)
# Released Open-MAGVIT2 256 config (configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml);
# the hub repo holds only the checkpoint.
_MAGVIT2_256_CONFIG = {
    "ddconfig": {"double_z": False, "z_channels": 18, "resolution": 128, "in_channels": 3, "out_ch": 3,
                 "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 4},
    "n_embed": 262144, "embed_dim": 18, "use_ema": True,
}
# The tokenizer part of yucornetto/tokenizer_titok_l32_imagenet's config.json (its generator block is not used);
# the values upstream hard-codes (pixel VQGAN, 1024 pixel codes) are `TiTokConfig`'s defaults.
_TITOK_L32_CONFIG = {
    "model": {"vq_model": {"codebook_size": 4096, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
                           "vit_enc_model_size": "large", "vit_dec_model_size": "large", "vit_enc_patch_size": 16,
                           "vit_dec_patch_size": 16, "num_latent_tokens": 32}},
    "dataset": {"preprocessing": {"crop_size": 256}},
}

# TA-Tok (csuhan/Tar): the encoder file is shared by every de-tokenizer; AR-DTok paints LlamaGen VQ-16 codes.
_TATOK_FILE = WeightFile("ta_tok.pth", local_dir="tatok", repo_id="csuhan/TA-Tok")
_LLAMAGEN_VQ_FILE = WeightFile("vq_ds16_t2i.pt", local_dir="llamagen_vq", repo_id="peizesun/llamagen_t2i")
# The published comparison's AR-DTok settings (so our row sits next to its number); "upstream" = Tar's own
# reconstruction call (MMAutoEncoder.forward: no top-k). quantizer: argmax (deterministic) or sample (upstream).
_AR_SETTINGS = {"cfg_scale": 1.0, "temperature": 1.0, "top_k": 200, "top_p": 1.0, "quantizer": "argmax"}
_AR_PRESETS = {"upstream": {"top_k": 0, "quantizer": "sample"}}
# The constructor args the released files carry, for --random-weights (the files themselves are not public here):
# ta_tok.pth's model.args (upstream TextAlignedTokenizer; bottleneck_dim 1536 = Qwen2.5-1.5B's width, inferred from
# Tar's training script) and the AR-DTok LP model name and args (inferred from the file names, the 16x VQ grid and the
# 729-token condition); the counts they give are ../shared/golden/tatok_ardtok/full_size_params.json's.
_TATOK_ARGS = {
    "bottleneck": {"name": "bottleneck", "args": {"bottleneck_dim": 1536, "regularizer": {"name": "simvq", "args": {
        "codebook_size": 65536, "l2_normalized": True, "stochastic": True, "stochastic_temperature": 0.03}}}},
    "bottleneck_token_num": 729, "input_size": 384, "teacher": "google/siglip2-so400m-patch14-384", "pool_scale": 1,
    "decoder_depth": 3, "select_layer_id": -2,
}


def _ardtok_random_config(resolution: int) -> dict:
    ar_args = {"vocab_size": 16384, "cond_dim": 1152, "model_type": "clip_cond", "cls_token_num": 729,
               "max_seq_len": (resolution // 16) ** 2}
    return {"tatok": _TATOK_ARGS, "ar_dtok": {"name": "llama-abs-LP", "args": ar_args}, "llamagen_vq": {}}


def _tatok_ardtok(name: str, resolution: int, pool_scale: int = 1, published: dict | None = None) -> TokenizerSpec:
    grid = 27 // pool_scale
    ar_file = WeightFile(f"ar_dtok_lp_{resolution}px.pth", local_dir="ar_dtok", repo_id="csuhan/TA-Tok")
    return TokenizerSpec(
        name=name, family="tatok", resolution=resolution, kind="discrete", token_shape=(grid * grid,),
        bits_per_token=16, codebook_size=65536, weights=(_TATOK_FILE, ar_file, _LLAMAGEN_VQ_FILE),
        config={"pool_scale": pool_scale}, output_range=(-1.0, 1.0), encoder_resolution=384,
        encoder_resize="bilinear-antialias", stochastic=True, settings=dict(_AR_SETTINGS),
        presets=dict(_AR_PRESETS), published=published, random_config=_ardtok_random_config(resolution),
        description=f"TA-Tok (SigLIP2-so400m, {grid}x{grid} ids of 65,536 SimVQ codes) + AR-DTok LP "
                    f"({(resolution // 16) ** 2} LlamaGen VQ-16 codes) + VQ-16 decoder",
    )


# Tar-SANA-600M-512px as a diffusers folder; its text encoder (Gemma-2) is never needed: features are the prompt.
_SANA_FILES = ("model_index.json", "negative_prompt_embeds.pth", "scheduler/scheduler_config.json",
               "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors", "vae/config.json",
               "vae/diffusion_pytorch_model.safetensors")
# steps 50 = the published comparison; "upstream" = Tar's own 28 steps (scheduler settings from the folder).
_SANA_SETTINGS = {"steps": 50, "guidance_scale": 1.0}
_SANA_PRESETS = {"upstream": {"steps": 28}}


# Tar-Lumina2 (original Lumina-Image-2.0 NextDiT + Tar condition branch) with the FLUX.1-dev VAE and a fixed
# Gemma-2-2b prompt; both of those are gated on the hub. 50 time points, time shift 6 (the release's sampler).
_LUMINA2_SETTINGS = {"steps": 50, "time_shift": 6.0, "guidance_scale": 1.0, "paint_resolution": 1024,
                     "output_resize": "lanczos", "native": False}
_GEMMA_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json",
                "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors", "special_tokens_map.json", "tokenizer.json",
                "tokenizer_config.json")
_LUMINA2_FILES = (
    *(WeightFile(f, local_dir="Tar-Lumina2", repo_id="csuhan/Tar-Lumina2")
      for f in ("consolidated_ema.00-of-01.pth", "model_args.pth")),
    *(WeightFile(f, local_dir="FLUX.1-dev", repo_id="black-forest-labs/FLUX.1-dev", gated=True)
      for f in ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")),
    *(WeightFile(f, local_dir="gemma-2-2b", repo_id="google/gemma-2-2b", gated=True) for f in _GEMMA_FILES),
)


BUILTIN_SPECS: tuple[TokenizerSpec, ...] = (
    TokenizerSpec(
        name="vae_sd_mse_512", family="sd_vae", resolution=512, kind="continuous", token_shape=(4, 64, 64),
        bits_per_token=32, weights=_SD_VAE_FILES, config={"quantize_bits": None}, pixel_range=(-1.0, 1.0),
        random_config=_SD_VAE_CONFIG,
        resolution_step=8, description="SD VAE ft-MSE (diffusers AutoencoderKL), posterior mode, fp32 latents",
    ),
    TokenizerSpec(
        name="vae_sd_mse_q8_512", family="sd_vae", resolution=512, kind="continuous", token_shape=(4, 64, 64),
        bits_per_token=8, codebook_size=256, weights=_SD_VAE_FILES, config={"quantize_bits": 8},
        random_config=_SD_VAE_CONFIG,
        pixel_range=(-1.0, 1.0), resolution_step=8,
        description="SD VAE ft-MSE, latents x0.18215 mapped to uint8 like AutoencoderTiny.scale_latents",
        published={"psnr": 24.92, "ssim": 0.6953, "lpips": 0.0830, "fid": 12.45, "decode_s": 0.070},
    ),
    TokenizerSpec(
        name="taef2_512", family="taesd", resolution=512, kind="continuous", token_shape=(32, 64, 64),
        bits_per_token=32, weights=_TAEF2_FILES, resolution_step=8, random_config={},  # a fixed architecture
        description="TAEF2 tiny autoencoder for the FLUX.2 latent space (madebyollin/taesd)",
    ),
    TokenizerSpec(
        name="magvit2_256", family="magvit2", resolution=256, kind="discrete", token_shape=(16, 16),
        bits_per_token=18, codebook_size=262144, config=_MAGVIT2_256_CONFIG, pixel_range=(-1.0, 1.0),
        random_config=_MAGVIT2_256_CONFIG,
        weights=(WeightFile("imagenet_256_L.ckpt", local_dir="magvit2",
                            repo_id="TencentARC/Open-MAGVIT2-Tokenizer-256-resolution"),),
        description="Open-MAGVIT2 IN256-L, LFQ with 2^18 codes, EMA weights", resolution_step=16,
        published={"psnr": 18.65, "ssim": 0.4951, "lpips": 0.3936, "fid": 34.37, "decode_s": 0.011},
    ),
    TokenizerSpec(
        name="titok_l32_256", family="titok", resolution=256, kind="discrete", token_shape=(32,),
        bits_per_token=12, codebook_size=4096, random_config=_TITOK_L32_CONFIG,
        weights=tuple(WeightFile(f, local_dir="titok_l32", repo_id="yucornetto/tokenizer_titok_l32_imagenet")
                      for f in ("config.json", "model.safetensors")),
        description="TiTok-L-32: 32 1D tokens, 4096 codes, MaskGIT-VQGAN pixel decoder",
        published={"psnr": 15.02, "ssim": 0.3766, "lpips": 0.5724, "fid": 54.23, "decode_s": 0.028},
    ),
    _tatok_ardtok("tatok_ardtok_512", 512, published={"psnr": 12.35, "ssim": 0.361, "lpips": 0.536, "fid": 57.95,
                                                      "decode_s": 58.3}),
    TokenizerSpec(
        name="tatok_sana_512", family="tatok", resolution=512, kind="discrete", token_shape=(729,),
        bits_per_token=16, codebook_size=65536, encoder_resolution=384, stochastic=True,
        weights=(_TATOK_FILE, *(WeightFile(f, local_dir="Tar-SANA-600M-512px",
                                           repo_id="csuhan/Tar-SANA-600M-512px") for f in _SANA_FILES)),
        config={"detok": "sana"}, settings=dict(_SANA_SETTINGS), presets=dict(_SANA_PRESETS),
        published={"psnr": 13.11, "ssim": 0.370, "lpips": 0.500, "fid": 48.91, "decode_s": 2.0},
        description="TA-Tok (27x27 ids of 65,536 codes) + Tar-SANA-600M diffusion de-tokenizer (diffusers)",
    ),
    TokenizerSpec(
        name="tatok_lumina2_512", family="tatok", resolution=512, kind="discrete", token_shape=(729,),
        bits_per_token=16, codebook_size=65536, encoder_resolution=384, stochastic=True,
        weights=(_TATOK_FILE, *_LUMINA2_FILES), config={"detok": "lumina2"}, settings=dict(_LUMINA2_SETTINGS),
        published={"psnr": 14.01, "ssim": 0.391, "lpips": 0.445, "fid": 44.01, "decode_s": 95.7},
        description="TA-Tok (27x27 ids) + Tar-Lumina2 NextDiT de-tokenizer; paints 1024 px, scored at 512 after "
                    "PIL LANCZOS (as the published comparison)",
    ),
    _tatok_ardtok("tatok_ardtok_256", 256),
    _tatok_ardtok("tatok_ardtok_1024", 1024),
    _tatok_ardtok("tatok_ardtok_512_p169", 512, pool_scale=2),
    _tatok_ardtok("tatok_ardtok_512_p81", 512, pool_scale=3),
    # Tiny models in the released file layouts (../shared/golden): same code paths, random weights.
    TokenizerSpec(
        name="magvit2_tiny", family="magvit2", resolution=64, kind="discrete", token_shape=(16, 16),
        bits_per_token=6, codebook_size=64, tiny=True, pixel_range=(-1.0, 1.0), resolution_step=4,
        weights=(WeightFile("magvit2_tiny.ckpt", local_dir="magvit2"), WeightFile("config.json", local_dir="magvit2")),
        description="Open-MAGVIT2 architecture, tiny random config (golden checkpoint)",
    ),
    TokenizerSpec(
        name="titok_tiny", family="titok", resolution=64, kind="discrete", token_shape=(8,),
        bits_per_token=6, codebook_size=64, tiny=True,
        weights=(WeightFile("config.json", local_dir="titok/checkpoint"),
                 WeightFile("model.safetensors", local_dir="titok/checkpoint"),
                 WeightFile("hardcoded_overrides.json", local_dir="titok")),
        description="TiTok architecture, tiny random config (golden checkpoint)",
    ),
    TokenizerSpec(
        name="tatok_ardtok_tiny", family="tatok", resolution=128, kind="discrete", token_shape=(16,),
        bits_per_token=7, codebook_size=128, tiny=True, output_range=(-1.0, 1.0), encoder_resolution=56,
        stochastic=True, settings=dict(_AR_SETTINGS, top_k=10), presets=dict(_AR_PRESETS),
        weights=(WeightFile("ta_tok.pth", local_dir="tatok_ardtok/tatok"),
                 WeightFile("ar_dtok_lp_512px.pth", local_dir="tatok_ardtok/ar_dtok"),
                 WeightFile("vq_ds16_t2i.pt", local_dir="tatok_ardtok/llamagen_vq")),
        description="TA-Tok + AR-DTok + LlamaGen VQ architectures, tiny random configs (golden checkpoints)",
    ),
    TokenizerSpec(
        name="tatok_sana_tiny", family="tatok", resolution=512, kind="discrete", token_shape=(16,),
        bits_per_token=7, codebook_size=128, tiny=True, encoder_resolution=56, stochastic=True,
        weights=(WeightFile("ta_tok.pth", local_dir="tatok_ardtok/tatok"),
                 *(WeightFile(f, local_dir="tar_diffusion_dtok/sana/Tar-SANA-600M-512px") for f in _SANA_FILES
                   if not f.startswith(("text_encoder", "tokenizer")))),
        config={"detok": "sana", "tiny_width_adapter": "tile"}, settings={"steps": 4, "guidance_scale": 1.0},
        presets=dict(_SANA_PRESETS),
        description="tiny TA-Tok + tiny Tar-SANA (golden checkpoints); 48-wide features tiled to 1152 (tiny only)",
    ),
    TokenizerSpec(
        name="tatok_lumina2_tiny", family="tatok", resolution=64, kind="discrete", token_shape=(16,),
        bits_per_token=7, codebook_size=128, tiny=True, encoder_resolution=56, stochastic=True,
        weights=(WeightFile("ta_tok.pth", local_dir="tatok_ardtok/tatok"),
                 *(WeightFile(f, local_dir="tar_diffusion_dtok/lumina2/Tar-Lumina2")
                   for f in ("consolidated_ema.00-of-01.pth", "model_args.pth")),
                 *(WeightFile(f, local_dir="tar_diffusion_dtok/lumina2/FLUX.1-dev")
                   for f in ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")),
                 *(WeightFile(f, local_dir="tar_diffusion_dtok/lumina2/gemma-2-2b")
                   for f in ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                             "tokenizer_config.json"))),
        config={"detok": "lumina2", "tiny_width_adapter": "tile"},
        settings=dict(_LUMINA2_SETTINGS, steps=3, paint_resolution=128),
        description="tiny TA-Tok + tiny Tar-Lumina2 (golden checkpoints): paints 128 px, LANCZOS to 64; "
                    "48-wide features tiled to 1152 (tiny only)",
    ),
)

for _spec in BUILTIN_SPECS:
    register_tokenizer(_spec, FAMILY_BUILDERS[_spec.family], build_random=FAMILY_RANDOM_BUILDERS[_spec.family])
# Released diffusers autoencoders (SDXL, SD3.5, FLUX.1/2, Qwen-Image, DC-AE, the TAESD family, aMUSEd's VQ): data only,
# one generic builder (the same one behind `diffusers:<repo or folder>` names).
for _spec in DIFFUSERS_SPECS:
    register_tokenizer(_spec, "vision_tokenizers.diffusers_autoencoder:build")
