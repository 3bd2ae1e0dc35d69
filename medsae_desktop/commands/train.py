"""``medsae train`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    p.add_argument("-o", "--output", required=True, help="SAE checkpoint folder")
    p.add_argument("--arch", default="relu", choices=["relu", "topk", "batchtopk", "jumprelu", "matryoshka"])
    p.add_argument("--expansion", type=int, default=16)
    p.add_argument("--l1", type=float)
    p.add_argument("--k", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
