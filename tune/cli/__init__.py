"""The `mipet-tune` command line (`tune.cli.commands`) and its side of the analysis
(`tune.cli.analyze`). It may import every layer, but only inside the commands."""

from tune.cli.commands import main  # noqa: F401
