"""`python -m prefork`: the same as the `httpdctl` command."""

from prefork.cli import main

main()
