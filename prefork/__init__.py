"""prefork: a pre-fork, multiprocess HTTP/1.1 server in the tradition of Apache httpd's MPMs."""

__version__ = "0.1.0"
SERVER_SOFTWARE = f"prefork/{__version__}"
