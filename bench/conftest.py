"""Benchmark-only fixtures, each doing one thing: metric backbones, a progress bar, one evaluation pass per tokenizer.

Resuming is one query on the results store (`record.resumable`: the images already measured under this run's protocol
and tokenizer config), file naming belongs to the recorder (`record.image(recon=..., original=...)`,
`record.statistics(...)`), and dataset metrics are reduced from the stored per-image statistics (`_reduce`). Images
are streamed from their files for every pass (`image_batches`): nothing holds the dataset.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import pytest

from vision_tokenizers import metrics as M
from vision_tokenizers.evaluate import PIXEL_METRICS, BatchResult, Evaluation, Failure, evaluate
from vision_tokenizers.results import make_protocol, reduce_stored_statistics
from vision_tokenizers.results.aggregate import BAD_ANNOTATION
from vision_tokenizers.results.text import text_dataset_metrics
from vision_tokenizers.text_fidelity import ANNOTATIONS_FILE
from vision_tokenizers.weights import cached_sha256

RANDOM_WEIGHTS = ("--random-weights: full-size networks with random weights are timed only; the quality tests are "
                  "deselected and no quality number is computed")
_DESELECTED = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--random-weights: of the benchmark's tests only the speed tests run (before -m, so the count is complete)."""
    if not config.getoption("random_weights", False):
        return
    here = Path(__file__).parent
    quality = [item for item in items if here in item.path.parents and item.get_closest_marker("speed") is None]
    if quality:
        config.hook.pytest_deselected(items=quality)
        dropped = set(quality)
        items[:] = [item for item in items if item not in dropped]
    config.stash[_DESELECTED] = len(quality)


def pytest_report_collectionfinish(config: pytest.Config) -> str | None:
    """The one line saying why the quality tests did not run."""
    count = config.stash.get(_DESELECTED, 0)
    return f"vtok: {count} quality tests deselected ({RANDOM_WEIGHTS})" if count else None


@pytest.fixture(scope="session")
def random_weights(request) -> bool:
    """--random-weights: the networks are timed only, so no quality metric loads its network."""
    return bool(request.config.getoption("random_weights", False))


@pytest.fixture(scope="session", autouse=True)
def random_weights_note(record, random_weights) -> None:
    """The same reason, once, in the report (its Skipped section)."""
    if random_weights:
        record.skip(tokenizer=None, what="quality", reason=RANDOM_WEIGHTS)


def _metric_or_skip(factory, what: str, record, device, offline: bool):
    try:
        return factory(device=device, allow_download=not offline), None
    except M.MetricUnavailable as exc:
        record.skip(tokenizer=None, what=f"metric:{what}", reason=str(exc))
        return None, str(exc)


@pytest.fixture(scope="session")
def lpips_metric(record, device, request, random_weights):
    """(LPIPS or None, reason it is unavailable)."""
    if random_weights:  # nothing to measure: no network loaded
        return None, RANDOM_WEIGHTS
    return _metric_or_skip(M.LPIPS, "lpips", record, device, request.config.getoption("offline"))


@pytest.fixture(scope="session")
def fid_metric(record, device, request, random_weights):
    """(FID or None, reason it is unavailable): one Inception network per session, reset for every tokenizer."""
    if random_weights:
        return None, RANDOM_WEIGHTS
    return _metric_or_skip(M.FID, "fid", record, device, request.config.getoption("offline"))


@pytest.fixture(scope="session")
def text_metric(record, images, random_weights):
    """(TextFidelity or None, why text fidelity is not measured). On for a dataset with annotations
    (`annotations.json` beside the images, `--dataset textsizes`); each bad annotation entry is one skip line; without
    the OCR package (vtok-bench[text]) the metric is a skip with the reason, like LPIPS without its weights."""
    annotations = images.annotations
    if annotations is None:
        return None, (f"dataset {images.name} has no {ANNOTATIONS_FILE} beside its images: text fidelity needs text "
                      "boxes (--dataset textsizes, or a folder with an annotations.json)")
    if random_weights:
        return None, RANDOM_WEIGHTS
    for problem in annotations.problems:  # already warned when the dataset was opened; here for the report
        record.skip(tokenizer=None, what=BAD_ANNOTATION, reason=problem)
    if not annotations.count:
        reason = (f"dataset {images.name}: no usable text box in its {ANNOTATIONS_FILE} for the images measured; "
                  "fix the entries listed above")
        record.skip(tokenizer=None, what="metric:text", reason=reason)
        return None, reason
    from vision_tokenizers.text_fidelity import TextFidelity

    try:
        return TextFidelity(), None
    except M.MetricUnavailable as exc:
        record.skip(tokenizer=None, what="metric:text", reason=str(exc))
        return None, str(exc)


@pytest.fixture(scope="session", autouse=True)
def protocol(record, images, request, lpips_metric, fid_metric, text_metric) -> str:
    """The run's protocol record, written once: every later row references its id (see results.protocol)."""
    config = request.config
    (lpips, _), (fid, _), (text, _) = lpips_metric, fid_metric, text_metric
    dataset = {"name": images.name, "files": images.num_files, "file_list_sha256": images.file_list_sha256,
               "id_list_sha256": images.id_list_sha256, **images.protocol_fields}
    metrics = M.describe(lpips, fid, weights_sha256=cached_sha256)
    if images.annotations is not None:
        metrics["text"] = text.recognizer.describe(weights_sha256=cached_sha256) if text else {"available": False}
    # --seeds K only adds decodes beside the main pass: its numbers do not depend on K, so K is not in the protocol
    generation = {k: config.getoption(k, None) for k in ("seed", "preset", "gen", "sweep", "native")}
    return record.protocol(make_protocol(dataset=dataset, metrics=metrics, device=config.getoption("device"),
                                         dtype=config.getoption("dtype"), resolution=config.getoption("resolution"),
                                         generation=generation))


@pytest.fixture(scope="session")
def progress(request):
    """`progress(name, total)` -> a context manager yielding `advance(n)`: a per-tokenizer bar (images/s, ETA) drawn
    on the terminal around pytest's capture; off when stderr is not a terminal or under CI."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    @contextlib.contextmanager
    def bar(name: str, total: int):
        suspend = capman.global_and_fixture_disabled if capman else contextlib.nullcontext
        with suspend():
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        if not enabled:
            yield lambda n: None
            return
        from tqdm import tqdm

        with suspend():
            pbar = tqdm(total=total, desc=name, unit="img", leave=False, file=sys.stderr)

        def advance(n: int) -> None:
            with suspend():
                pbar.update(n)
        try:
            yield advance
        finally:
            with suspend():
                pbar.close()
    return bar


@pytest.fixture(scope="session")
def image_batches(images, workers, device, request):
    """`image_batches(resolution, ids, on_bad=None)`: (ids, uint8 pixels) batches of `ids` (in dataset order),
    streamed from the files by --workers DataLoader workers, pinned on CUDA; unreadable files go to `on_bad`."""
    batch_size = request.config.getoption("batch_size")

    def batches(resolution: int, ids: list[str], on_bad=None):
        return images.batches(resolution, batch_size, ids=ids, workers=workers, pin_memory=device.type == "cuda",
                              on_bad=on_bad)
    return batches


@pytest.fixture(scope="session")
def evaluation(tokenizer, tokenizer_name, images, request, record, lpips_metric, fid_metric, text_metric, progress,
               image_batches) -> Evaluation:
    """Reconstruct the whole dataset once per tokenizer, streamed from the files; every image is recorded as soon as
    its batch is done (with its OCR details when the dataset has text boxes), every unreadable file as soon as it is
    met."""
    config = request.config
    resolution = config.getoption("resolution") or tokenizer.resolution
    save_limit = config.getoption("save_images")
    (lpips, lpips_reason), (fid, fid_reason), (text, text_reason) = lpips_metric, fid_metric, text_metric
    ids = images.ids  # from the paths: what is still to do is known before anything is decoded
    unreadable: list[str] = []
    skipped = {k: v for k, v in (("lpips", lpips_reason), ("fid", fid_reason)) if v}
    if images.annotations is not None and text_reason:
        skipped["text"] = text_reason
    spec = tokenizer.spec
    image_metrics = [*PIXEL_METRICS, "bpp"] + (["lpips"] if lpips else []) + (["text_boxes"] if text else [])
    # the boxes mapped through the same centre crop as the pixels; those it cuts are counted per image
    text_hook = text.hook(images.annotations.at(resolution)) if text else None
    needed = ({"fid_ref", "fid_rec"} if fid else set()) | ({"ids"} if spec.kind == "discrete" and spec.codebook_size
                                                            else set())
    done = record.resumable(tokenizer_name, ids=ids, resolution=resolution, image_metrics=image_metrics, stats=needed)
    todo = [i for i in ids if i not in done]
    if done:  # per image: only the missing (tokenizer, image) pairs are computed
        warnings.warn(f"{tokenizer_name}: resumed {len(done)} images from {record.report_dir}"
                      + (f"; computing the {len(todo)} missing" if todo else ""), UserWarning, stacklevel=1)
    stats_paths = {i: row["stats"] for i, row in done.items() if row.get("stats")}
    saved = sum(1 for row in done.values() if row.get("recon"))
    result = Evaluation(tokenizer_name)
    if fid is not None:
        fid.reset()

    with progress(tokenizer_name, len(todo)) as advance:
        def store(batch: BatchResult) -> None:
            nonlocal saved
            for i, image_id in enumerate(batch.ids):
                pictures = {}
                if save_limit < 0 or saved < save_limit:
                    pictures = {"recon": batch.reconstruction[i], "original": batch.original[i]}
                    saved += 1
                extra = {"seed": batch.seeds[i]} if batch.seeds is not None else {}
                if batch.text is not None and batch.text[i] is not None:
                    extra["text"] = batch.text[i]  # per-box reads: the report's table, plot and grid come from them
                if batch.statistics:  # saved before the record that points at it
                    stats_paths[image_id] = extra["stats"] = record.statistics(
                        tokenizer_name, image_id, {k: v[i] for k, v in batch.statistics.items()}, batch.codebooks)
                record.image(tokenizer=tokenizer_name, image_id=image_id, dataset=images.name, resolution=resolution,
                             metrics=batch.metrics[i], **pictures, **extra)
            advance(len(batch.ids))

        def bad(image_id: str, reason: str) -> None:  # a file that cannot be read: one line, the run goes on
            warnings.warn(reason, UserWarning, stacklevel=1)
            record.skip(tokenizer=tokenizer_name, what="image", reason=reason, image_id=image_id)
            unreadable.append(image_id)
            advance(1)

        def failed(failure: Failure) -> None:  # a failing model call: recorded with its reason, the run goes on
            if failure.kind == "batch":
                record.skip(tokenizer=tokenizer_name, what="batch", reason=failure.reason, image_ids=failure.ids)
            else:
                for image_id in failure.ids:
                    record.skip(tokenizer=tokenizer_name, what="image:failed", reason=failure.reason,
                                image_id=image_id)
            advance(len(failure.ids))

        if todo:
            result = evaluate(tokenizer, image_batches(resolution, todo, on_bad=bad), lpips=lpips, fid=fid,
                              on_batch=store, run_seed=config.getoption("seed"), on_failure=failed, reduce=False,
                              text=text_hook)
    if not done and len(unreadable) == len(ids):
        pytest.fail(f"no readable image in dataset {images.name}: {len(unreadable)} unreadable, "
                    f"{len(images.paths)} files")
    if todo and not result.per_image and not done:  # a bug that fails every batch must fail the run
        pytest.fail(f"{tokenizer_name}: every image failed: " + "; ".join(
            f"{image_id}: {reason}" for image_id, reason in result.failed.items()), pytrace=False)
    per_image = {**{i: dict(row["metrics"]) for i, row in done.items()}, **result.per_image}
    result.per_image = {i: per_image[i] for i in ids if i in per_image}
    if spec.stochastic and config.getoption("seeds") > 1:
        _other_seeds(tokenizer, tokenizer_name, image_batches, resolution, list(result.per_image), record, lpips,
                     config)
    result.skipped.update(skipped)
    _reduce(result, record.report_dir, {i: stats_paths[i] for i in result.per_image if i in stats_paths},
            resolution, fid)
    if text is not None:  # means over every box of every image (resumed or new), in image-id order as merges do
        result.text = {**{i: row["text"] for i, row in done.items() if row.get("text")}, **result.text}
        result.dataset_metrics.update(text_dataset_metrics(
            [{"text": result.text.get(i)} for i in sorted(result.per_image)], resolution))
        result.dataset_meta["text_backend"] = text.recognizer.backend
    record.dataset(tokenizer=tokenizer_name, metrics=result.dataset_metrics,
                   meta={**result.dataset_meta, "n": len(result.per_image), "dataset": images.name,
                         "resolution": resolution, "settings": tokenizer.settings})
    return result


def _other_seeds(tokenizer, name: str, image_batches, resolution: int, ids: list[str], record, lpips, config) -> None:
    """--seeds K: decode every image again with run seeds seed+1 .. seed+K-1 (each image its own generator, as in
    the main pass; its files streamed again), recorded as ``seed_image`` rows: the summary puts the between-seed
    spread next to the between-image spread; the tables keep the main pass's numbers. Resumes per (image, run seed)."""
    first = config.getoption("seed")
    for run_seed in range(first + 1, first + config.getoption("seeds")):
        todo = [i for i in ids if i not in record.seeded(name, run_seed)]

        def store(batch: BatchResult, run_seed: int = run_seed) -> None:
            for image_id, metrics in zip(batch.ids, batch.metrics, strict=True):
                record(type="seed_image", tokenizer=name, image_id=image_id, run_seed=run_seed, metrics=metrics)
        if todo:
            evaluate(tokenizer, image_batches(resolution, todo), lpips=lpips, on_batch=store, run_seed=run_seed,
                     reduce=False)


def _reduce(result: Evaluation, report_dir, stats_paths: dict[str, str], resolution: int, fid) -> None:
    """Dataset metrics from the stored per-image statistics of every image (resumed or new), in one canonical order:
    the same function `python -m reports merge` uses, so a run, its resumption and merged shards agree bit for bit."""
    if result.per_image:
        result.dataset_metrics["bpp"] = next(iter(result.per_image.values()))["bpp"]
    metrics, meta = reduce_stored_statistics(report_dir, stats_paths, pixels_per_image=resolution**2)
    result.dataset_metrics.update(metrics)
    result.dataset_meta.update(meta)
    if fid is not None and "fid" in metrics:
        result.dataset_meta.update(fid_backend=fid.backend, fid_mode=fid.mode,
                                   kid_backend="polynomial-kernel MMD^2 (torchmetrics' KID formula) on the same "
                                               "features, float64, seeded subsets")
    elif fid is not None:
        result.skipped["fid"] = str(meta.get("fid_note", "no per-image Inception features"))
