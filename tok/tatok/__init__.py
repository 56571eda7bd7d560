"""TA-Tok (csuhan/Tar 47da8e1): SigLIP encoder + SimVQ codebook + Siglip2 feature decoder."""

from tok.tatok.bottleneck import Bottleneck, SimVectorQuantizer
from tok.tatok.config import (
    BUILTIN_TEACHERS,
    IGNORED_ARGS,
    SO400M_TEACHER,
    SO400M_VISION_CONFIG,
    TATokConfig,
    resolve_teacher_vision,
)
from tok.tatok.model import TATok

__all__ = [
    "BUILTIN_TEACHERS", "IGNORED_ARGS", "SO400M_TEACHER", "SO400M_VISION_CONFIG", "Bottleneck", "SimVectorQuantizer",
    "TATok", "TATokConfig", "resolve_teacher_vision",
]
