"""ops.weight_cache(): inside the scope the C++ CPU kernels keep packed conv weights and codebooks
between calls, and must still see every change to them."""
import pytest
import torch
from conftest import require_backend

from fastcodec import ops


@pytest.fixture(autouse=True)
def _cpp():
    require_backend("cpp", "cpu")


@pytest.mark.parametrize("T", [5, 40])  # the skinny-sgemm path reads weights as they are; the engine packs them
def test_weight_cache_sees_every_change(T):
    x = torch.randn(2, 6, T)
    w = torch.randn(5, 6, 7)
    wt = torch.randn(6, 5, 8)
    with torch.no_grad(), ops.weight_cache():
        for step in range(4):
            for _ in range(2):  # the second call is served from the cache
                y = ops.causal_conv1d(x, w, backend="cpp")
                torch.testing.assert_close(y, ops.causal_conv1d_ref(x, w), rtol=1e-5, atol=1e-5)
                z = ops.causal_conv_transpose1d(x, wt, stride=4, backend="cpp")
                torch.testing.assert_close(z, ops.causal_conv_transpose1d_ref(x, wt, stride=4), rtol=1e-5,
                                           atol=1e-5)
            if step == 0:
                w.mul_(-2.0)            # in place: the version counter moves
                wt.add_(1.0)
            elif step == 1:
                w = torch.randn(5, 6, 7)  # a new tensor, perhaps where the old one lived
                wt = torch.randn(6, 5, 8)
            else:
                w[:, :, 0] = 3.0        # through a view: views share the version counter
                wt[0] = -1.0


def test_weight_cache_is_scoped():
    x, w = torch.randn(1, 4, 50), torch.randn(3, 4, 5)
    with torch.no_grad():
        ops.causal_conv1d(x, w, backend="cpp")
        w.data.mul_(2.0)  # outside a scope nothing is cached, so even this is seen
        torch.testing.assert_close(ops.causal_conv1d(x, w, backend="cpp"), ops.causal_conv1d_ref(x, w),
                                   rtol=1e-5, atol=1e-5)
        with ops.weight_cache():
            with ops.weight_cache(False):  # nested scopes restore the outer setting
                pass
            ops.causal_conv1d(x, w, backend="cpp")
        from fastcodec.ops import _extension

        assert _extension._C.set_weight_cache(False) is False  # the scope ended: off again


def test_codebook_cache_sees_every_change():
    x = torch.randn(37, 16)
    cbs = torch.randn(4, 50, 16)
    with torch.no_grad(), ops.weight_cache():
        for step in range(3):
            for n_q in (4, 2, 4):  # one cached packing serves every n_q
                codes, q = ops.rvq_encode(x, cbs, n_q, backend="cpp")
                ref_codes, ref_q = ops.rvq_encode_ref(x, cbs, n_q)
                assert torch.equal(codes, ref_codes)
                torch.testing.assert_close(q, ref_q)
            if step == 0:
                cbs[1].mul_(0.5)   # an EMA update or a dead-code reseed: in place
            else:
                cbs = torch.randn(4, 50, 16)
