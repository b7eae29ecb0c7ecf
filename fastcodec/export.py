"""A trained codec as ONNX graphs, to run where PyTorch is not installed.

    python -m fastcodec export CHECKPOINT OUTDIR [--n-q N] [--opset K] [--step-frames S]

writes into OUTDIR:
- encoder.onnx: audio [B, 1, T] (float32 at the codec's rate, any T >= 1) -> codes [B, n_q, F]
  int64, F = ceil(T / hop), the residual VQ search inside the graph;
- decoder.onnx: codes [B, n_q, F] int64 in [0, K) -> audio [B, 1, F * hop] float32 (a code of -1
  leaves its stage out: how a file coded with fewer stages is decoded);
- encoder_step.onnx: (audio [B, 1, S * hop], state_0 ... state_n) -> (codes [B, n_q, S],
  state_0_next ... state_n_next), one streaming step of S frames (fastcodec.nn.steps): every
  causal conv's left context and every transposed conv's overlap tail is a named input and output,
  all zeros at the start, so a client loops `codes, *states = step(audio, *states)`;
- decoder_step.onnx: (codes [B, n_q, S], states...) -> (audio [B, 1, S * hop], states...);
- codec.json: the rate, hop, codebook size, n_q, the model's fingerprint (the one `.fcdc` files
  carry), each graph's inputs and outputs and each state's shape and layer.

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

from .nn.steps import DecoderStep, EncoderStep

FORMAT = "fastcodec-onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17  # onnxruntime >= 1.11 runs it; torch 2.4's TorchScript exporter writes it
OPSETS = range(13, 21)  # what the TorchScript exporter writes (20 at most, in torch 2.4 to 2.14)
GRAPHS = ("encoder.onnx", "decoder.onnx", "encoder_step.onnx", "decoder_step.onnx")


class ExportError(Exception):
    """The export could not be made or did not reproduce the model; nothing was left in OUTDIR."""


class _Codebooks(nn.Module):
    """The first n_q codebooks as graph constants, with the search and the lookup."""

    def __init__(self, model, n_q: int):
        super().__init__()
        self.register_buffer("codebooks", model.quantizer.codebooks[:n_q].detach().float().clone())
        self.register_buffer("code_norms", self.codebooks.pow(2).sum(-1))  # [n_q, K]

    def search(self, z):
        """latent [B, D, F] -> codes [B, n_q, F]: at each stage the code minimising ||c||^2 - 2 r.c
        (ops.rvq_encode's rule, the first index on ties), then r -= c."""
        r = z.transpose(1, 2)  # [B, F, D]
        codes = []
        for i in range(self.codebooks.shape[0]):
            cb = self.codebooks[i]
            k = torch.argmin(self.code_norms[i] - 2.0 * (r @ cb.t()), dim=-1)  # [B, F]
            r = r - cb[k]
            codes.append(k)
        return torch.stack(codes, 1)

    def lookup(self, codes):
        """codes [B, n_q, F] -> latent [B, D, F]: the chosen codewords summed in stage order (as
        rvq_decode); a code of -1 leaves its stage out (a file coded with fewer stages)."""
        z = None
        for i in range(self.codebooks.shape[0]):
            k = codes[:, i]
            c = self.codebooks[i][k.clamp(min=0)] * (k >= 0).unsqueeze(-1).to(self.codebooks.dtype)  # [B, F, D]
            z = c if z is None else z + c
        return z.transpose(1, 2)


class EncoderGraph(nn.Module):
    """audio [B, 1, T] -> codes [B, n_q, ceil(T / hop)]: the model's encoder, then the search."""

    def __init__(self, model, n_q: int):
        super().__init__()
        self.encoder, self.q = model.encoder, _Codebooks(model, n_q)

    def forward(self, audio):
        return self.q.search(self.encoder(audio))


class DecoderGraph(nn.Module):
    """codes [B, n_q, F] -> audio [B, 1, F * hop]: the lookup, then the model's decoder."""

    def __init__(self, model, n_q: int):
        super().__init__()
        self.decoder, self.q = model.decoder, _Codebooks(model, n_q)

    def forward(self, codes):
        return self.decoder(self.q.lookup(codes))


class EncoderStepGraph(nn.Module):
    """(audio [B, 1, frames * hop], *states) -> (codes [B, n_q, frames], *states)."""

    def __init__(self, model, n_q: int, frames: int):
        super().__init__()
        self.step, self.q = EncoderStep(model.encoder, frames), _Codebooks(model, n_q)

    def forward(self, audio, *states):
        z, *states = self.step(audio, *states)
        return (self.q.search(z), *states)


class DecoderStepGraph(nn.Module):
    """(codes [B, n_q, frames], *states) -> (audio [B, 1, frames * hop], *states)."""

    def __init__(self, model, n_q: int, frames: int):
        super().__init__()
        self.step, self.q = DecoderStep(model.decoder, frames), _Codebooks(model, n_q)

    def forward(self, codes, *states):
        return self.step(self.q.lookup(codes), *states)


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): "
                          f"pip install 'fastcodec[onnx]'") from None
    return onnx, onnxruntime


def _torch_export(module, examples, path, input_names, output_names, dynamic, opset):
    kwargs = dict(input_names=input_names, output_names=output_names, dynamic_axes=dynamic, opset_version=opset,
                  do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5; 2.9+ defaults to True
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notices, and the tracer's notes on the checks of
        # shapes it evaluates once (they hold for every input the graph accepts); others still show.
        for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1")  # (a strided slice stays a Slice)
        torch.onnx.export(module, tuple(examples), str(path), **kwargs)


def _state_names(n: int):
    return [f"state_{i}" for i in range(n)], [f"state_{i}_next" for i in range(n)]


def _states(step, model) -> list:
    """codec.json's description of a step graph's states: name, shape, the layer it belongs to."""
    names = {id(m): name for name, m in model.named_modules()}
    ins, _ = _state_names(len(step.stateful))
    return [{"name": n, "shape": ["batch", *shape[1:]], "layer": names.get(id(layer), "?")}
            for n, shape, layer in zip(ins, step.state_shapes(), step.state_layers)]


def describe(codec, model, n_q: int, opset: int, frames: int) -> dict:
    """What codec.json holds for an export of `codec` (model: its copy on the torch backend) at n_q
    stages with steps of `frames` frames."""
    cfg, hop = codec.cfg, codec.cfg.hop
    codes = ["batch", n_q, "frames"]
    enc_states, dec_states = _states(EncoderStep(model.encoder, frames), model), \
        _states(DecoderStep(model.decoder, frames), model)
    step_io = {"codes": ["batch", n_q, frames]}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "sample_rate": cfg.sample_rate, "hop": hop, "codebook_size": cfg.codebook_size, "n_q": n_q,
        "code_dim": cfg.code_dim, "fingerprint": codec.fingerprint, "opset": opset, "step_frames": frames,
        # What a window must hold before the frames it is asked for (fastcodec.lite codes in windows).
        "encoder_history_samples": model.encoder.history_samples(),
        "decoder_history_frames": model.decoder.history_frames(),
        "exporter": f"torch.onnx TorchScript exporter, torch {torch.__version__.split('+')[0]}",
        "graphs": {
            "encoder": {"file": "encoder.onnx", "inputs": {"audio": ["batch", 1, "samples"]},
                        "outputs": {"codes": codes}},
            "decoder": {"file": "decoder.onnx", "inputs": {"codes": codes},
                        "outputs": {"audio": ["batch", 1, "frames * hop"]}},
            "encoder_step": {"file": "encoder_step.onnx", "inputs": {"audio": ["batch", 1, frames * hop]},
                             "outputs": step_io, "states": enc_states},
            "decoder_step": {"file": "decoder_step.onnx", "inputs": step_io,
                             "outputs": {"audio": ["batch", 1, frames * hop]}, "states": dec_states},
        },
        "dtypes": {"audio": "float32", "codes": "int64", "states": "float32"},
        "streaming": ("Start every state at zeros of its shape; each step takes the next step_frames * hop "
                      "samples (the last step zero-padded) and gives step_frames frames; keep the first "
                      "ceil(samples / hop). state_i_next is state_i of the next step."),
    }


def export(codec, out_dir, n_q: int | None = None, opset: int = DEFAULT_OPSET, step_frames: int = 1) -> Path:
    """Write the four graphs and codec.json for `codec` (a fastcodec.Codec) into out_dir, which must
    not hold an export already. Each graph is checked (onnx.checker) and run by onnxruntime against
    the model before anything lands in out_dir. Returns out_dir."""
    onnx, _ = _onnx_modules()
    n_q = codec.model.quantizer.check_n_q(n_q)
    if not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset must be an int in {OPSETS.start}..{OPSETS.stop - 1}, got {opset!r}")
    if not isinstance(step_frames, int) or not 1 <= step_frames <= 1000:
        raise ValueError(f"step_frames must be an int in 1..1000, got {step_frames!r}")
    out = Path(out_dir)
    if (out / "codec.json").exists():  # written last: graphs without it are an export cut short
        raise ExportError(f"{out} already holds an export (codec.json); choose another folder")
    model = copy.deepcopy(codec.model).float().cpu().eval()
    from .nn import set_backend

    set_backend(model, "torch")  # PyTorch's own ops only: no custom op may reach the graph
    hop = codec.cfg.hop
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    batch = {0: "batch"}
    try:
        with torch.no_grad():
            audio = torch.randn(1, 1, 3 * hop + 1, generator=torch.Generator().manual_seed(0))
            codes = model.encode(audio, n_q)
            _torch_export(EncoderGraph(model, n_q).eval(), [audio], tmp / "encoder.onnx", ["audio"], ["codes"],
                          {"audio": {0: "batch", 2: "samples"}, "codes": {0: "batch", 2: "frames"}}, opset)
            _torch_export(DecoderGraph(model, n_q).eval(), [codes], tmp / "decoder.onnx", ["codes"], ["audio"],
                          {"codes": {0: "batch", 2: "frames"}, "audio": {0: "batch", 2: "samples"}}, opset)
            for name, graph, first, first_name, out_name in (
                    ("encoder_step.onnx", EncoderStepGraph(model, n_q, step_frames),
                     torch.zeros(1, 1, step_frames * hop), "audio", "codes"),
                    ("decoder_step.onnx", DecoderStepGraph(model, n_q, step_frames),
                     torch.zeros(1, n_q, step_frames, dtype=torch.long), "codes", "audio")):
                states = [torch.zeros(*shape) for shape in graph.step.state_shapes()]
                ins, outs = _state_names(len(states))
                _torch_export(graph.eval(), [first, *states], tmp / name, [first_name, *ins], [out_name, *outs],
                              {n: batch for n in [first_name, out_name, *ins, *outs]}, opset)
        for name in GRAPHS:
            onnx.checker.check_model(str(tmp / name), full_check=True)
            foreign = {n.domain for n in onnx.load(str(tmp / name)).graph.node} - {"", "ai.onnx"}
            if foreign:
                raise ExportError(f"{name} holds operators outside the ONNX standard: {sorted(foreign)}")
        _verify(tmp, model, n_q, step_frames)
        (tmp / "codec.json").write_text(json.dumps(describe(codec, model, n_q, opset, step_frames), indent=2) + "\n")
        for name in GRAPHS + ("codec.json",):
            os.replace(tmp / name, out / name)
    except ExportError:
        raise
    except Exception as exc:  # the exporter's, onnx's or onnxruntime's own: one line, nothing left
        raise ExportError(f"exporting to {out} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") \
            from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not (out / "codec.json").exists():
            shutil.rmtree(out, ignore_errors=True)
    return out


def _session(path):
    from .lite import ort_session

    _onnx_modules()
    return ort_session(path)


def _verify(folder: Path, model, n_q: int, frames: int):
    """The graphs reproduce the model on a second of noise (a length the trace never saw), the
    step graphs fed step by step: audio within float tolerance of the model's decoding of the same
    codes; codes equal except where a stage's best two codes tie within rounding (the stages after
    then differ), so at least 99% of each stage's."""
    hop = model.cfg.hop
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 1, model.cfg.sample_rate + 7, generator=g) * 0.3
    with torch.no_grad():
        want = model.encode(audio, n_q)
        y_want = model.decode(want)
    enc, dec = _session(folder / "encoder.onnx"), _session(folder / "decoder.onnx")
    got = {"encoder.onnx": torch.from_numpy(enc.run(None, {"audio": audio.numpy()})[0]),
           "encoder_step.onnx": run_steps(_session(folder / "encoder_step.onnx"), "audio", audio, frames * hop)}
    for name, codes in got.items():
        codes = codes[..., : want.shape[2]]
        if codes.shape != want.shape:
            raise ExportError(f"{name} gives codes of shape {list(codes.shape)}, the model {list(want.shape)}")
        for i in range(n_q):  # (a tie at one stage changes the stages after it, rarely)
            agree = float((codes[:, i] == want[:, i]).float().mean())
            if agree < 0.99:
                raise ExportError(f"{name} agrees with the model on only {agree:.1%} of stage {i}'s codes")
    y = {"decoder.onnx": torch.from_numpy(dec.run(None, {"codes": want.numpy()})[0]),
         "decoder_step.onnx": run_steps(_session(folder / "decoder_step.onnx"), "codes", want, frames)}
    scale = float(y_want.abs().max()) + 1e-6
    for name, audio_out in y.items():
        audio_out = audio_out[..., : y_want.shape[2]]
        err = float((audio_out - y_want).abs().max()) / scale if audio_out.shape == y_want.shape else float("inf")
        if err > 1e-4:
            raise ExportError(f"{name} differs from the model by {err:.2e} of full scale")


def run_steps(session, name, x, chunk):
    """x [B, C, T] through a step graph's onnxruntime session, `chunk` along T per step (the last
    zero-padded), from zero states -> its first outputs concatenated along the last axis."""
    import numpy as np

    inputs = session.get_inputs()
    states = [np.zeros([x.shape[0], *i.shape[1:]], dtype=np.float32) for i in inputs[1:]]
    T = x.shape[2]
    x = torch.nn.functional.pad(x, (0, -T % chunk)).numpy()
    outs = []
    for t in range(0, x.shape[2], chunk):
        y, *states = session.run(None, {name: x[..., t : t + chunk], **{i.name: s for i, s in zip(inputs[1:], states)}})
        outs.append(y)
    return torch.from_numpy(np.concatenate(outs, axis=-1))
