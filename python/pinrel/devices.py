"""Which torch device a model runs on, checked before any weights are loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: Any) -> torch.device:
    """`device` ("cpu", "cuda", "cuda:1" or a torch.device) as a torch.device; None is the first GPU
    when one is visible, else the CPU.

    A name torch does not know, or a GPU this machine does not have, is a ValueError naming it here:
    torch would only fail once the weights are loaded and moved, with its own traceback."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device: expected a str or torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: {str(device)!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible == 0:
            raise ValueError(f"device: {str(device)!r} asks for a GPU, but no CUDA GPU is visible")
        if dev.index is not None and dev.index >= visible:
            raise ValueError(f"device: {str(device)!r}, but only {visible} CUDA GPU(s) are visible")
    elif dev.type == "meta":
        raise ValueError("device: 'meta' holds shapes without data; a model cannot score there")
    elif dev.type != "cpu":
        try:  # mps, xpu, ...: whether this torch build and machine have one
            torch.empty(1, device=dev)
        except (RuntimeError, AssertionError, NotImplementedError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"device: {str(device)!r} is not usable here ({first})") from None
    return dev
