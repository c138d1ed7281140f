"""An application that waits 10 ms per request (a database or an upstream call, say):
the rate is bounded by how many requests a server runs at once, threads x processes / 10 ms."""

import time

SLEEP_S = 0.010
BODY = b"slept 10 ms\n"


def app(environ, start_response):
    time.sleep(SLEEP_S)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
