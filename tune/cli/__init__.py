"""The `mipet-tune` command line (`tune.cli.commands`). It may import every layer, but only
inside the commands, so `mipet-tune --help` stays instant."""

from tune.cli.commands import main  # noqa: F401
