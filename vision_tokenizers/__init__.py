"""vtok-bench: a unified interface to image tokenizers, with metrics and reports."""

from vision_tokenizers.base import BaseTokenizer, VisionTokenizer
from vision_tokenizers.registry import SPECS, get_spec, list_tokenizers, load
from vision_tokenizers.spec import TokenizerSpec, WeightFile
from vision_tokenizers.weights import WeightsUnavailable

__all__ = [
    "SPECS", "BaseTokenizer", "TokenizerSpec", "VisionTokenizer", "WeightFile", "WeightsUnavailable",
    "get_spec", "list_tokenizers", "load",
]
__version__ = "0.1.0"
