"""Open-MAGVIT2 (LFQ) image tokenizer: networks and checkpoint loader."""

from tok.magvit2.checkpoint import CheckpointError, LoadReport, load_magvit2_checkpoint, load_magvit2_state_dict
from tok.magvit2.model import LFQ, Decoder, Encoder, Magvit2Tokenizer, depth_to_space, parameter_counts

__all__ = [
    "LFQ", "CheckpointError", "Decoder", "Encoder", "LoadReport", "Magvit2Tokenizer", "depth_to_space",
    "load_magvit2_checkpoint", "load_magvit2_state_dict", "parameter_counts",
]
