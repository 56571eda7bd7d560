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

CONVENTIONS = (
    "PSNR is the mean of per-image PSNR (not PSNR of the pooled MSE), data range 255 on 8-bit images.",
    "SSIM: Gaussian window 11, sigma 1.5, population covariance, K1 0.01 / K2 0.03, computed per RGB channel "
    "and averaged (not luma).",
    "LPIPS: AlexNet, v0.1 linear heads, inputs scaled to [-1, 1].",
    "MAE and RMSE on pixel values scaled to [0, 1].",
    "Every metric compares 8-bit images (round(x * 255), never floor) at the tokenizer's resolution, on the same "
    "centre crop; reconstructions are never resized back to the source size.",
    "'±' is the sample standard deviation across images (ddof 1).",
    "rFID is computed once over the whole image set (feature statistics merged, never averaged per shard); "
    "backend and n are given with the number.",
    "bits/pixel: storage of one image's tokens (num tokens x bits per token) per input pixel.",
    "Timings: warm-up excluded, device synchronised, median ± IQR over rounds of one batch; per image = batch "
    "time / batch size; images/s = batch size / median.",
    "Results are keyed by (tokenizer, image, metric); when a directory holds several runs, the latest record wins.",
)
