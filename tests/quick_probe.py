#!/usr/bin/env python3
"""httpdctl with the quick path instrumented, for tests that must know whether it served.

The quick path's answers are the full path's byte for byte (tests/test_quick.py compares
them), so neither the wire nor the logs can tell which path answered. Run as httpdctl is
(`quick_probe.py -f etc/httpd.ini start`): the daemon and the workers it forks inherit the
patch, and append to $PREFORK_QUICK_PROBE one line "made" each time a worker builds its
quick path and one line "answered" each time it answers a request.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefork.serve import quick


def _note(word: str) -> None:
    fd = os.open(os.environ["PREFORK_QUICK_PROBE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                 0o644)
    try:
        os.write(fd, word.encode() + b"\n")
    finally:
        os.close(fd)


_init = quick.QuickPath.__init__
_answer = quick.QuickPath.answer


def _probed_init(self: quick.QuickPath, *args: object, **kwargs: object) -> None:
    _init(self, *args, **kwargs)  # type: ignore[arg-type]
    _note("made")


def _probed_answer(self: quick.QuickPath, conn: quick.Connection, data: bytes
                   ) -> quick.Action | None:
    action = _answer(self, conn, data)
    if action is not None:
        _note("answered")
    return action


quick.QuickPath.__init__ = _probed_init  # type: ignore[method-assign]
quick.QuickPath.answer = _probed_answer  # type: ignore[method-assign]

if __name__ == "__main__":
    from prefork.cli import main

    main()
