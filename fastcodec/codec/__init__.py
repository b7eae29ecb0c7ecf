"""The codec in use: `Codec` (load, encode, decode). The bitstream format and CLI build on it."""
from .api import Codec, EncodedAudio, model_fingerprint

__all__ = ["Codec", "EncodedAudio", "model_fingerprint"]
