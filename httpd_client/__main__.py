"""`python -m httpd_client`: the same as the `httpd-client` command."""

from .cli import main

main()
