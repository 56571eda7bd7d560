"""The fixed Gemma-2-2b prompt of Tar-Lumina2: tokenised once, encoded once, cached by the de-tokenizer.

Tar feeds the DiT the penultimate hidden states of gemma-2-2b (base) for one constant instruction prompt. Upstream ran
transformers' default attention of the time, SDPA, which silently skipped Gemma-2's attention-logit soft-capping;
transformers 5 refuses SDPA for Gemma-2, so we use eager attention with soft-capping switched off, which computes
the same thing (eager with capping differs by 0.16 on the golden model).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tok.checkpoint import CheckpointError

PROMPT = ("You are an assistant designed to generate superior images with the highest degree of image alignment "
          "based on the SigLIP2 features of an original image. <Prompt Start> ")
GEMMA_HUB_ID = "google/gemma-2-2b"
MAX_PROMPT_TOKENS = 256
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def _gated_help(folder: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{folder}: {problem}. {GEMMA_HUB_ID} is gated on the Hugging Face Hub: log in with `huggingface-cli login`, "
        f"accept the licence at https://huggingface.co/{GEMMA_HUB_ID}, then pre-download it with "
        f"`huggingface-cli download {GEMMA_HUB_ID}` and pass that snapshot folder as gemma_dir")


def _check_gemma_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise _gated_help(folder, "no such folder")
    missing = [name for name, options in (("config.json", ("config.json",)), ("tokenizer", _TOKENIZER_FILES),
                                          ("weights", _WEIGHT_FILES))
               if not any((folder / f).is_file() for f in options)]
    index = folder / "model.safetensors.index.json"
    if not missing and index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as exc:
            raise _gated_help(folder, f"unreadable model.safetensors.index.json ({exc})") from exc
        missing += [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise _gated_help(folder, f"missing {', '.join(missing)}")


def load_gemma(gemma_dir: str | Path, torch_dtype: torch.dtype = torch.float32):
    """(tokenizer, Gemma2Model) from a local gemma-2-2b snapshot, loaded strictly, eval, without soft-capping."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer, Gemma2Config, Gemma2Model

    folder = Path(gemma_dir)
    _check_gemma_folder(folder)
    try:
        config = Gemma2Config.from_pretrained(folder)
        config.attn_logit_softcapping = None  # what upstream's SDPA path computed (see the module docstring)
        tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="right")
        model, info = Gemma2Model.from_pretrained(folder, config=config, dtype=torch_dtype,
                                                  attn_implementation="eager", output_loading_info=True)
    except (OSError, SafetensorError, json.JSONDecodeError) as exc:
        raise _gated_help(folder, f"unreadable ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})") \
            from exc
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise CheckpointError(f"{folder}: weights do not match Gemma2Model: {problems or info['error_msgs']}")
    return tokenizer, model.eval().requires_grad_(False)


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompt: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """(cap_feats (1, L, hidden) = hidden_states[-2], cap_mask (1, L) int64), L padded up to a multiple of 8."""
    if tokenizer.padding_side != "right":
        raise ValueError("the caption must be right-padded (the DiT keeps the first cap_mask.sum() tokens)")
    tokens = tokenizer([prompt], padding=True, pad_to_multiple_of=8, max_length=MAX_PROMPT_TOKENS, truncation=True,
                       return_tensors="pt")
    device = text_encoder.get_input_embeddings().weight.device
    out = text_encoder(input_ids=tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device),
                       output_hidden_states=True)
    return out.hidden_states[-2], tokens.attention_mask.to(device)
