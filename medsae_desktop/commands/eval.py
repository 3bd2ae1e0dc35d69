"""``medsae eval`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sae", help="SAE checkpoint folder")
    g.add_argument("--raw", action="store_true", help="evaluate raw embedding dimensions")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.add_argument("--labels", help="CheXpert-style labels CSV (else the cache's /labels)")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
