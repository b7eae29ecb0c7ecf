"""The Triton conv launchers' host-side rules: fp32 precision from the torch flag, int64 offsets
where an item can pass 2^31 elements, a grid that takes any batch, and weights packed once."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import require_backend
from fastcodec import ops

ROOT = Path(__file__).resolve().parents[1]


def _triton():
    require_backend("triton", "cpu")
    from fastcodec.ops.triton import _launch, _weights, conv

    return _launch, _weights, conv


def test_fp32_conv_precision_follows_the_cudnn_tf32_flag(monkeypatch):
    _launch, _, _ = _triton()
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert _launch.conv_precision(torch.float32) == "tf32"
    assert _launch.precision_for(torch.float32) == "ieee"  # the searches stay exact: codes must not move
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert _launch.conv_precision(torch.float32) == "ieee"
    for dtype in (torch.float16, torch.bfloat16):
        assert _launch.conv_precision(dtype) == "tf32"  # 16-bit products are exact on tensor cores


def test_tf32_convs_take_tensor_core_tiles_and_exact_ones_the_fma_tiles():
    _, _, conv = _triton()
    exact = conv.conv_config(256, 256, 4096, torch.float32, "ieee")
    tf32 = conv.conv_config(256, 256, 4096, torch.float32, "tf32")
    half = conv.conv_config(256, 256, 4096, torch.float16)
    assert (exact["BLOCK_CO"], exact["BLOCK_T"]) == (32, 32)
    assert (tf32["BLOCK_CO"], tf32["BLOCK_T"]) == (half["BLOCK_CO"], half["BLOCK_T"]) == (64, 64)
    assert tf32["BLOCK_CI"] == 16 and half["BLOCK_CI"] == 32


def test_int64_offsets_only_where_an_item_can_pass_int32():
    _launch, _, _ = _triton()
    # A 32-channel layer at 24 kHz on 48 minutes of audio, whole (Codec.encode passes it so).
    T = 48 * 60 * 24000
    assert _launch.needs_int64((32, T), (T, 1), (32 * T, 1))
    assert not _launch.needs_int64((32, 24000), (24000, 1), (64 * 24000, 1))
    assert _launch.needs_int64((2, 2 ** 31), (5, 1))  # a wide channel stride alone
    assert not _launch.needs_int64((0, 2 ** 40), (5, 1))  # an empty dimension reads nothing


def test_the_grid_takes_any_batch():
    _, _, conv = _triton()
    assert conv.grid_for(100_000 * 3, 4) == (300_000, 4)  # the batch was grid axis 2, capped at 65535
    with pytest.raises(ValueError, match="split the batch"):
        conv.grid_for(2 ** 31, 1)


def test_a_batch_item_past_int32_reads_the_right_samples():
    """An input whose channel stride puts a batch item's samples 2^31 elements apart (a 6 GiB
    virtual buffer, almost none of it touched): int32 offsets wrap there and read wild memory, so
    this runs in a child process where a crash is a failure, not the end of the test run."""
    _triton()
    code = textwrap.dedent("""
        import torch
        from fastcodec import ops
        base = torch.empty(3 * 2 ** 30 + 64, dtype=torch.float16)
        x = base.as_strided((1, 3, 40), (0, 2 ** 30, 1))
        x.copy_(torch.randn(1, 3, 40).half())
        w, b = torch.randn(5, 3, 3).half(), torch.randn(5).half()
        y = ops.causal_conv1d(x, w, b, activation="elu", backend="triton")
        ref = ops.causal_conv1d_ref(x.float(), w.float(), b.float(), activation="elu")
        err = (y.float() - ref).abs().max().item()
        assert err < 2e-2 * ref.abs().max().item(), err
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout[-500:], r.stderr[-2000:])


@pytest.mark.parametrize("transposed", [False, True])
def test_weights_are_packed_once_inside_the_cache_scope_and_follow_in_place_changes(transposed):
    _, _weights, _ = _triton()
    w = torch.randn(6, 5, 3)
    fresh = _weights.packed(w, transposed)
    assert fresh.is_contiguous() and fresh.shape == ((3, 5, 6) if transposed else (3, 6, 5))
    assert torch.equal(fresh, w.permute(2, 1, 0) if transposed else w.permute(2, 0, 1))
    assert _weights.packed(w, transposed).data_ptr() != fresh.data_ptr()  # outside the scope: per call
    with ops.weight_cache():
        kept = _weights.packed(w, transposed)
        assert _weights.packed(w, transposed) is kept
        with torch.no_grad():
            w.mul_(2)
        again = _weights.packed(w, transposed)
        assert again is not kept and torch.equal(again, 2 * fresh)
    with torch.inference_mode():
        wi = torch.randn(6, 5, 3)
    with ops.weight_cache():  # no version counter: never kept
        assert _weights.packed(wi, transposed) is not _weights.packed(wi, transposed)


def test_a_conv_inside_the_cache_scope_sees_an_updated_weight():
    _triton()
    x, w = torch.randn(2, 5, 29), torch.randn(4, 5, 3)
    wt = torch.randn(5, 4, 4)
    with ops.weight_cache():
        for _ in range(2):
            torch.testing.assert_close(ops.causal_conv1d(x, w, backend="triton"), ops.causal_conv1d_ref(x, w))
            torch.testing.assert_close(ops.causal_conv_transpose1d(x, wt, stride=2, backend="triton"),
                                       ops.causal_conv_transpose1d_ref(x, wt, stride=2))
            with torch.no_grad():
                w.add_(0.5)
                wt.add_(0.5)
