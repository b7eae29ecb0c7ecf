"""`python -m fastcodec <command>` (and the `fastcodec` console script): see fastcodec.codec.cli."""
from __future__ import annotations

import os
import sys


def main(argv=None) -> int:
    try:  # imports torch: a Ctrl-C here is an interruption like any other, not a traceback
        import torch  # noqa: F401  (every command needs it; fastcodec.codec itself imports it lazily)

        from fastcodec.codec.cli import main as cli_main
    except KeyboardInterrupt:
        print("fastcodec: interrupted", file=sys.stderr, flush=True)
        # Not a normal exit: an interrupt inside an extension's import can leave CPython marked as
        # killed by it (exit status -SIGINT instead of 130), and a half-imported torch has nothing
        # to clean up.
        os._exit(130)
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
