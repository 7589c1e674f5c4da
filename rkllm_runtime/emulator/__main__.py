"""Command line: ``python -m rkllm_runtime.emulator build --abi 1.3 --out DIR``."""

import argparse
from pathlib import Path

from .build import DEFAULT_RELEASE, build


def main() -> None:
    """Parse the command line and build."""
    parser = argparse.ArgumentParser(prog="python -m rkllm_runtime.emulator")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="compile librkllmrt.so for one ABI")
    build_parser.add_argument("--abi", choices=sorted(DEFAULT_RELEASE), default="1.3")
    build_parser.add_argument("--release", help="runtime release to embed (default: newest of the ABI)")
    build_parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args()
    print(build(args.abi, args.out, args.release))


if __name__ == "__main__":
    main()
