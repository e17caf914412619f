"""One module per ``pivad`` verb: ``add_arguments(parser)`` and ``run(args) -> int``."""
