"""The codec's user-facing errors. Both are ValueErrors, so code that already catches bad
arguments catches these too; the CLI prints their message as one line and exits non-zero."""


class FormatError(ValueError):
    """A .fcdc file that cannot be decoded: not one, truncated, corrupt, from a newer fastcodec, or
    made by another model. The message names the file and what is wrong."""


class AudioError(ValueError):
    """Audio that cannot be coded: an unreadable or empty file, NaN or Inf samples. Names the file."""


class TruncatedAudioWarning(UserWarning):
    """An audio file that ends before its header says: what it holds was coded. Names the file."""
