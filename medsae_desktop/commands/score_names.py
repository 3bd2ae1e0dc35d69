"""``medsae score-names`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    p.add_argument("--sae", required=True, help="SAE checkpoint folder")
    p.add_argument("--names", required=True, help="NAMES.csv")
    p.add_argument("--medgemma", required=True, help="local MedGemma folder")
    p.add_argument("-o", "--output", required=True, help="SCORES.csv")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
