"""AR-DTok (Tar's autoregressive de-tokenizer: TA-Tok features -> LlamaGen VQ-16 codes), written from scratch."""

from tok.ar_dtok.config import AR_DTOK_SIZES, IGNORED_ARGS, ARDTokConfig, find_multiple
from tok.ar_dtok.model import ARDTok, KVCache
from tok.ar_dtok.sampling import code_probs, draw, top_k_top_p_filter

__all__ = [
    "AR_DTOK_SIZES", "IGNORED_ARGS", "ARDTok", "ARDTokConfig", "KVCache", "code_probs", "draw", "find_multiple",
    "top_k_top_p_filter",
]
