"""One worker's I/O: event loops, the bounded blocking pool and its mailbox, the connection
state machine, the send queue, request bodies, and the quick path."""
