"""``medsae models {list,verify,install}``: known model files, checksums, local installs."""

import argparse
import sys

from medsae_desktop.core.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("action", choices=["list", "verify", "install"])
    p.add_argument("source", nargs="?",
                   help="for install: local folder or .zip, or an explicit http(s) URL")
    p.add_argument("--name", help="for install/verify: manifest model name, e.g. medclip-resnet")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.core import models
    from medsae_desktop.core.progress import run_job

    if args.action == "list":
        print(f"{'name':<24} {'kind':<10} {'installed':<10} source")
        for s in models.load_manifest():
            rec = models.installed_record(s.name)
            print(f"{s.name:<24} {s.kind:<10} {'yes' if rec else 'no':<10} {s.source}")
        print(f"\nstore: {models.installed_dir('x').parent}")
        return 0
    if args.action == "verify":
        names = [args.name] if args.name else [
            s.name for s in models.load_manifest() if models.installed_record(s.name)]
        if not names:
            print("no models installed")
            return 0
        bad = 0
        for n in names:
            r = models.verify_model(n)
            print(f"{n}: {'OK' if r.ok else 'FAILED: ' + '; '.join(r.problems)}")
            bad += not r.ok
        return 1 if bad else 0
    if not args.source or not args.name:
        raise UsageError("install needs SOURCE and --name NAME")
    from tqdm import tqdm

    bars: list[tqdm] = []  # created on the first report so a failing install prints one line

    def show(p):  # type: ignore[no-untyped-def]
        if not bars:
            bars.append(tqdm(total=p.total, unit="B", unit_scale=True, file=sys.stderr,
                             leave=False))
        bars[0].total = p.total
        bars[0].n = p.done
        bars[0].refresh()

    try:
        dest = run_job(models.install_model(args.source, args.name), show)
    finally:
        for b in bars:
            b.close()
    print(f"installed {args.name} -> {dest}")
    return 0
