"""``python -m medsae_desktop`` runs the command line (``medsae``)."""

from medsae_desktop.cli import main

raise SystemExit(main())
