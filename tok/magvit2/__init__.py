"""Open-MAGVIT2 (LFQ) image tokenizer: networks and checkpoint loader."""

from tok.checkpoint import CheckpointError
from tok.magvit2.checkpoint import (
    LoadReport,
    load_magvit2_checkpoint,
    load_magvit2_state_dict,
    read_config,
)
from tok.magvit2.model import LFQ, Decoder, Encoder, Magvit2Tokenizer, depth_to_space, parameter_counts

__all__ = [
    "LFQ", "CheckpointError", "Decoder", "Encoder", "LoadReport", "Magvit2Tokenizer", "depth_to_space",
    "load_magvit2_checkpoint", "load_magvit2_state_dict", "parameter_counts", "read_config",
]
