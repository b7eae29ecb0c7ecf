"""The codec in use: `Codec` (load, encode, decode, stream, files), the .fcdc format, the CLI."""
from .api import Codec, EncodedAudio, model_fingerprint
from .errors import AudioError, FormatError, TruncatedAudioWarning
from .streaming import StreamingDecoder, StreamingEncoder

__all__ = ["AudioError", "Codec", "EncodedAudio", "FormatError", "StreamingDecoder", "StreamingEncoder",
           "TruncatedAudioWarning", "model_fingerprint"]
