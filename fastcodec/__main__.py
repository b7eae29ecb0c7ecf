"""`python -m fastcodec <command>` (and the `fastcodec` console script): see fastcodec.codec.cli."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from fastcodec.codec.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
