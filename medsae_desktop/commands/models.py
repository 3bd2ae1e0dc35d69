"""``medsae models`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("action", choices=["list", "verify", "install"])
    p.add_argument("source", nargs="?", help="for install: local path or URL")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
