"""Stream steps with explicit state (fastcodec/nn/steps.py, what the exported step graphs run):
from zero states, fixed steps of 1 or 3 frames reproduce the offline encoder and decoder within
float rounding, on the tiny preset (residual units, strided convs, transposed convs) and on a
snake-activated model, with biases off zero (so the state the encoder's leading zero leaves is not
zero); bad calls are refused."""
import pytest
import torch
import torch.nn.functional as F

from fastcodec.nn import PRESETS, CodecConfig, SoundStream, set_backend
from fastcodec.nn.steps import DecoderStep, EncoderStep


def _model(cfg):
    torch.manual_seed(0)
    m = SoundStream(cfg).eval()
    with torch.no_grad():  # biases off zero, so the encoder's leading zero leaves a state that matters
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return set_backend(m, "torch")


def _stepped(step, x, chunk):
    states = [torch.zeros(shape) for shape in step.state_shapes(x.shape[0])]
    x = F.pad(x, (0, -x.shape[2] % chunk))
    outs = []
    for t in range(0, x.shape[2], chunk):
        y, *states = step(x[..., t : t + chunk], *states)
        outs.append(y)
    return torch.cat(outs, 2)


@pytest.mark.parametrize("cfg", [PRESETS["tiny"], CodecConfig(sample_rate=8000, channels=4, strides=(2, 3),
                                                              code_dim=8, activation="snake"),
                                 CodecConfig(sample_rate=8000, channels=6, strides=(2, 3), code_dim=8,
                                             residual_kernel=3, residual_bottleneck=2)],
                         ids=["tiny", "snake", "bottleneck"])
@pytest.mark.parametrize("frames", [1, 3])
def test_steps_from_zero_states_give_the_offline_encoder_and_decoder(cfg, frames):
    m = _model(cfg)
    hop = m.cfg.hop
    with torch.no_grad():
        for B, T in [(1, 1), (2, 7 * hop + 3), (1, 40 * hop)]:
            x = torch.randn(B, 1, T) * 0.3
            z = m.encoder(x)
            got = _stepped(EncoderStep(m.encoder, frames), x, frames * hop)[..., : z.shape[2]]
            torch.testing.assert_close(got, z, rtol=1e-5, atol=1e-5 * float(z.abs().max()))
            y = m.decoder(z)
            got = _stepped(DecoderStep(m.decoder, frames), z, frames)[..., : y.shape[2]]
            torch.testing.assert_close(got, y, rtol=1e-5, atol=1e-5 * float(y.abs().max()))


def test_steps_refuse_a_wrong_number_of_states_and_steps_a_stride_cannot_take():
    m = _model(PRESETS["tiny"])
    step = EncoderStep(m.encoder, 1)
    with pytest.raises(ValueError, match="states"):
        step(torch.zeros(1, 1, m.cfg.hop))
    assert all(shape[2] > 0 for shape in step.state_shapes())
    from fastcodec.nn.steps import _Steps

    with pytest.raises(ValueError, match="multiple of its stride"):
        _Steps(list(m.encoder.blocks[0].children())[-1:], 1, 1)  # one sample per step into a stride-2 conv
