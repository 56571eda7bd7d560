"""Command-line options of the benchmark. Only options live here; the logic is in fixtures/ and reports/."""

from __future__ import annotations

import os


def pytest_addoption(parser) -> None:
    group = parser.getgroup("vtok", "vision tokenizer benchmark")
    group.addoption("--tokenizers", default="all",
                    help="comma-separated tokenizer names, 'all' (the published set + extras) or 'tiny' (test models)")
    group.addoption("--plugin", action="append", default=[], metavar="MODULE_OR_FILE.py",
                    help="import a plug-in that registers tokenizers (repeatable; also env VTOK_PLUGINS and installed "
                         "entry points in group vtok.tokenizers)")
    group.addoption("--dataset", default="samples",
                    help="samples (photos bundled with scikit-image) | coco (VTOK_COCO or data/coco/val2017) | "
                         "imagenet (the ILSVRC2012 validation set: --dataset-dir or VTOK_IMAGENET) | "
                         "textsizes (built-in text pages with text boxes: T-ACC / T-NED) | "
                         "PATH (an annotations.json beside the images adds text fidelity)")
    group.addoption("--dataset-dir", default=None,
                    help="the folder of --dataset imagenet (50,000 ILSVRC2012_val_*.JPEG, flat or in synset folders; "
                         "instead of VTOK_IMAGENET) or coco (instead of VTOK_COCO)")
    group.addoption("--workers", type=int, default=None,
                    help="DataLoader workers decoding and cropping images while the model runs (default: min(8, CPU "
                         "count); 0: in the test process); results do not depend on it")
    group.addoption("--num-images", type=int, default=None,
                    help="use the first N images in the dataset's order (a folder: sorted by path; samples and coco: "
                         "their listed order)")
    group.addoption("--resolution", type=int, default=None,
                    help="run at this size instead of each tokenizer's own, where the architecture allows (a "
                         "tokenizer whose input size is fixed is refused up front)")
    group.addoption("--device", default="cpu", help="cpu | cuda | cuda:N")
    group.addoption("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    group.addoption("--batch-size", type=int, default=4)
    group.addoption("--weights-dir", default=os.environ.get("VTOK_WEIGHTS", "model_weights"),
                    help="folder searched for weights before any download (env VTOK_WEIGHTS)")
    group.addoption("--report-dir", default=None,
                    help="where JSONL, tables, plots and grids go (default results/<timestamp>/, results/latest)")
    group.addoption("--save-images", type=int, default=16,
                    help="save the first N reconstructions (and originals) as PNG for the grids; -1 saves all")
    group.addoption("--thresholds", default=None, help="YAML file of per-tokenizer quality gates")
    group.addoption("--seed", type=int, default=0,
                    help="run seed of sampling de-tokenizers; each image is seeded from (seed, image id)")
    group.addoption("--preset", default=None,
                    help="named generation settings for sampling de-tokenizers (e.g. 'upstream'), where defined")
    group.addoption("--gen", default="",
                    help="generation settings as key=value,... (e.g. steps=28,top_k=0), applied where a tokenizer "
                         "has that setting")
    group.addoption("--sweep", default="",
                    help="run each sampling tokenizer that has the setting once per value, e.g. steps=10,28,50; "
                         "results are named <tokenizer>@steps=<value> and the report plots quality against it")
    group.addoption("--native", action="store_true", default=False,
                    help="score de-tokenizers that paint above the benchmark resolution (Lumina2: 1024 px) at their "
                         "own size against a crop of that size, instead of after the published LANCZOS downscale")
    group.addoption("--shard", default=None,
                    help="run shard i of N (1-based, e.g. 1/2): the files dealt by the sha256 of their id, whatever "
                         "order they are listed in; `python -m reports merge DIR... --out OUT` combines the shards. "
                         "auto: this Slurm array task's shard, else this torchrun rank's (under torchrun every rank "
                         "takes shard RANK+1 of WORLD_SIZE by itself)")
    group.addoption("--seeds", type=int, default=1,
                    help="decodes per image for sampling de-tokenizers (run seeds seed..seed+K-1); the summary shows "
                         "the between-seed spread next to the between-image spread")
    group.addoption("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples (over images, seeded) for the 95%% confidence intervals; 0: none")
    group.addoption("--offline", action="store_true", default=False,
                    help="never download: weights must be in --weights-dir or the hub cache")
    group.addoption("--random-weights", action="store_true", default=False,
                    help="speed without weights: build each tokenizer at its released size with random weights (no "
                         "file read or downloaded) and run the speed tests only; quality tests are deselected and "
                         "timings are marked random_weights")
