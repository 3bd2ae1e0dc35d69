"""``medsae info`` (DESIGN.md §3): technical header fields of an image.

Identifying fields (names, IDs, dates, institution, UIDs, free text, private tags) are shown
only with ``--show-phi``, and then with a warning on stderr. Header warnings (for example a
burned-in annotation) go to stderr so stdout stays the data.
"""

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("image", help="DICOM, PNG or JPEG file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--show-phi", action="store_true", help="also show identifying fields")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.core.images import read_header

    header = read_header(args.image)
    if args.show_phi:
        print(
            f"medsae info: warning: {args.image}: identifying fields (PHI) are shown; "
            "do not share this output",
            file=sys.stderr,
        )
    for message in header.warnings:
        print(f"medsae info: warning: {args.image}: {message}", file=sys.stderr)

    if args.json:
        document = {
            "path": args.image,
            "fields": header.fields,
            "burned_in_annotation": header.burned_in_annotation,
            "warnings": list(header.warnings),
        }
        if args.show_phi:
            document["phi"] = header.phi
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0

    print(_table(header.fields))
    if args.show_phi:
        print()
        print("Identifying fields (PHI):")
        print(_table(header.phi) if header.phi else "(none)")
    return 0


def _table(rows: dict[str, str]) -> str:
    """Two aligned columns: name, value."""
    width = max((len(name) for name in rows), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows.items())
