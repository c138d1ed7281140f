"""The router's mount table: exact paths first, then the longest prefix, on segment
boundaries only (as nginx's prefix locations and Apache's Alias)."""

from __future__ import annotations

import pytest

from prefork.http.message import Request, Response
from prefork.site.router import Mount, MountTable


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def serve(self, request: Request) -> Response:
        return Response(200, [], self.name.encode())


def table(*mounts: tuple[str, str, bool]) -> MountTable:
    return MountTable([Mount(prefix, Named(name), exact) for prefix, name, exact in mounts])


@pytest.mark.parametrize("path, expected", [
    ("/", "root"), ("/index.html", "root"), ("/uploadsx", "root"), ("/app", "app"),
    ("/app/", "app"), ("/app/deep/er", "app"), ("/application", "root"),
    ("/app/api", "api"), ("/app/api/v1", "api"), ("/app/apix", "app"),
    ("/upload", "post"), ("/upload/", "root"), ("/server-status", "status"),
    ("/server-status/x", "root"),
])
def test_longest_prefix_wins_on_segment_boundaries(path: str, expected: str) -> None:
    mounts = table(("/", "root", False), ("/app", "app", False), ("/app/api", "api", False),
                   ("/upload", "post", True), ("/server-status", "status", True))
    found = mounts.find(path)
    assert found is not None and found.handler.name == expected  # type: ignore[attr-defined]


def test_without_a_root_mount_a_path_outside_every_prefix_has_no_mount() -> None:
    assert table(("/static", "static", False)).find("/other") is None


def test_two_mounts_at_one_place_are_refused() -> None:
    with pytest.raises(ValueError):
        table(("/app", "a", False), ("/app", "b", False))
