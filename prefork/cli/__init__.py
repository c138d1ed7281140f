"""`httpdctl`: the command line. The console script is `prefork.cli:main`."""

from prefork.cli.main import main

__all__ = ["main"]
