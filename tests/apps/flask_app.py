"""A small Flask application, served by the tests through prefork (`flask_app:app`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/api/items/<int:item>")
def item(item: int) -> Response:
    return jsonify(id=item, name=f"item {item}", script_root=request.script_root,
                   path=request.path)


@app.post("/api/echo")
def echo() -> Response:
    data = request.get_json(force=True)
    return jsonify(received=data, length=request.content_length)


@app.post("/form")
def form() -> Response:
    upload = request.files["file"]
    content = upload.read()
    return jsonify(name=request.form.get("name"), filename=upload.filename,
                   size=len(content), sha256=hashlib.sha256(content).hexdigest())


@app.get("/stream")
def stream() -> Response:
    count = int(request.args.get("n", "5"))

    def pieces() -> Iterator[str]:
        for index in range(count):
            yield f"piece {index}\n"

    return Response(pieces(), mimetype="text/plain")
