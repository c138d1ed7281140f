"""A Flask JSON endpoint: GET /json answers a small object built per request."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/json")
def json_endpoint():
    return jsonify(message="Hello, World!", items=[1, 2, 3], ok=True)


@app.get("/")
def index():
    return "ok\n"
