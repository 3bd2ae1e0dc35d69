"""``medsae info`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("image", help="DICOM, PNG or JPEG file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--show-phi", action="store_true", help="also show identifying fields")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
