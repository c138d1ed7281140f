"""Three views: a JSON API, a form POST with a file, a streamed response."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def item(request: HttpRequest, item: int) -> JsonResponse:
    return JsonResponse({"id": item, "script_name": request.META.get("SCRIPT_NAME"),
                         "path": request.path, "path_info": request.path_info})


@csrf_exempt
def form(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    content = upload.read()
    return JsonResponse({"name": request.POST.get("name"), "filename": upload.name,
                         "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("n", "5"))

    def pieces() -> Iterator[bytes]:
        for index in range(count):
            yield f"piece {index}\n".encode()

    return StreamingHttpResponse(pieces(), content_type="text/plain")
