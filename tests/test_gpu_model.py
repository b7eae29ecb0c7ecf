"""The whole codec on a GPU: a training step's output, codes and every gradient on each GPU backend
against the torch backend, bf16 autocast, and torch.compile with inductor. They need a GPU (their
ids carry "cuda", so benchmarks/gpu_suite.sh selects them); the CPU's versions are in test_nn.py."""
import copy

import pytest
import torch

from conftest import assert_close_to_reference, require_backend
from fastcodec.nn import CodecConfig, SoundStream, set_backend

CFG = CodecConfig(sample_rate=8000, channels=8, strides=(2, 4), code_dim=16, n_q=3, codebook_size=64)


def _model(device):
    torch.manual_seed(5)
    model = SoundStream(CFG).train().to(device)
    x = torch.randn(3, 1, 517, device=device)
    # Distinct random codewords at the latent's scale, so that no exact tie decides a code.
    with torch.no_grad():
        z = model.encoder(x)
        model.quantizer.codebooks.normal_().mul_(z.std())
        model.quantizer.initialized.fill_(True)
    return model, x


def _step(model, x, backend):
    set_backend(model, backend)
    model.zero_grad(set_to_none=True)
    out = model(x, generator=torch.Generator().manual_seed(3), return_stages=True)
    loss = out.audio.pow(2).mean() + out.quantizer.commitment_loss + sum(s.mean() for s in out.stages)
    loss.backward()
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend,device", [("triton", "cuda"), ("cuda", "cuda")], ids=["triton-cuda", "cuda-cuda"])
def test_a_training_step_on_the_gpu_matches_the_torch_backend(backend, device):
    """Output, codes and every parameter gradient of one step, fp32 (TF32 off, tests/conftest.py),
    by the tolerance rule against the torch backend in float64 on the CPU."""
    require_backend(backend, device)
    model, x = _model(device)
    m64 = copy.deepcopy(model).cpu().double()
    ref64, g64 = _step(m64, x.cpu().double(), "torch")
    ref32, g32 = _step(copy.deepcopy(model), x, "torch")
    out, g = _step(copy.deepcopy(model), x, backend)
    assert torch.equal(out.quantizer.codes.cpu(), ref64.quantizer.codes)
    assert_close_to_reference(out.audio.detach(), ref32.audio.detach(), ref64.audio.detach(), name="audio")
    for name in g64:
        assert_close_to_reference(g[name], g32[name], g64[name], factor=4.0, atol_eps=64.0, name=f"grad {name}")


@pytest.mark.parametrize("backend,device", [("triton", "cuda"), ("cuda", "cuda")], ids=["triton-cuda", "cuda-cuda"])
def test_bf16_autocast_on_the_gpu_runs_convs_low_and_the_quantizer_in_fp32(backend, device):
    require_backend(backend, device)
    model, x = _model(device)
    set_backend(model, backend)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
        assert out.audio.dtype == torch.bfloat16
    assert model.quantizer.codebooks.dtype == torch.float32
    assert out.quantizer.commitment_loss.dtype == torch.float32
    out.audio.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backend,device", [("triton", "cuda"), ("cuda", "cuda")], ids=["triton-cuda", "cuda-cuda"])
def test_inductor_compiles_the_model_on_the_gpu(backend, device):
    """torch.compile with inductor (the default compiler) takes the model, the kernels as opaque
    custom ops, and computes what eager does."""
    require_backend(backend, device)
    torch._dynamo.reset()
    model, x = _model(device)
    model.eval()
    set_backend(model, backend)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    assert torch.equal(compiled.quantizer.codes, eager.quantizer.codes)
    torch.testing.assert_close(compiled.audio, eager.audio, rtol=1e-4, atol=1e-5)
