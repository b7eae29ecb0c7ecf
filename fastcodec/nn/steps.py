"""Stream steps of a fixed number of frames with their state as explicit tensors: what an exported
step graph runs (fastcodec/export.py), built from PyTorch's own ops only.

    EncoderStep(encoder, frames)(audio [B, 1, frames * hop], *states) -> (latent [B, D, frames], *states)
    DecoderStep(decoder, frames)(latent [B, D, frames], *states) -> (audio [B, 1, frames * hop], *states)

Each causal conv (kernel K, dilation d, stride s) keeps the last (K - 1) d + 1 - s samples of its
input: put in front of the next chunk, a conv without padding gives that chunk's outputs, chunk / s
of them. Each transposed conv keeps the K - s samples its last inputs add to the next chunk's first
outputs (before bias and activation). The states are stored as differences from the state after no
input at all, so a stream starts from zeros: for the decoder that state is zero; for the encoder
it is what the encoder's leading zero (Encoder.forward) leaves in each layer, so the frames of
the k-th step are the offline frames k * frames ... (k + 1) * frames - 1. A signal that ends
inside a step is padded with zeros to the step, as the offline encoder pads its last frame, and
the frames past ceil(T / hop) dropped. The outputs equal the offline encoder and decoder up to
float rounding (convs over other lengths sum in another order).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.reference import activation_ref
from .blocks import Decoder, Encoder, ResidualUnit, flatten
from .layers import CausalConv1d, CausalConvTranspose1d


def _act(layer, z):
    return activation_ref(z, layer.activation, negative_slope=layer.negative_slope, alpha=layer.alpha)


def conv_state_len(layer: CausalConv1d) -> int:
    """Input samples a causal conv step keeps: (K - 1) d + 1 - s."""
    return (layer.weight.shape[2] - 1) * layer.dilation + 1 - layer.stride


def tail_len(layer: CausalConvTranspose1d) -> int:
    """Output samples a transposed conv step carries into the next chunk: max(K - s, 0)."""
    return max(layer.weight.shape[2] - layer.stride, 0)


class _Steps(nn.Module):
    """A chain of conv steps (residual units as their conv, then their 1x1 conv adding the unit's
    input); `init` holds each state's value before any input, and the states in and out are
    differences from it."""

    def __init__(self, layers, frames: int, samples_per_frame_in: int):
        super().__init__()
        self.ops = []  # (kind, layer, skip): kind 'conv' or 'up'; skip: add the unit's input
        for layer in layers:
            if isinstance(layer, ResidualUnit):
                self.ops += [("conv", layer.conv, False), ("conv", layer.proj, True)]
            elif isinstance(layer, CausalConvTranspose1d):
                self.ops.append(("up", layer, False))
            else:
                self.ops.append(("conv", layer, False))
        self.layers = nn.ModuleList([layer for _, layer, _ in self.ops])
        self.chunk = frames * samples_per_frame_in
        self.shapes = []  # [channels, length] of each state, in order
        length = self.chunk
        for kind, layer, _ in self.ops:
            if kind == "conv":
                if length % layer.stride:
                    raise ValueError(f"a step of {frames} frames gives a strided conv {length} samples, not a "
                                     f"multiple of its stride {layer.stride}")
                self.shapes.append([layer.weight.shape[1], conv_state_len(layer)])
                length //= layer.stride
            else:
                self.shapes.append([layer.weight.shape[1], tail_len(layer)])
                length *= layer.stride
        for i, (c, n) in enumerate(self.shapes):
            self.register_buffer(f"init{i}", torch.zeros(c, n))
        self.stateful = [i for i, (_, n) in enumerate(self.shapes) if n]  # (a 1x1 conv keeps nothing)
        self.state_layers = [self.ops[i][1] for i in self.stateful]

    def state_shapes(self, batch: int = 1) -> list:
        """[batch, channels, length] of each state forward() takes and returns, in order."""
        return [[batch, *self.shapes[i]] for i in self.stateful]

    def initial_states(self):
        return [getattr(self, f"init{i}") for i in range(len(self.shapes))]

    def run(self, x, states):
        """x [B, C, chunk], states (actual values) -> (y, new actual states)."""
        new = []
        unit_in = None
        for (kind, layer, skip), state in zip(self.ops, states):
            if kind == "conv":
                xx = torch.cat([state, x], dim=2) if state.shape[-1] else x
                z = F.conv1d(xx, layer.weight, layer.bias, stride=layer.stride, dilation=layer.dilation)
                y = _act(layer, z)
                if skip:
                    y = y + unit_in
                new.append(xx[:, :, xx.shape[2] - state.shape[-1]:])
                unit_in = x  # a residual unit's 1x1 conv adds the input of the conv before it
            else:
                s = layer.stride
                out_pad = max(0, s - layer.weight.shape[2])
                full = F.conv_transpose1d(x, layer.weight, None, stride=s, output_padding=out_pad)
                n = x.shape[2] * s
                head = full[:, :, :n]
                if state.shape[-1]:
                    head = torch.cat([head[:, :, : state.shape[-1]] + state, head[:, :, state.shape[-1]:]], dim=2)
                new.append(full[:, :, n:])
                if layer.bias is not None:
                    head = head + layer.bias.view(1, -1, 1)
                y = _act(layer, head)
            x = y
        return x, new

    def forward(self, x, *states):
        """x [B, C, chunk], one state per entry of state_shapes() (zeros at the start) -> (y, *states)."""
        if len(states) != len(self.stateful):
            raise ValueError(f"this step takes {len(self.stateful)} states, got {len(states)}")
        inits = self.initial_states()
        # (a zero initial state, every decoder's, needs no offset: two graph nodes fewer per state)
        moved = [bool(init.any()) for init in inits]
        actual = [x.new_zeros(x.shape[0], c, 0) for c, _ in self.shapes]
        for i, st in zip(self.stateful, states):
            actual[i] = st + inits[i] if moved[i] else st
        y, new = self.run(x, actual)
        return (y, *[new[i] - inits[i] if moved[i] else new[i] for i in self.stateful])


class EncoderStep(_Steps):
    """(audio [B, 1, frames * hop], *states) -> (latent [B, D, frames], *states)."""

    def __init__(self, encoder: Encoder, frames: int = 1):
        super().__init__(flatten(encoder), frames, encoder.hop)
        # The state the encoder's leading zero leaves: each op's input at that sample (what the op
        # before gives there, from causal zero padding alone), behind zeros.
        with torch.no_grad():
            x = unit_in = torch.zeros(1, 1, 1, dtype=encoder.input.weight.dtype)
            for i, (kind, layer, skip) in enumerate(self.ops):
                init = getattr(self, f"init{i}")
                if init.shape[-1]:
                    init[:, -1] = x[0, :, 0]
                xx = F.pad(x, ((layer.weight.shape[2] - 1) * layer.dilation, 0))
                y = _act(layer, F.conv1d(xx, layer.weight, layer.bias, stride=layer.stride, dilation=layer.dilation))
                if skip:
                    y = y + unit_in
                unit_in = x
                x = y


class DecoderStep(_Steps):
    """(latent [B, D, frames], *states) -> (audio [B, 1, frames * hop], *states); zero states
    before any input."""

    def __init__(self, decoder: Decoder, frames: int = 1):
        super().__init__(flatten(decoder), frames, 1)
