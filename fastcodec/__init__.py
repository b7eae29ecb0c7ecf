"""fastcodec: a SoundStream-style neural audio codec whose hot ops run on custom kernels.

`fastcodec.ops` holds the ops (causal convs, residual VQ) with their PyTorch references and their
C++/CUDA/Triton backends; `python -m fastcodec info` says which backends work here.

Subpackages and the codec's names are imported on first use, so `import fastcodec` (and the
command line's start, where Ctrl-C must be answered cleanly) does not wait for torch.
"""
__version__ = "0.1.0"

_SUBPACKAGES = ("checkpoint", "codec", "nn", "ops", "train")
_CODEC_NAMES = ("AudioError", "Codec", "EncodedAudio", "FormatError", "TruncatedAudioWarning")
__all__ = ["__version__", *_SUBPACKAGES, *_CODEC_NAMES]


def __getattr__(name):
    import importlib

    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _CODEC_NAMES:
        return getattr(importlib.import_module(f"{__name__}.codec"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
