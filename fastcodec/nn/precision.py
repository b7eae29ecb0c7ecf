"""Precision under autocast, for the modules and the training losses.

- autocast_dtype(x): the dtype autocast would run a conv on x's device in (None when off). The
  fused ops are custom ops, which autocast does not cast: the layers cast for it
  (cast_for_autocast), so a model under `torch.autocast` computes its convs in the low-precision
  dtype as nn.Conv1d would.
- full_precision(): autocast off on the CPU and CUDA, for what must stay fp32 (codebook statistics
  and distances, spectral losses).
"""
from __future__ import annotations

import contextlib

import torch


def autocast_dtype(x: torch.Tensor):
    """The dtype autocast would run a conv in on x's device, or None when autocast is off there."""
    dev = x.device.type
    if dev not in ("cpu", "cuda") or not _autocast_on(dev):
        return None
    if _AUTOCAST_BY_DEVICE:
        return torch.get_autocast_dtype(dev)
    return torch.get_autocast_cpu_dtype() if dev == "cpu" else torch.get_autocast_gpu_dtype()  # torch < 2.4


try:  # torch >= 2.4 takes a device type
    torch.is_autocast_enabled("cpu")
    _AUTOCAST_BY_DEVICE = True
except TypeError:
    _AUTOCAST_BY_DEVICE = False


def cast_for_autocast(x, *tensors):
    """x and the layer's parameters in the autocast dtype (when autocast is on), else as they are."""
    dt = autocast_dtype(x)
    if dt is None:
        dt = x.dtype
    return [None if t is None else t.to(dt) for t in (x,) + tensors]


def _autocast_on(device: str) -> bool:
    if _AUTOCAST_BY_DEVICE:
        return torch.is_autocast_enabled(device)
    return torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled()


def full_precision():
    """Autocast off (CPU and CUDA): what runs inside stays in the dtype it is given (fp32). Where
    autocast is off already, a no-op (a stream's frame enters this once per call)."""
    on = [d for d in ("cpu", "cuda") if _autocast_on(d)]
    if not on:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for device in on:
        stack.enter_context(torch.autocast(device_type=device, enabled=False))
    return stack
