"""Request handlers: the router, static files, uploads and server status."""
