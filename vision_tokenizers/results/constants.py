"""Names shared by the results modules: record file names, the metric table, grid sizes and the conventions."""

from __future__ import annotations

RECORDS_FILE = "records.jsonl"
RECORDS_GLOB = "records*.jsonl"

# metric key -> (label, unit, direction (+1 higher is better, -1 lower, 0 neither), decimals)
METRICS: dict[str, tuple[str, str, int, int]] = {
    "psnr": ("PSNR", "dB", +1, 2),
    "ssim": ("SSIM", "", +1, 4),
    "lpips": ("LPIPS", "", -1, 4),
    "mae": ("MAE", "", -1, 4),
    "rmse": ("RMSE", "", -1, 4),
    "fid": ("rFID", "", -1, 2),
    "kid": ("KID", "", -1, 4),
    "bpp_measured": ("measured bits/pixel", "", 0, 4),
    "bpp": ("bits/pixel", "", 0, 4),
    "codebook_usage": ("codebook usage", "", 0, 4),
    "unique_codes": ("unique codes", "", 0, 0),
    "entropy_bits": ("entropy (bits)", "", 0, 2),
    "perplexity": ("perplexity", "", 0, 1),
}
QUALITY = ("psnr", "ssim", "lpips", "mae", "rmse")
TOKEN_STATS = ("codebook_usage", "unique_codes", "entropy_bits", "perplexity")
STAGES = ("encode", "decode")
GRID_IMAGES = 6
GRID_CELL = 256
WORST_K = 4  # worst reconstructions per tokenizer in the worst-case grids
# (8-bit latents, the same tokenizer's float latents): shown as their own row pair in the token analysis
QUANT_PAIRS = (("vae_sd_mse_q8_512", "vae_sd_mse_512"),)

CONVENTIONS = (
    "PSNR is the mean of per-image PSNR (not PSNR of the pooled MSE), data range 255 on 8-bit images.",
    "SSIM: Gaussian window 11, sigma 1.5, population covariance, K1 0.01 / K2 0.03, computed per RGB channel "
    "and averaged (not luma).",
    "LPIPS: AlexNet, v0.1 linear heads, inputs scaled to [-1, 1].",
    "MAE and RMSE on pixel values scaled to [0, 1].",
    "Every metric compares 8-bit images (round(x * 255), never floor) at the tokenizer's resolution, on the same "
    "centre crop; reconstructions are never resized back to the source size.",
    "'±' is the sample standard deviation across images (ddof 1); [a, b] is the 95 % bootstrap confidence "
    "interval of the mean (percentile, resampling images, seeded: a rebuild gives the same interval).",
    "rFID is computed once over the whole image set, from every image's Inception features reduced in sorted-id "
    "order (so one run, a resumed run and merged shards give the same bits; never averaged per shard); backend "
    "and n are given with the number.",
    "bits/pixel: storage of one image's tokens (num tokens x bits per token) per input pixel; measured bits/pixel: "
    "the entropy of the dataset's id histogram x tokens per image / pixels (what an ideal coder of independent ids "
    "would need).",
    "KID: unbiased polynomial-kernel MMD^2 on the FID's Inception features, mean ± std over seeded subsets of "
    "min(1000, n) images.",
    "Every row names its protocol (dataset file list, crop, rounding, metric settings, libraries, device, dtype, "
    "numerics flags, seeds) and tokenizer config (settings, checkpoint sha256); rows of different protocols are "
    "not put in one table unless asked (`--allow-mixed`).",
    "Timings: warm-up excluded, device synchronised, median ± IQR over rounds of one batch; per image = batch "
    "time / batch size; images/s = batch size / median.",
    "Results are keyed by (tokenizer, image, metric); when a directory holds several runs, the latest record wins.",
)
