"""`--resolution R`: the sizes each architecture accepts are data in its spec (`resolution_step`), so a size the
network cannot take is refused before anything is loaded, and the convolutional ones run at any multiple of their
downsampling factor. The usage error of `pytest bench` itself is in tests/test_bench_e2e.py."""

from __future__ import annotations

import pytest
import torch

from fixtures.tokenizers import check_resolution
from tests.helpers import shared_path
from vision_tokenizers import load
from vision_tokenizers.registry import get_spec, list_tokenizers


@pytest.mark.parametrize("name", list_tokenizers(include_tiny=True))
def test_every_builtin_says_which_sizes_it_takes(name):
    spec = get_spec(name)
    assert spec.accepts_resolution(spec.resolution)
    if spec.family in ("titok", "tatok"):  # learned position embeddings; de-tokenizers that paint one size
        assert spec.resolution_step is None and not spec.accepts_resolution(spec.resolution // 2)
        assert spec.resolutions_text == f"fixed at {spec.resolution} px"
    else:  # convolutional autoencoders: any multiple of the downsampling factor (resolution / latent side)
        assert spec.resolution_step == spec.resolution // spec.token_shape[-1]
        assert spec.accepts_resolution(3 * spec.resolution_step) and not spec.accepts_resolution(spec.resolution + 1)


def test_a_fixed_size_tokenizer_is_one_usage_error_naming_it():
    check_resolution(["magvit2_tiny", "titok_tiny"], None)
    check_resolution(["magvit2_tiny"], 32)
    check_resolution(["titok_tiny"], 64)  # its own size is no change
    with pytest.raises(pytest.UsageError) as err:
        check_resolution(["magvit2_tiny", "titok_tiny", "tatok_ardtok_tiny"], 32)
    assert str(err.value) == ("--resolution 32 does not fit titok_tiny (fixed at 64 px), tatok_ardtok_tiny (fixed at "
                              "128 px); run them without --resolution, or leave them out of --tokenizers")
    with pytest.raises(pytest.UsageError, match=r"does not fit magvit2_tiny \(multiples of 4 px\); run it without"):
        check_resolution(["magvit2_tiny"], 30)


def test_a_convolutional_tokenizer_runs_at_another_multiple_of_its_factor():
    golden = shared_path("golden")
    tokenizer = load("magvit2_tiny", weights_dir=golden, offline=True)
    pixels = torch.rand(2, 3, 32, 32)
    tokens = tokenizer.encode(pixels)
    assert tokens.shape == (2, 8, 8)  # 32 / 4
    assert tokenizer.decode(tokens).shape == (2, 3, 32, 32)
