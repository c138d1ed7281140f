"""The HTTP/1.1 protocol without I/O: the request parser, the wire format of responses,
the messages handlers see, and framing a Response into bytes. Imports nothing above it: no
socket, thread, file or logging code (an import contract in tests/test_layers.py holds it)."""
