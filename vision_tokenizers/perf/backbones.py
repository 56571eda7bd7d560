"""The harness's metric networks for timing: LPIPS (AlexNet) and the FID InceptionV3 with their released weights when
they are on this machine, else the same architectures with random weights (time depends on the architecture, not the
values; every result says which)."""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import torch

from vision_tokenizers import metrics as M

PIXEL_ONLY = "PSNR, SSIM, MAE, RMSE (no LPIPS, no Inception)"


def lpips_for_timing(device: torch.device) -> tuple[M.LPIPS, str]:
    """(LPIPS, "released" | "random weights: <why>")."""
    try:
        return M.LPIPS(device=device), "released"
    except M.MetricUnavailable as exc:
        import lpips

        metric = M.LPIPS.__new__(M.LPIPS)  # the class's forward, a trunk without its ImageNet file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # lin layers ship with the package
        metric.net, metric.device = net.to(device).eval().requires_grad_(False), torch.device(device)
        return metric, _random(exc)


def _random(exc: Exception) -> str:
    missing = "released file not on this machine" if "not in" in str(exc) else str(exc).split(";")[0]
    return f"random weights: {missing}"


def _random_inception(path: Path) -> Path:
    """A randomly initialised torch-fidelity InceptionV3 state dict at `path` (built without its weight file)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    if path.is_file():
        return path
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None), \
            torch.random.fork_rng():
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # variance-preserving, so that no layer computes on denormal floats
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return path


def fid_for_timing(device: torch.device, cache: Path) -> tuple[M.FID, str]:
    """(FID, "released" | "random weights: <why>"); the random state dict is kept in `cache`."""
    try:
        return M.FID(device=device, min_samples_warning=None), "released"
    except M.MetricUnavailable as exc:
        path = _random_inception(cache / "inception_random_weights.pth")
        return M.FID(device=device, weights_path=path, min_samples_warning=None), _random(exc)


def metric_nets(kind: str, device: torch.device, cache: Path) -> tuple[M.LPIPS | None, M.FID | None, str]:
    """`kind` "pixel": no networks; "all": LPIPS and Inception as the benchmark runs them. Returns them and a line
    saying what the harness computes."""
    if kind == "pixel":
        return None, None, PIXEL_ONLY
    lpips, lpips_weights = lpips_for_timing(device)
    fid, fid_weights = fid_for_timing(device, cache)
    return lpips, fid, (f"PSNR, SSIM, MAE, RMSE, LPIPS AlexNet ({lpips_weights}), InceptionV3 features of both "
                        f"sides ({fid_weights})")
