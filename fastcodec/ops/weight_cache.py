"""`weight_cache()`: a scope in which the C++ CPU kernels keep conv weights packed between calls.

The CPU conv engine packs its weights into a tile layout on every call. When a call's work is
small - streaming one 13 ms frame, where the low-rate layers produce a handful of outputs - that
packing costs more than the arithmetic. Inside this scope a packed form is reused for as long as
the weight tensor is alive and unchanged (its version counter, address and shape are checked), so
in-place updates, an optimizer step or load_state_dict are all seen. What is not seen is a change
made through `.data` mid-scope, which bypasses the version counter: hence a scope the inference
paths (streams, Codec) enter, and training never does. Packed copies live until their weight is
freed (one per weight). The Triton convs keep their packed weights under the same rule
(triton/_weights.py); the other backends ignore the scope.
"""
from __future__ import annotations

import contextlib
import threading

from . import _extension

_scope = threading.local()  # .on: a weight_cache() scope is on in this thread


def active() -> bool:
    """Whether a weight_cache() scope is on in this thread."""
    return getattr(_scope, "on", False)


@contextlib.contextmanager
def weight_cache(enabled: bool = True):
    lib = _extension._C
    previous = lib.set_weight_cache(enabled) if lib is not None else None
    outer, _scope.on = active(), bool(enabled)
    try:
        yield
    finally:
        _scope.on = outer
        if lib is not None:
            lib.set_weight_cache(previous)
