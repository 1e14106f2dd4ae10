"""Tiny causal language models built from scratch, with no hub access: a tokenizer trained or
defined locally and a randomly initialised Llama, saved as one Hugging Face folder that
transformers, DeepSpeed and vLLM all load."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from negrl_operator.api.artifact import share_readable

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE trained on `texts` (GSM8K-like prose)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


NEWLINE_WORD = "\u23ce"  # a line break is a word of its own, so line-per-step solutions stay word-level


def word_tokenizer(words: Iterable[str]):
    """One token per whitespace-separated word, and one for each line break. Every word is read as if a
    space preceded it and decodes with that space, so " 3 17" round-trips exactly and vLLM's
    detokenisation stays faithful; a line break decodes as "\n" (" a = 1\n b" round-trips too). Runs
    of spaces count as one, and blank lines as one line break."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted({*words, NEWLINE_WORD}):
        vocab.setdefault("\u2581" + word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"\s*\n\s*"), f" {NEWLINE_WORD} "), normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("\u2581" + NEWLINE_WORD, "\n"), decoders.Replace("\u2581", " "), decoders.Fuse(),
    ])
    return tokenizer


def build_scratch_model(
    out_dir: str | Path,
    texts: Iterable[str] = (),
    *,
    words: Iterable[str] | None = None,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 512,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Save a tokenizer (word-level when `words` is given, else BPE trained on `texts`) and a random
    Llama with head_dim = hidden / heads (vLLM's CPU attention wants 64) into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    raw = word_tokenizer(words) if words is not None else bpe_tokenizer(texts, vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=max_positions,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    share_readable(out_dir)
    return out_dir
