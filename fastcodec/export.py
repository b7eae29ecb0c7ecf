"""A trained codec as ONNX graphs, to run where PyTorch is not installed.

    python -m fastcodec export CHECKPOINT OUTDIR [--n-q N] [--opset K]

writes into OUTDIR:
- encoder.onnx: audio [B, 1, T] (float32 at the codec's rate, any T >= 1) -> codes [B, n_q, F]
  int64, F = ceil(T / hop), the residual VQ search inside the graph;
- decoder.onnx: codes [B, n_q, F] int64 in [0, K) -> audio [B, 1, F * hop] float32;
- codec.json: the rate, hop, codebook size, n_q, the model's fingerprint (the one `.fcdc` files
  carry) and each graph's inputs and outputs.

The graphs are traced from the model on the `torch` backend, so no fastcodec kernel (custom op)
reaches them, through PyTorch's TorchScript-based exporter (torch.onnx.export with dynamo=False):
the one path from torch 2.4 to 2.14 that needs neither onnxscript nor a graph break per layer.
onnx and onnxruntime (the `[onnx]` extra) are imported only here.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

FORMAT = "fastcodec-onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17  # onnxruntime >= 1.11 runs it; torch 2.4's TorchScript exporter writes it
GRAPHS = ("encoder.onnx", "decoder.onnx")


class ExportError(Exception):
    """The export could not be made or did not reproduce the model; nothing was left in OUTDIR."""


class EncoderGraph(nn.Module):
    """audio [B, 1, T] -> codes [B, n_q, ceil(T / hop)]: the model's encoder, then at each stage the
    code minimising ||c||^2 - 2 r.c (ops.rvq_encode's rule, first index on ties) and r -= c."""

    def __init__(self, model, n_q: int):
        super().__init__()
        self.encoder = model.encoder
        self.register_buffer("codebooks", model.quantizer.codebooks[:n_q].detach().float().clone())
        self.register_buffer("code_norms", self.codebooks.pow(2).sum(-1))  # [n_q, K]

    def forward(self, audio):
        r = self.encoder(audio).transpose(1, 2)  # [B, F, D]
        codes = []
        for i in range(self.codebooks.shape[0]):
            cb = self.codebooks[i]
            k = torch.argmin(self.code_norms[i] - 2.0 * (r @ cb.t()), dim=-1)  # [B, F]
            r = r - cb[k]
            codes.append(k)
        return torch.stack(codes, 1)


class DecoderGraph(nn.Module):
    """codes [B, n_q, F] -> audio [B, 1, F * hop]: the chosen codewords summed in stage order (as
    rvq_decode), then the model's decoder."""

    def __init__(self, model, n_q: int):
        super().__init__()
        self.decoder = model.decoder
        self.register_buffer("codebooks", model.quantizer.codebooks[:n_q].detach().float().clone())

    def forward(self, codes):
        z = self.codebooks[0][codes[:, 0]]  # [B, F, D]
        for i in range(1, self.codebooks.shape[0]):
            z = z + self.codebooks[i][codes[:, i]]
        return self.decoder(z.transpose(1, 2))


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): "
                          f"pip install 'fastcodec[onnx]'") from None
    return onnx, onnxruntime


def _torch_export(module, example, path, input_name, output_name, dynamic, opset):
    kwargs = dict(input_names=[input_name], output_names=[output_name], dynamic_axes=dynamic, opset_version=opset,
                  do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5; 2.9+ defaults to True
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice, and the tracer's note on the shape checks
        # it evaluates once (they hold for every input the graph accepts).
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), **kwargs)


def describe(codec, n_q: int, opset: int) -> dict:
    """What codec.json holds for an export of `codec` at n_q stages."""
    cfg = codec.cfg
    frames = ["batch", n_q, "frames"]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "sample_rate": cfg.sample_rate, "hop": cfg.hop, "codebook_size": cfg.codebook_size, "n_q": n_q,
        "code_dim": cfg.code_dim, "fingerprint": codec.fingerprint, "opset": opset,
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__.split('+')[0]}",
        "graphs": {
            "encoder": {"file": "encoder.onnx", "inputs": {"audio": ["batch", 1, "samples"]},
                        "outputs": {"codes": frames}, "dtypes": {"audio": "float32", "codes": "int64"}},
            "decoder": {"file": "decoder.onnx", "inputs": {"codes": frames},
                        "outputs": {"audio": ["batch", 1, "frames * hop"]},
                        "dtypes": {"codes": "int64", "audio": "float32"}},
        },
    }


def export(codec, out_dir, n_q: int | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Write encoder.onnx, decoder.onnx and codec.json for `codec` (a fastcodec.Codec) into out_dir,
    which must not hold an export already. Each graph is checked (onnx.checker) and run once by
    onnxruntime against the model before anything lands in out_dir. Returns out_dir."""
    onnx, _ = _onnx_modules()
    n_q = codec.model.quantizer.check_n_q(n_q)
    if not isinstance(opset, int) or not 13 <= opset <= 21:
        raise ValueError(f"opset must be an int in 13..21, got {opset!r}")
    out = Path(out_dir)
    clash = [n for n in GRAPHS + ("codec.json",) if (out / n).exists()]
    if clash:
        raise ExportError(f"{out} already holds an export ({', '.join(clash)}); choose another folder")
    model = copy.deepcopy(codec.model).float().cpu().eval()
    from .nn import set_backend

    set_backend(model, "torch")  # PyTorch's own ops only: no custom op may reach the graph
    hop = codec.cfg.hop
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        with torch.no_grad():
            audio = torch.randn(1, 1, 3 * hop + 1)
            codes = model.encode(audio, n_q)
            _torch_export(EncoderGraph(model, n_q).eval(), audio, tmp / "encoder.onnx", "audio", "codes",
                          {"audio": {0: "batch", 2: "samples"}, "codes": {0: "batch", 2: "frames"}}, opset)
            _torch_export(DecoderGraph(model, n_q).eval(), codes, tmp / "decoder.onnx", "codes", "audio",
                          {"codes": {0: "batch", 2: "frames"}, "audio": {0: "batch", 2: "samples"}}, opset)
        for name in GRAPHS:
            onnx.checker.check_model(str(tmp / name), full_check=True)
            foreign = {n.domain for n in onnx.load(str(tmp / name)).graph.node} - {"", "ai.onnx"}
            if foreign:
                raise ExportError(f"{name} holds operators outside the ONNX standard: {sorted(foreign)}")
        _verify(tmp, model, n_q)
        (tmp / "codec.json").write_text(json.dumps(describe(codec, n_q, opset), indent=2) + "\n")
        for name in GRAPHS + ("codec.json",):
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _verify(folder: Path, model, n_q: int):
    """The graphs reproduce the model on a second of noise and a length the trace never saw: the
    decoder's audio within float tolerance of the model's on the same codes; the encoder's codes
    equal except where a stage's best two codes tie within rounding (then the stages after differ)."""
    _, ort = _onnx_modules()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decoder.onnx"), opts, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 1, model.cfg.sample_rate + 7, generator=g) * 0.3
    with torch.no_grad():
        want = model.encode(audio, n_q)
        got = torch.from_numpy(enc.run(None, {"audio": audio.numpy()})[0])
        y_want = model.decode(want)
    if got.shape != want.shape:
        raise ExportError(f"encoder.onnx gives codes of shape {list(got.shape)}, the model {list(want.shape)}")
    agree = float((got[:, 0] == want[:, 0]).float().mean())
    if agree < 0.99:
        raise ExportError(f"encoder.onnx agrees with the model on only {agree:.1%} of first-stage codes")
    y = torch.from_numpy(dec.run(None, {"codes": want.numpy()})[0])
    scale = float(y_want.abs().max()) + 1e-6
    err = float((y - y_want).abs().max()) / scale if y.shape == y_want.shape else float("inf")
    if err > 1e-4:
        raise ExportError(f"decoder.onnx differs from the model by {err:.2e} of full scale")
