"""fastcodec: a SoundStream-style neural audio codec whose hot ops run on custom kernels.

`fastcodec.ops` holds the ops (causal convs, residual VQ) with their PyTorch references and their
C++/CUDA/Triton backends; `python -m fastcodec info` says which backends work here.
"""
__version__ = "0.1.0"

from . import ops  # noqa: E402,F401
from .codec import AudioError, Codec, EncodedAudio, FormatError  # noqa: E402,F401
