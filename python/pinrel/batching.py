"""Length-bucketed batching and padding for transformer inference."""

from __future__ import annotations

from ._native import bucket_batches, get_num_threads, pad, padding_waste, set_num_threads

__all__ = ["bucket_batches", "get_num_threads", "pad", "padding_waste", "set_num_threads"]
