"""`bucket_batches`, `padding_waste`, `pad` and the thread-count controls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pinrel

from .test_assemble import expect_error


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = pinrel.get_num_threads()
    yield
    pinrel.set_num_threads(before)


def check_batches(
    lengths: list[int], batches: list[np.ndarray], max_tokens: int, max_batch_size: int
) -> None:
    """Every index exactly once; each batch within the token budget and the batch size."""
    seen = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in batches:
        assert b.dtype == np.int64 and b.ndim == 1 and len(b) >= 1
        assert len(b) <= max_batch_size
        assert max(lengths[i] for i in b) * len(b) <= max_tokens


# ---------------------------------------------------------------------------------------------
# bucket_batches
# ---------------------------------------------------------------------------------------------


def test_bucket_batches_basic() -> None:
    lengths = [5, 100, 7, 98, 6, 99]
    batches = pinrel.bucket_batches(lengths, max_tokens=300, max_batch_size=3)
    check_batches(lengths, batches, 300, 3)
    # Similar lengths end up together, longest batch first.
    assert [sorted(b.tolist()) for b in batches] == [[1, 3, 5], [0, 2, 4]]


def test_bucket_batches_respects_max_batch_size_and_default() -> None:
    lengths = [1] * 1000
    batches = pinrel.bucket_batches(lengths, max_tokens=10_000)
    check_batches(lengths, batches, 10_000, 256)
    assert max(len(b) for b in batches) == 256
    batches = pinrel.bucket_batches(lengths, max_tokens=10_000, max_batch_size=7)
    assert max(len(b) for b in batches) == 7


def test_bucket_batches_is_deterministic_and_stable() -> None:
    lengths = [3, 3, 3, 3]
    batches = pinrel.bucket_batches(lengths, max_tokens=6)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_bucket_batches_numpy_input(dtype: Any) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 512, size=2000)
    arr = lengths.astype(dtype)
    batches = pinrel.bucket_batches(arr, max_tokens=8192, max_batch_size=64)
    check_batches(lengths.tolist(), batches, 8192, 64)
    assert [b.tolist() for b in batches] == [
        b.tolist() for b in pinrel.bucket_batches(lengths.tolist(), 8192, 64)
    ]
    # A strided view is as good as a contiguous array.
    view = arr[::2]
    check_batches(view.astype(np.int64).tolist(), pinrel.bucket_batches(view, 8192, 64), 8192, 64)


def test_zero_lengths_count_as_one_token() -> None:
    batches = pinrel.bucket_batches([0, 0, 0], max_tokens=2)
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2]
    assert all(len(b) <= 2 for b in batches)


def test_bucketing_wastes_less_than_arrival_order() -> None:
    rng = np.random.default_rng(1)
    lengths = np.minimum(rng.lognormal(4, 1, size=5000).astype(np.int64) + 1, 512)
    bucketed = pinrel.bucket_batches(lengths, max_tokens=16 * 512, max_batch_size=16)
    arrival = [np.arange(i, min(i + 16, len(lengths))) for i in range(0, len(lengths), 16)]
    waste_bucketed = pinrel.padding_waste(lengths, bucketed)
    waste_arrival = pinrel.padding_waste(lengths, arrival)
    assert waste_bucketed < 0.05
    assert waste_bucketed * 5 < waste_arrival


@pytest.mark.parametrize(
    ("lengths", "kwargs", "exc", "fragment"),
    [
        (None, {}, TypeError, "lengths"),
        ("123", {}, TypeError, "lengths"),
        ([], {}, ValueError, "lengths"),
        (np.array([], dtype=np.int64), {}, ValueError, "lengths"),
        ([1, -2], {}, ValueError, "lengths[1]"),
        ([1, 2, float("nan")], {}, ValueError, "lengths[2]"),
        ([1, 2.0], {}, TypeError, "lengths[1]"),
        ([1, True], {}, TypeError, "lengths[1]"),
        ([1, None], {}, TypeError, "lengths[1]"),
        ([1, "2"], {}, TypeError, "lengths[1]"),
        ([1, 2**80], {}, ValueError, "lengths[1]"),
        (np.array([1, -2]), {}, ValueError, "lengths[1]"),
        (np.array([1.0, np.nan]), {}, ValueError, "lengths[1]"),
        (np.array([1.0, 2.0, np.inf]), {}, ValueError, "lengths[2]"),
        (np.array([1.0, -np.inf]), {}, ValueError, "lengths[1]"),
        (np.array([1.5]), {}, ValueError, "lengths[0]"),
        (np.array([-1.0]), {}, ValueError, "lengths[0]"),
        (np.array([True, False]), {}, TypeError, "lengths"),
        (np.array([[1, 2]]), {}, TypeError, "lengths"),
        (np.array(["1"]), {}, TypeError, "lengths"),
        ([1, 2, 30, 4, 50], {}, ValueError, "lengths[2]"),
        ([1], {"max_tokens": 0}, ValueError, "max_tokens"),
        ([1], {"max_tokens": -8}, ValueError, "max_tokens"),
        ([1], {"max_tokens": float("nan")}, ValueError, "max_tokens"),
        ([1], {"max_tokens": 8.0}, TypeError, "max_tokens"),
        ([1], {"max_tokens": None}, TypeError, "max_tokens"),
        ([1], {"max_tokens": True}, TypeError, "max_tokens"),
        ([1], {"max_batch_size": 0}, ValueError, "max_batch_size"),
        ([1], {"max_batch_size": -1}, ValueError, "max_batch_size"),
        ([1], {"max_batch_size": float("inf")}, TypeError, "max_batch_size"),
    ],
)
def test_bucket_batches_rejects_bad_input(
    lengths: Any, kwargs: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    args = {"max_tokens": 20, **kwargs}
    expect_error(exc, fragment, pinrel.bucket_batches, lengths, **args)


def test_too_long_sequence_names_its_index_and_the_budget() -> None:
    msg = expect_error(ValueError, "lengths[3]", pinrel.bucket_batches, np.array([1, 2, 3, 99]), 50)
    assert "99" in msg and "50" in msg


# ---------------------------------------------------------------------------------------------
# padding_waste and pad
# ---------------------------------------------------------------------------------------------


def test_padding_waste() -> None:
    assert pinrel.padding_waste([1, 2, 3], [[0, 1], [2]]) == pytest.approx(1 / 7)
    assert pinrel.padding_waste([4, 4], [[0, 1]]) == 0.0
    assert pinrel.padding_waste([0, 0], [[0, 1]]) == 0.0
    assert pinrel.padding_waste(np.array([1, 3]), [np.array([0, 1])]) == pytest.approx(2 / 6)
    expect_error(ValueError, "batches[0]", pinrel.padding_waste, [1, 2, 3], [[0, 5]])
    # Not a batching: an index counted twice would pad a sequence that is there once.
    expect_error(
        ValueError,
        "batches[1]: index 0 appears twice (first in batches[0])",
        pinrel.padding_waste,
        [1, 2],
        [[0], [0, 1]],
    )
    expect_error(ValueError, "batches[0]: index 1 appears twice", pinrel.padding_waste, [1, 2], [[1, 1]])
    # The element is named by its place in `batches` (it was "lengths[0]"), and a wrong type stays a
    # TypeError (it was re-wrapped as a ValueError).
    expect_error(ValueError, "batches[0][0]: must be >= 0", pinrel.padding_waste, [1, 2, 3], [[-1]])
    expect_error(TypeError, "batches[1][0]: expected int", pinrel.padding_waste, [1, 2, 3], [[0], ["x"]])
    expect_error(TypeError, "batches", pinrel.padding_waste, [1, 2, 3], None)


def test_pad_shapes_dtypes_and_mask() -> None:
    ids, mask = pinrel.pad([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 3)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, mask = pinrel.pad(
        [np.array([5, 6], dtype=np.int64), [7], np.arange(10, dtype=np.int64)[::3]], pad_id=-1
    )
    assert ids.tolist() == [[5, 6, -1, -1], [7, -1, -1, -1], [0, 3, 6, 9]]
    assert mask.sum(axis=1).tolist() == [2, 1, 4]
    assert ids.flags.c_contiguous
    ids, mask = pinrel.pad([[], []])
    assert ids.shape == (2, 1) and mask.tolist() == [[0], [0]]
    ids, _ = pinrel.pad([[2**63 - 1, -(2**63)]])
    assert ids.tolist() == [[2**63 - 1, -(2**63)]]


@pytest.mark.parametrize(
    ("rows", "kwargs", "exc", "fragment"),
    [
        (None, {}, TypeError, "token_id_lists"),
        ([], {}, ValueError, "token_id_lists"),
        ([None], {}, TypeError, "token_id_lists[0]"),
        ([[1], "abc"], {}, TypeError, "token_id_lists[1]"),
        ([[1, 2], [3, "4"]], {}, TypeError, "token_id_lists[1][1]"),
        ([[1, True]], {}, TypeError, "token_id_lists[0][1]"),
        ([[1.0]], {}, TypeError, "token_id_lists[0][0]"),
        ([[2**63]], {}, ValueError, "token_id_lists[0][0]"),
        ([[1]], {"pad_id": "x"}, TypeError, "pad_id"),
        ([[1]], {"pad_id": None}, TypeError, "pad_id"),
        ([[1]], {"pad_id": 1.5}, TypeError, "pad_id"),
        ([[1]], {"pad_id": 2**70}, ValueError, "pad_id"),
    ],
)
def test_pad_rejects_bad_input(
    rows: Any, kwargs: dict[str, Any], exc: type[Exception], fragment: str
) -> None:
    expect_error(exc, fragment, pinrel.pad, rows, **kwargs)


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------


def test_set_and_get_num_threads(restore_threads: None) -> None:
    pinrel.set_num_threads(1)
    assert pinrel.get_num_threads() == 1
    pinrel.set_num_threads(3)
    assert pinrel.get_num_threads() == 3
    # Work still runs, with the same result, on a resized pool.
    assert pinrel.assemble([{"title": "x"}]) == ["title: x"]


@pytest.mark.parametrize(
    ("value", "in_force"), [("3", 3), (" 2 ", 2), ("abc", None), ("0", None), ("5000", None)]
)
def test_serving_reads_pinrel_num_threads_as_the_core_does(
    restore_threads: None, monkeypatch: pytest.MonkeyPatch, value: str, in_force: int | None
) -> None:
    """A value the Rust core ignores (not a count from 1 to 1024) used to count as set in serving,
    which then left the pool at every CPU instead of the replica's reserved ones."""
    import warnings

    import torch

    from pinrel._native import env_num_threads
    from pinrel.serving import configure_threads

    monkeypatch.setenv("PINREL_NUM_THREADS", value)
    torch_threads = torch.get_num_threads()
    assert env_num_threads() == in_force
    pinrel.set_num_threads(4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure_threads(1)
    torch.set_num_threads(torch_threads)
    if in_force is None:
        assert pinrel.get_num_threads() == 1
        assert any("PINREL_NUM_THREADS" in str(w.message) for w in caught)
    else:
        assert pinrel.get_num_threads() == 4  # the variable is the user's choice, left to the core
        assert not caught


def _pool_thread_ids() -> set[int]:
    ids = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("pinrel-"):
                ids.add(int(task.name))
        except OSError:
            pass  # a thread that exited meanwhile
    return ids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see threads")
def test_switching_back_to_a_pool_size_reuses_its_threads(restore_threads: None) -> None:
    # Spawning a fresh pool on every resize made code that alternates sizes (the hashing bench
    # did) pay for new threads, cold stacks and allocator arenas on every call.
    pinrel.set_num_threads(2)
    pinrel.assemble([{"title": "x"}] * 64)
    pinrel.set_num_threads(1)
    pinrel.assemble([{"title": "x"}] * 64)
    before = _pool_thread_ids()
    for n in (2, 1, 2, 1, 2):
        pinrel.set_num_threads(n)
        assert pinrel.get_num_threads() == n
        assert pinrel.assemble([{"title": "x"}] * 64) == ["title: x"] * 64
    assert _pool_thread_ids() == before and len(before) >= 3


@pytest.mark.parametrize(
    ("n", "exc"),
    [(0, ValueError), (-1, ValueError), (10**6, ValueError), (None, TypeError), (2.0, TypeError)],
)
def test_set_num_threads_rejects_bad_values(n: Any, exc: type[Exception], restore_threads: None) -> None:
    before = pinrel.get_num_threads()
    expect_error(exc, "n", pinrel.set_num_threads, n)
    assert pinrel.get_num_threads() == before


def test_huge_lengths_do_not_wrap() -> None:
    # usize arithmetic wrapped: two 2^63 lengths and a 1 reported a waste of 1.0, two usize::MAX 0.0.
    big = 2**63
    assert pinrel.padding_waste([big, big, 1], [[0, 1, 2]]) == pytest.approx((big - 1) / (3 * big))
    assert pinrel.padding_waste([2**64 - 1] * 2, [[0, 1]]) == 0.0
    # 2 x 2^63 slots exceed any max_tokens: the two cannot share a batch.
    assert [b.tolist() for b in pinrel.bucket_batches([big, big], 2**64 - 1)] == [[0], [1]]
