"""vtok-bench: a unified interface to image tokenizers, with metrics and reports."""

from vision_tokenizers.base import BaseTokenizer, VisionTokenizer
from vision_tokenizers.plugins import PluginError, load_plugin
from vision_tokenizers.registry import REGISTRY, RegistrationError, get_spec, list_tokenizers, load, register_tokenizer
from vision_tokenizers.spec import TokenizerSpec, WeightFile
from vision_tokenizers.weights import WeightsUnavailable

__all__ = [
    "REGISTRY", "BaseTokenizer", "PluginError", "RegistrationError", "TokenizerSpec", "VisionTokenizer", "WeightFile",
    "WeightsUnavailable", "get_spec", "list_tokenizers", "load", "load_plugin", "register_tokenizer",
]
__version__ = "0.1.0"
