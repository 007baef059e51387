"""Build the tiny random-weight models the interop suite runs the engines on.

Writes two Hugging Face model folders (``gpt2`` and ``llama``) under the output directory, each with
its config, safetensors weights, generation config and a word-level tokenizer built here from a few
sentences. Nothing is downloaded: the tokenizer is assembled in-process with ``tokenizers`` and the
weights come from a fixed torch seed, so the same command always writes the same files.

Usage: ``python scripts/interop/make_models.py OUT_DIR``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB_SIZE = 1000
SEED = 1234
# Larger than the usual 0.02 so that the greedy top-1 logit is well separated from the runner-up:
# bit-level differences between two correct implementations must not flip a greedy token.
INIT_RANGE = 0.3
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a tiny model runs on the cpu backend of the engine",
    "hello world this is a test of greedy decoding",
    "large language models predict the next token from the previous ones",
    "the backend provides kernels attention and memory to the engine",
    "once upon a time there was a small random network",
]
# Stamp written beside the models; run.sh rebuilds them when it changes.
FORMAT_VERSION = "1"


def build_tokenizer() -> Any:
    """Build a whitespace word-level tokenizer with exactly ``VOCAB_SIZE`` entries.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` wrapping the tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    # Fill the vocabulary up to the model's size so that every id the model can emit decodes.
    learned = tok.get_vocab_size()
    tok.add_tokens([f"w{i}" for i in range(VOCAB_SIZE - learned)])
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} entries, expected {VOCAB_SIZE}")
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def model_configs(tokenizer: Any) -> dict[str, Any]:
    """Return the two model configurations, keyed by folder name.

    Args:
        tokenizer: The shared tokenizer (its special-token ids go into the configs).

    Returns:
        ``{"gpt2": GPT2Config, "llama": LlamaConfig}``.
    """
    from transformers import GPT2Config, LlamaConfig

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    gpt2 = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=INIT_RANGE,
        **ids,
    )
    llama = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=INIT_RANGE,
        tie_word_embeddings=False,
        **ids,
    )
    return {"gpt2": gpt2, "llama": llama}


def build(out_dir: Path) -> list[Path]:
    """Write both models with their tokenizer under ``out_dir``.

    Args:
        out_dir: Destination folder (created if missing).

    Returns:
        The model folders written.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer()
    written = []
    for name, config in model_configs(tokenizer).items():
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.eval()
        dest = out_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            do_sample=False,
        )
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
        written.append(dest)
    (out_dir / "STAMP.json").write_text(json.dumps({"format": FORMAT_VERSION, "seed": SEED, "vocab": VOCAB_SIZE}))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder that receives gpt2/ and llama/")
    args = parser.parse_args(argv)
    for path in build(args.out_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
