"""The ``medsae`` command line: a thin shell over ``core`` (proof that core needs no UI).

Each sub-command lives in ``medsae_desktop/commands/<name>.py`` and provides two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Command modules must stay cheap to import
(no torch/onnxruntime at module level) so ``medsae --help`` is instant.

Exit codes (DESIGN.md §3): 0 success, 1 data/model problem, 2 usage error, 130 interrupted.
Errors are one line on stderr naming the file and the problem; ``--debug`` adds the traceback.
"""

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from medsae_desktop import __version__
from medsae_desktop.core.errors import MedsaeError, UsageError

#: name -> one-line help. Order is the order shown in ``medsae --help``.
COMMANDS: dict[str, str] = {
    "render": "render an image through the display pipeline to an 8-bit PNG",
    "info": "show technical header fields (identifying fields hidden unless --show-phi)",
    "phantoms": "write synthetic chest-radiograph phantoms with planted findings",
    "embed": "embed images into an HDF5 embedding cache (resumable)",
    "train": "train a sparse autoencoder on an embedding cache",
    "eval": "evaluate SAE latents or raw embedding dimensions against labels",
    "name": "name SAE features (labels, vocab or MedGemma namer)",
    "score-names": "naming accuracy of feature names with MedGemma",
    "inspect": "top SAE features of one image, with a heat-map overlay",
    "export-onnx": "export encoder (+ SAE) to one ONNX graph",
    "models": "list, verify or install known model files",
}

logger = logging.getLogger("medsae_desktop")


def _module_name(command: str) -> str:
    return "medsae_desktop.commands." + command.replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (imports every command module, all lightweight)."""
    parser = argparse.ArgumentParser(
        prog="medsae",
        description="Offline sparse-autoencoder tools for chest-radiograph models (MedSAE).",
    )
    parser.add_argument("--version", action="version", version=f"medsae {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(_module_name(name))
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logs")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``medsae``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        if debug:
            raise
        print(f"medsae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MedsaeError as exc:
        if debug:
            raise
        print(f"medsae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"medsae {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: keep it one line unless --debug, as the contract says
        if debug:
            raise
        print(
            f"medsae {args.command}: internal error: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
