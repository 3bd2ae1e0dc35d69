"""One module per ``medsae`` sub-command: ``add_arguments(parser)`` and ``run(args) -> int``.

Keep these modules cheap to import: heavy imports go inside ``run``.
"""
