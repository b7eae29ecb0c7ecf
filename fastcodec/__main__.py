"""`python -m fastcodec <command>` (and the `fastcodec` console script)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastcodec", description="fastcodec neural audio codec")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, and which kernel backends are built and usable here")
    args = parser.parse_args(argv)
    if args.command == "info":
        from fastcodec.info import main as info_main

        return info_main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
