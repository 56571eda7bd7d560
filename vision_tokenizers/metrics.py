"""Reconstruction metrics, batched and on the tensors' device.

Every image metric takes the 8-bit images a user would save: uint8 tensors (B,C,H,W), both sides already rounded
(`round(x*255)`) by the caller, compared at the tokenizer's resolution. Pixel metrics return one value per image
(`Tensor[B]`); a dataset number is the mean of the per-image values (mean of per-image PSNR, not PSNR of the pooled
MSE). Dataset-level metrics (rFID, token statistics) are small stateful objects (`update` / `compute` / `merge`) so
that shards are merged through their statistics, never by averaging per-shard results.

Backbones (LPIPS' AlexNet, FID's InceptionV3) are looked up in torch hub's cache (`torch.hub.get_dir()/checkpoints`)
and raise `MetricUnavailable` with a one-line reason when missing; a download is tried only with `allow_download`.
"""

from __future__ import annotations

import inspect
import math
import pickle
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "FID", "LPIPS", "MetricUnavailable", "TokenStatistics", "bits_per_pixel", "describe", "entropy_of_counts",
    "feature_statistics", "fid_from_features", "frechet_distance", "kid_from_features", "mae", "position_entropy",
    "psnr", "rmse", "ssim", "statistics_from_counts", "token_statistics",
]

DATA_RANGE = 255.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03

# file name in torch hub's checkpoints dir -> (url, sha256 prefix checked on download or None)
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
VGG16_FILE = "vgg16-397923af.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
BACKBONE_FILES: dict[str, tuple[str, str | None]] = {
    ALEXNET_FILE: ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79"),
    VGG16_FILE: ("https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"),
    INCEPTION_FILE: ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE, None),
}


class MetricUnavailable(RuntimeError):
    """A metric's backbone weights are missing (and could not be downloaded); the message is one line for the user."""


# ---------------------------------------------------------------------------------------------------------------------
# pixel metrics


def _check_pair(ref_u8: torch.Tensor, rec_u8: torch.Tensor, what: str) -> None:
    if ref_u8.dtype != torch.uint8 or rec_u8.dtype != torch.uint8:
        raise TypeError(f"{what} expects uint8 images (round(x*255) once, then compare); got {ref_u8.dtype} and "
                        f"{rec_u8.dtype}")
    if ref_u8.dim() != 4 or ref_u8.shape != rec_u8.shape:
        raise ValueError(f"{what} expects two (B,C,H,W) tensors of the same shape; got {tuple(ref_u8.shape)} and "
                         f"{tuple(rec_u8.shape)}")


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 everywhere it exists (exact sums of 8-bit values, no E[x^2]-E[x]^2 cancellation); MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _mse(ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
    dtype = _work_dtype(ref_u8.device)
    diff = ref_u8.to(dtype) - rec_u8.to(dtype)
    return diff.square().flatten(1).mean(1)


def psnr(ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, MSE over all channels and pixels, data_range fixed at 255 (never inferred from the data).

    Identical images give `inf` (MSE 0); a dataset mean should say how many images were infinite rather than
    silently drop them. Returns Tensor[B] (float64; float32 on MPS) on the inputs' device.
    """
    _check_pair(ref_u8, rec_u8, "psnr")
    return 10 * torch.log10(DATA_RANGE**2 / _mse(ref_u8, rec_u8))


def mae(ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute error on the [0,1] scale (|a-b|/255 averaged over channels and pixels). Tensor[B]."""
    _check_pair(ref_u8, rec_u8, "mae")
    dtype = _work_dtype(ref_u8.device)
    return (ref_u8.to(dtype) - rec_u8.to(dtype)).abs().flatten(1).mean(1) / DATA_RANGE


def rmse(ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
    """Per-image root mean squared error on the [0,1] scale (sqrt of the per-image MSE, /255). Tensor[B]."""
    _check_pair(ref_u8, rec_u8, "rmse")
    return _mse(ref_u8, rec_u8).sqrt() / DATA_RANGE


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _ssim_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU (float64 convolutions are ~7x slower there; agreement with float64 ~1e-5 relative); float64 on
    CUDA, where cuDNN may silently run float32 convolutions in TF32 (10-bit mantissa) and the filter is cheap anyway."""
    return torch.float64 if device.type == "cuda" else torch.float32


def ssim(ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data_range 255.

    Computed per channel on RGB (not luma) and averaged over the channels and over the 'valid' region (the maps
    where the 11x11 window lies inside the image, i.e. a 5-pixel border dropped), with population (1/N) variances:
    the same number as `skimage.metrics.structural_similarity(ref, rec, channel_axis=-1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)` (to ~1e-5 in float32 on CPU). Tensor[B] (float64)
    on the inputs' device.
    """
    _check_pair(ref_u8, rec_u8, "ssim")
    b, c, h, w = ref_u8.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels; got {h}x{w}")
    dtype = _ssim_dtype(ref_u8.device)
    # centring on 128 shrinks the magnitudes in E[x^2]-E[x]^2 (variances are shift-invariant) for float32
    x, y = ref_u8.to(dtype) - 128, rec_u8.to(dtype) - 128
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, torch.float64, ref_u8.device).to(dtype)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # one separable 'valid' convolution for all five maps
    groups = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    mu_x, mu_y, xx, yy, xy = stack.split(c, dim=1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    mu_x, mu_y = mu_x + 128, mu_y + 128
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    # equal-size channel maps: the mean over (C,H,W) is the mean over channels of the per-channel SSIM
    return s.flatten(1).to(torch.float64).mean(1)


# ---------------------------------------------------------------------------------------------------------------------
# backbone weights


def _hub_checkpoint(filename: str, what: str, allow_download: bool) -> Path:
    """Path of `filename` in torch hub's checkpoints dir, through the same resolver as tokenizer weights.

    The cache is checked first (no network touched, hash verified where known), then one quick TCP connect before
    any download, so an offline machine fails in seconds; downloads only with `allow_download`.
    """
    from vision_tokenizers.weights import FileUnavailable, WeightFile, WeightsUnavailable, resolve_file

    url, hash_prefix = BACKBONE_FILES[filename]
    hub = Path(torch.hub.get_dir())
    path = hub / "checkpoints" / filename
    try:
        return resolve_file(WeightFile(filename, "checkpoints", url=url, sha256=hash_prefix, verify_cached=False), hub,
                            offline=not allow_download)
    except FileUnavailable as exc:
        why = "downloads are off (allow_download=False)" if not allow_download else exc.why
        raise MetricUnavailable(f"{what} weights not in {path} and {why}; copy the file there (from {url})") from exc
    except WeightsUnavailable as exc:
        raise MetricUnavailable(f"{what}: {exc}") from exc


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _unreadable(what: str, path: Path, exc: BaseException) -> MetricUnavailable:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MetricUnavailable(f"{what}: cannot load {path} ({type(exc).__name__}: {reason[:200]}); "
                             "replace it with the released file")


_LOAD_ERRORS = (RuntimeError, EOFError, OSError, pickle.UnpicklingError, KeyError)


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS


class LPIPS:
    """LPIPS (Zhang et al. 2018) from the `lpips` package: net='alex', version='0.1' by default.

    Inputs are uint8 and are scaled to [-1,1] (`x/127.5 - 1`) here, which is what the network expects; feeding [0,1]
    (torchmetrics' `normalize=False` default) is the classic mistake and gives different numbers. Returns one
    distance per image (Tensor[B], spatial average). The lin-layer weights ship inside the `lpips` package; the trunk
    is torchvision's ImageNet AlexNet, read from `torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`.
    """

    def __init__(self, device: str | torch.device = "cpu", *, net: str = "alex", version: str = "0.1",
                 allow_download: bool = False) -> None:
        files = {"alex": ALEXNET_FILE, "vgg": VGG16_FILE}
        if net not in files:
            raise ValueError(f"lpips: net must be one of {sorted(files)}; got {net!r}")
        trunk = {"alex": "AlexNet", "vgg": "VGG16"}[net]
        path = _hub_checkpoint(files[net], f"lpips: {trunk}", allow_download)
        import lpips

        try:
            with warnings.catch_warnings():  # lpips asks torchvision for `pretrained=True` (deprecated, still exact)
                warnings.simplefilter("ignore", UserWarning)
                model = lpips.LPIPS(net=net, version=version, verbose=False)
        except _LOAD_ERRORS as exc:
            raise _unreadable(f"lpips: {trunk}", path, exc) from exc
        self.net = model.to(device).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.weights_path = path
        lpips_version = getattr(lpips, "__version__", None) or _version("lpips")
        self.backend = (f"lpips {lpips_version} package, net={net} (torchvision ImageNet {trunk}, {path.name}), "
                        f"lin layers v{version}")
        self.mode = "uint8 -> [-1,1] (x/127.5-1), per image, spatial average"

    @torch.no_grad()
    def __call__(self, ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance, Tensor[B] on the metric's device."""
        _check_pair(ref_u8, rec_u8, "lpips")
        x = ref_u8.to(self.device, torch.float32) / 127.5 - 1
        y = rec_u8.to(self.device, torch.float32) / 127.5 - 1
        return self.net(x, y).flatten()


# ---------------------------------------------------------------------------------------------------------------------
# FID


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ||mu1-mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)), with the trace of the matrix square root
    taken as the sum of the square roots of the eigenvalues of sigma1 @ sigma2 (real parts): the math torchmetrics
    uses. Agrees with scipy.linalg.sqrtm-based implementations (pytorch-fid, torch-fidelity) to ~1e-8 relative on
    full-rank covariances; with fewer samples than dimensions both square roots are of a singular matrix and agree to
    ~1e-5. `mu*`/`sigma*` may be tensors or numpy arrays; computed on sigma1's device.
    """
    device = torch.as_tensor(sigma1).device
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(t).to(device, torch.float64) for t in (mu1, sigma1, mu2, sigma2))
    a = (mu1 - mu2).square().sum()
    b = sigma1.trace() + sigma2.trace()
    c = torch.linalg.eigvals(sigma1 @ sigma2).sqrt().real.sum()
    return float(a + b - 2 * c)


class FID:
    """rFID: Fréchet distance between InceptionV3 pool features of the originals and of their reconstructions.

    Backend: torchmetrics `FrechetInceptionDistance(feature=2048, antialias=False)` on torch-fidelity's InceptionV3
    with the TF FID weights (`weights-inception-2015-12-05-6726825d.pth` in torch hub's checkpoints dir). uint8 images
    of any size are resized to 299x299 inside the net with torch-fidelity's TF1-compatible bilinear resize (no
    antialias; torchmetrics' own default antialias=True would differ when downsampling). Feature sums are float64;
    `merge` adds another FID's statistics (shards), `compute` turns them into one number. Record `backend`, `mode`
    and `num_samples` with the value: FID depends on all three.

    With fewer samples than feature dimensions (2048) the covariances are rank-deficient and FID is biased upward;
    `compute` warns below `min_samples_warning` (None: never).
    """

    def __init__(self, device: str | torch.device = "cpu", *, weights_path: str | Path | None = None,
                 allow_download: bool = False, antialias: bool = False,
                 min_samples_warning: int | None = 2048) -> None:
        path = Path(weights_path) if weights_path is not None else _hub_checkpoint(
            INCEPTION_FILE, "fid: InceptionV3 (torch-fidelity TF FID)", allow_download)
        if not path.is_file():
            raise MetricUnavailable(f"fid: InceptionV3 weights not found at {path}")
        import torch_fidelity
        import torchmetrics
        from torchmetrics.image.fid import FrechetInceptionDistance

        kwargs = {}
        if "antialias" in inspect.signature(FrechetInceptionDistance.__init__).parameters:
            kwargs["antialias"] = antialias
        elif antialias:  # older torchmetrics always used torch-fidelity's TF1-compatible resize
            raise ValueError(f"torchmetrics {torchmetrics.__version__} has no antialias option")
        try:
            metric = FrechetInceptionDistance(feature=2048, normalize=False, feature_extractor_weights_path=str(path),
                                              **kwargs)
        except _LOAD_ERRORS as exc:
            raise _unreadable("fid: InceptionV3", path, exc) from exc
        self._metric = metric.to(device)
        self.device = torch.device(device)
        self.weights_path = path
        self.min_samples_warning = min_samples_warning
        self.backend = (f"torchmetrics {torchmetrics.__version__} FrechetInceptionDistance, torch-fidelity "
                        f"{torch_fidelity.__version__} InceptionV3 (TF FID weights, {path.name})")
        resize = ("torch bilinear antialias=True" if antialias
                  else "TF1-compatible bilinear (torch-fidelity, no antialias)")
        self.mode = (f"rFID: originals vs their reconstructions (paired, same n); uint8 RGB at the tokenizer's "
                     f"resolution, resized to 299x299 inside the net ({resize}); 2048-d pool3 features; float64 mean "
                     "and unbiased covariance (benchmark: from per-image features in sorted-id order); tr sqrt via "
                     "eigvals, or for n < 2048 the nuclear norm of the centred cross-feature matrix (same quantity)")

    @torch.no_grad()
    def update(self, ref_u8: torch.Tensor, rec_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add a batch of originals (reference distribution) and their reconstructions.

        Returns both sides' per-image Inception features ((B,2048) float32 on the CPU, as the network gave them): the
        per-image statistics a resumed or sharded run stores and merges (`fid_from_features`, `kid_from_features`).
        The running float64 sums are torchmetrics' own state update, done here on those same features.
        """
        _check_pair(ref_u8, rec_u8, "fid")
        if ref_u8.shape[1] != 3:
            raise ValueError(f"fid expects RGB (B,3,H,W); got {tuple(ref_u8.shape)}")
        m = self._metric
        out = []
        for images, prefix in ((ref_u8, "real"), (rec_u8, "fake")):
            features = m.inception(images.to(self.device))
            m.orig_dtype = features.dtype
            double = features.double().reshape(images.shape[0], -1)
            setattr(m, f"{prefix}_features_sum", getattr(m, f"{prefix}_features_sum") + double.sum(dim=0))
            setattr(m, f"{prefix}_features_cov_sum", getattr(m, f"{prefix}_features_cov_sum") + double.t().mm(double))
            setattr(m, f"{prefix}_features_num_samples", getattr(m, f"{prefix}_features_num_samples") + images.shape[0])
            out.append(features.reshape(images.shape[0], -1).float().cpu())
        return out[0], out[1]

    @property
    def num_samples(self) -> int:
        """Number of (original, reconstruction) pairs seen."""
        return int(self._metric.real_features_num_samples)

    def statistics(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{'ref': (mu, sigma), 'rec': (mu, sigma)} in float64, sigma the unbiased (n-1) covariance."""
        n = self.num_samples
        if n < 2:
            raise ValueError(f"fid needs at least 2 images; got {n}")
        m = self._metric
        out = {}
        for key, prefix in (("ref", "real"), ("rec", "fake")):
            mu = getattr(m, f"{prefix}_features_sum") / n
            sigma = (getattr(m, f"{prefix}_features_cov_sum") - n * torch.outer(mu, mu)) / (n - 1)
            out[key] = (mu, sigma)
        return out

    def compute(self) -> float:
        """rFID over everything seen so far (float64 math, returned as a Python float)."""
        stats = self.statistics()
        n = self.num_samples
        if self.min_samples_warning is not None and n < self.min_samples_warning:
            warnings.warn(f"rFID over n={n} < {self.min_samples_warning} images: the 2048-d covariances are "
                          "rank-deficient and FID is biased upward; compare only numbers with the same n",
                          UserWarning, stacklevel=2)
        return frechet_distance(*stats["ref"], *stats["rec"])

    def merge(self, other: FID) -> None:
        """Add another FID's feature statistics (e.g. another shard of the same dataset) to this one."""
        if (other.backend, other.mode) != (self.backend, self.mode):
            raise ValueError(f"cannot merge FID statistics of different backends/modes: {other.mode!r} vs "
                             f"{self.mode!r}")
        self._metric.merge_state(other._metric)

    def reset(self) -> None:
        self._metric.reset()


FEATURE_CHUNK = 256  # rows per float64 matmul when summing outer products: fixed, so the sums' bits are too
KID_SUBSETS, KID_SUBSET_SIZE, KID_DEGREE, KID_SEED = 100, 1000, 3, 0


def feature_statistics(features: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(count, sum, sum of outer products) of (N,D) per-image features, in float64: FID's sufficient statistics.

    Rows are added in the order given, FEATURE_CHUNK at a time. Float addition is not associative, so two partitions
    of the same images (shards, a resumed run) give the same bits only when the rows come in one canonical order:
    the callers sort them by image id.
    """
    x = torch.as_tensor(features).reshape(features.shape[0], -1)  # widened a chunk at a time: no float64 copy
    total, outer = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], x.shape[1],
                                                                             dtype=torch.float64)
    for start in range(0, x.shape[0], FEATURE_CHUNK):
        chunk = x[start:start + FEATURE_CHUNK].to(torch.float64)
        total += chunk.sum(dim=0)
        outer += chunk.t().mm(chunk)
    return x.shape[0], total, outer


def gaussian_from_statistics(n: int, total: torch.Tensor, outer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased covariance) from `feature_statistics`, as torchmetrics computes them."""
    if n < 2:
        raise ValueError(f"fid needs at least 2 images; got {n}")
    mu = total / n
    return mu, (outer - n * torch.outer(mu, mu)) / (n - 1)


def fid_from_features(ref: torch.Tensor, rec: torch.Tensor) -> float:
    """rFID of paired (N,D) per-image features of originals and reconstructions, rows in a canonical order.

    With N >= D: the Gaussians of `feature_statistics` and `frechet_distance`. With N < D the covariances have rank
    < N and the same number comes from the centred (N,D) feature matrices A, B at O(N^2 D) instead of a DxD
    eigendecomposition: tr(sigma1) = |A|_F^2/(N-1) and tr sqrt(sigma1 sigma2) = |A B^T|_*/(N-1), because the
    non-zero eigenvalues of A^T A B^T B are the squared singular values of A B^T. Deterministic for given rows.
    """
    ref, rec = (torch.as_tensor(t).reshape(t.shape[0], -1) for t in (ref, rec))
    n, dim = ref.shape
    if rec.shape != ref.shape:
        raise ValueError(f"fid: {tuple(ref.shape)} reference and {tuple(rec.shape)} reconstruction features")
    if n < 2:
        raise ValueError(f"fid needs at least 2 images; got {n}")
    if n >= dim:
        return frechet_distance(*gaussian_from_statistics(*feature_statistics(ref)),
                                *gaussian_from_statistics(*feature_statistics(rec)))
    ref, rec = ref.to(torch.float64), rec.to(torch.float64)  # n < dim rows: bounded by the feature size
    mu1, mu2 = ref.mean(dim=0), rec.mean(dim=0)
    a, b = ref - mu1, rec - mu2
    traces = (a.square().sum() + b.square().sum()) / (n - 1)
    cross = torch.linalg.svdvals(a @ b.t()).sum() / (n - 1)
    return float((mu1 - mu2).square().sum() + traces - 2 * cross)


def _poly_mmd(x: torch.Tensor, y: torch.Tensor, degree: int) -> torch.Tensor:
    """Unbiased MMD^2 with the polynomial kernel (x.y/d + 1)^degree: torchmetrics' `poly_mmd`, in float64."""
    gamma, m = 1.0 / x.shape[1], x.shape[0]
    k_xx, k_yy, k_xy = ((p @ q.t() * gamma + 1.0) ** degree for p, q in ((x, x), (y, y), (x, y)))
    off_diagonal = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return off_diagonal / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def kid_from_features(ref: torch.Tensor, rec: torch.Tensor, *, subsets: int = KID_SUBSETS,
                      subset_size: int = KID_SUBSET_SIZE, degree: int = KID_DEGREE,
                      seed: int = KID_SEED) -> tuple[float, float, int]:
    """KID (Binkowski et al. 2018) of (N,D) features: mean and population std of the unbiased polynomial MMD^2 over
    `subsets` random subsets of min(subset_size, N) images each side (torchmetrics' KernelInceptionDistance, with a
    seeded generator so a rerun, a resumed run and merged shards agree). With subset size N every subset is the
    whole set: one MMD, std 0. Returns (mean, std, subset size); rows in a canonical order.
    """
    ref, rec = (torch.as_tensor(t).reshape(t.shape[0], -1) for t in (ref, rec))
    n = ref.shape[0]
    size = min(subset_size, n)
    if size < 2:
        raise ValueError(f"kid needs at least 2 images; got {n}")
    if size == n:
        return float(_poly_mmd(ref.to(torch.float64), rec.to(torch.float64), degree)), 0.0, size
    generator = torch.Generator().manual_seed(seed)
    # each subset is widened to float64 after it is drawn: the same numbers without a float64 copy of all features
    scores = torch.stack([_poly_mmd(ref[torch.randperm(n, generator=generator)[:size]].to(torch.float64),
                                    rec[torch.randperm(n, generator=generator)[:size]].to(torch.float64), degree)
                          for _ in range(subsets)])
    return float(scores.mean()), float(scores.std(unbiased=False)), size


# ---------------------------------------------------------------------------------------------------------------------
# tokens


def _check_ids(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise TypeError(f"token statistics need an integer id tensor; got {getattr(ids, 'dtype', type(ids))}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be positive; got {codebook_size}")
    flat = ids.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= codebook_size):
        raise ValueError(f"token ids must lie in [0, {codebook_size}); got [{int(flat.min())}, {int(flat.max())}]")
    return flat


def entropy_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits (0-d float64) of a histogram's non-zero counts, summed in the order given."""
    p = counts.to(torch.float64) / counts.sum()
    return -(p * p.log2()).sum()


def statistics_from_counts(counts: torch.Tensor) -> dict[str, float]:
    """`token_statistics` of an id histogram (length K, the codebook size)."""
    used = counts > 0
    entropy = float(entropy_of_counts(counts[used])) if int(counts.sum()) else float("nan")
    k = counts.numel()
    unique = int(used.sum())
    return {
        "codebook_usage": unique / k,
        "unique_codes": unique,
        "entropy_bits": entropy,
        "perplexity": 2.0**entropy,
        "max_entropy_bits": math.log2(k),
    }


def token_statistics(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook statistics pooled over ALL ids given (any shape; a whole dataset, not per image).

    codebook_usage: fraction of the K codes used at least once; unique_codes; entropy_bits: Shannon entropy of the
    id histogram in bits; perplexity: 2**entropy_bits; max_entropy_bits: log2 K.
    """
    flat = _check_ids(ids, codebook_size)
    return statistics_from_counts(torch.bincount(flat, minlength=codebook_size))


class TokenStatistics:
    """Streaming `token_statistics`: a histogram of ids (bincount on the ids' device) that batches are added to."""

    def __init__(self, codebook_size: int) -> None:
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be positive; got {codebook_size}")
        self.codebook_size = codebook_size
        self.counts: torch.Tensor | None = None

    def update(self, ids: torch.Tensor) -> None:
        """Add a batch of ids (any shape, e.g. (B,N))."""
        counts = torch.bincount(_check_ids(ids, self.codebook_size), minlength=self.codebook_size)
        self.counts = counts if self.counts is None else self.counts + counts.to(self.counts.device)

    def merge(self, other: TokenStatistics) -> None:
        if other.codebook_size != self.codebook_size:
            raise ValueError(f"cannot merge codebook sizes {self.codebook_size} and {other.codebook_size}")
        if other.counts is not None:
            self.counts = other.counts.clone() if self.counts is None else self.counts + other.counts.to(
                self.counts.device)

    @property
    def num_tokens(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    def compute(self) -> dict[str, float]:
        """Statistics of every id seen so far (see `token_statistics`)."""
        if self.counts is None:
            raise ValueError("TokenStatistics.compute before any update")
        return statistics_from_counts(self.counts)

    def reset(self) -> None:
        self.counts = None


def position_entropy(ids: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of the id at each token position across images: (N, *positions) ids -> (*positions) float64.

    A position that always gets the same code carries no information; the bound is log2 min(N, K), so with few images
    the values say more about N than about the tokenizer.
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dim() < 2:
        raise TypeError("position_entropy needs integer ids of shape (N, *positions)")
    flat = ids.reshape(ids.shape[0], -1)
    out = torch.empty(flat.shape[1], dtype=torch.float64)
    for position in range(flat.shape[1]):  # one column widened at a time: no int64 copy of every image's ids
        out[position] = entropy_of_counts(torch.unique(flat[:, position].long(), return_counts=True)[1])
    return out.reshape(ids.shape[1:])


def describe(lpips: LPIPS | None, fid: FID | None, weights_sha256=None) -> dict[str, dict]:
    """Each metric's implementation and settings, for the protocol record (machine-independent: file names and
    sha256s, no paths). `weights_sha256(path)` hashes backbone files (None: not hashed)."""
    out: dict[str, dict] = {
        "psnr": {"data_range": DATA_RANGE, "per_image": True, "dataset": "mean of per-image PSNR; inf counted apart"},
        "ssim": {"window": "gaussian", "size": SSIM_WINDOW, "sigma": SSIM_SIGMA, "k1": SSIM_K1, "k2": SSIM_K2,
                 "data_range": DATA_RANGE, "channels": "per RGB channel, averaged (not luma)",
                 "covariance": "population (1/N)", "region": "valid (5-pixel border dropped)"},
        "mae_rmse": {"scale": "[0,1] (uint8 / 255)", "per_image": True},
    }
    for name, metric in (("lpips", lpips), ("fid", fid)):
        if metric is None:  # the reason (a local path) is in the skip record; here only that it was not measured
            out[name] = {"available": False}
            continue
        out[name] = {"backend": metric.backend, "mode": metric.mode, "weights": Path(metric.weights_path).name}
        if weights_sha256 is not None:
            out[name]["weights_sha256"] = weights_sha256(metric.weights_path)
    if fid is not None:
        out["kid"] = {"kernel": f"polynomial degree {KID_DEGREE}, gamma 1/dim, coef 1", "subsets": KID_SUBSETS,
                      "subset_size": f"min({KID_SUBSET_SIZE}, n)", "seed": KID_SEED, "features": "the FID's"}
    return out


def bits_per_pixel(num_tokens: int, bits_per_token: float, height: int, width: int) -> float:
    """Storage of one image's tokens per input pixel: num_tokens * bits_per_token / (height * width)."""
    return num_tokens * bits_per_token / (height * width)
