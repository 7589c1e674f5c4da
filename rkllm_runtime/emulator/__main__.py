"""Command line of the emulator.

``python -m rkllm_runtime.emulator build --abi 1.3 [--engine llama] --out DIR`` builds a library;
``python -m rkllm_runtime.emulator real-model`` prints the cached llama.cpp-engine library and
the SmolLM2 model path (both installed by ``scripts/setup``), one per line;
``python -m rkllm_runtime.emulator tokenizer-json`` converts the scripted engine's vocabulary to the
``tokenizer.json`` the constrained decoder reads (``scripts/setup`` runs it) and prints its path.
"""

import argparse
import sys
from pathlib import Path

from .build import DEFAULT_RELEASE, ENGINES, build, build_cached
from .real_model import MissingAssetError, smollm2_model
from .tokenizer_json import make_tokenizer_json


def main() -> None:
    """Parse the command line and build."""
    parser = argparse.ArgumentParser(prog="python -m rkllm_runtime.emulator")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="compile librkllmrt.so for one ABI")
    build_parser.add_argument("--abi", choices=sorted(DEFAULT_RELEASE), default="1.3")
    build_parser.add_argument("--release", help="runtime release to embed (default: newest of the ABI)")
    build_parser.add_argument("--engine", choices=sorted(ENGINES), default="scripted")
    build_parser.add_argument("--out", type=Path, required=True, help="output directory")
    real = commands.add_parser("real-model", help="the llama.cpp-engine library and SmolLM2")
    real.add_argument("--abi", choices=sorted(DEFAULT_RELEASE), default="1.3")
    commands.add_parser(
        "tokenizer-json", help="Qwen2.5's tokenizer.json from the scripted engine's vocabulary"
    )
    args = parser.parse_args()
    try:
        if args.command == "build":
            print(build(args.abi, args.out, args.release, args.engine))
        elif args.command == "tokenizer-json":
            print(make_tokenizer_json())
        else:
            print(build_cached(args.abi, engine="llama"))
            print(smollm2_model())
    except MissingAssetError as err:
        sys.exit(f"rkllm-emulator: {err}")


if __name__ == "__main__":
    main()
