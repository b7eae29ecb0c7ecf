"""The codec in use: `Codec` (load, encode, decode, stream, files), the .fcdc format, the CLI.

The names below are imported on first use, so the torch-free parts (the .fcdc format in
`format`, the errors) load without torch: fastcodec.lite reads and writes .fcdc files with them.
"""
_NAMES = {"Codec": "api", "EncodedAudio": "api", "model_fingerprint": "api", "AudioError": "errors",
          "FormatError": "errors", "TruncatedAudioWarning": "errors", "StreamingDecoder": "streaming",
          "StreamingEncoder": "streaming"}
__all__ = sorted(_NAMES)


def __getattr__(name):
    import importlib

    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
