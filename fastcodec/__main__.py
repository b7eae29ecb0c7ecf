"""`python -m fastcodec <command>` (and the `fastcodec` console script): see fastcodec.codec.cli."""
from __future__ import annotations

import sys

from fastcodec import interrupt


def main(argv=None) -> int:
    interrupt.install("fastcodec")  # Ctrl-C while torch is imported, even: one line, exit 130
    import torch  # noqa: F401  (every command needs it; fastcodec.codec itself imports it lazily)

    from fastcodec.codec import cli

    args = cli.parse_args(argv)
    interrupt.unwind_from_here()
    return interrupt.exit_status(cli.run(args))


if __name__ == "__main__":
    sys.exit(main())
