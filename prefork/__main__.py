"""`python -m prefork`: the same as the `httpdctl` command."""

from .cli import main

main()
