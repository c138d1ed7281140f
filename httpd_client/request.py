"""Where requests go (Target, from --url) and what they look like on the wire (Prepared).

Both modes send the very same bytes: confirm hands method, target, headers and body to
http.client with nothing added; load serialises them once, up front, into one bytes object
per spec entry and replays it.
"""

from __future__ import annotations

import json
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from prefork import __version__

from .spec import BODY_METHODS, Entry

USER_AGENT = f"httpd-client/{__version__}"
DEFAULT_URL = "http://127.0.0.1:8080"


class UploadError(ValueError):
    """An entry's upload file cannot be read any more. str() names the entry and file."""


class Unreachable(Exception):
    """The server cannot be connected to at all. str() is one line."""


def os_reason(exc: OSError) -> str:
    """A socket error as a few words ("Connection refused", "timed out")."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc)


def unreachable(target: Target, exc: OSError) -> Unreachable:
    """The one-line error for a failed connect, DNS lookup or TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Unreachable(f"TLS handshake with {target.address} failed: certificate verify "
                           f"failed: {exc.verify_message} (--insecure skips verification)")
    if isinstance(exc, ssl.SSLError):
        return Unreachable(f"TLS handshake with {target.address} failed: "
                           f"{exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"cannot resolve {target.host}: {os_reason(exc)}")
    return Unreachable(f"cannot connect to {target.address}: {os_reason(exc)}")


@dataclass(frozen=True)
class Target:
    scheme: str  # http or https
    host: str
    port: int
    base_path: str = ""  # prefixed to every entry's url, without a trailing slash

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.scheme}://{self.host_header}{self.base_path}{path}"

    def resolve(self) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
        """The first address to connect to. Raises OSError (socket.gaierror) if none."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, _type, _proto, _name, sockaddr = infos[0]
        return family, sockaddr

    def ssl_context(self, insecure: bool = False) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def parse_target(url: str) -> Target:
    """Parse --url: ``http://host:port/base``, ``https://host``, or a bare ``host:port``.

    Raises ValueError with a message fit for the user."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {parts.scheme!r} in {url!r} (http or https)")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"--url takes no query or fragment: {url!r}")
    return Target(scheme=parts.scheme, host=parts.hostname,
                  port=port or (443 if parts.scheme == "https" else 80),
                  base_path=parts.path.rstrip("/"))


@dataclass(frozen=True)
class Prepared:
    """One request, ready to send: nothing is added to it on the way out."""

    method: str
    target: str  # origin-form: path and query
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_bytes(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + self.body


def prepare(entry: Entry, target: Target, close: bool = False) -> Prepared:
    """Turn a spec entry into a request for `target`.

    Body rules: ``body`` as is; ``file`` with POST, or with ``data``, or with
    ``"encoding": "multipart"``: multipart/form-data (data fields, then the file as field
    ``file``); ``file`` alone with PUT/PATCH, or ``"encoding": "raw"``: the file's bytes;
    ``data`` alone: JSON, or a urlencoded form with ``"encoding": "form"``; ``data`` on a
    method without a body becomes the query string. Raises UploadError if the file cannot
    be read.
    """
    path = target.base_path + entry.url
    content_type: str | None = None
    body = b""
    data, upload, encoding = entry.data, entry.file, entry.encoding
    if entry.body is not None:
        body = entry.body.encode("utf-8")
    elif upload is not None:
        try:
            content = upload.path.read_bytes()
        except OSError as exc:
            raise UploadError(f"entry #{entry.index} ({entry.label}): cannot read "
                              f"{upload.path}: {exc.strerror or exc}") from None
        if encoding == "raw" or (encoding is None and data is None and entry.method != "POST"):
            body, content_type = content, upload.content_type
        else:
            body, content_type = multipart(data or {}, upload.name, content,
                                           upload.content_type)
    elif data is not None and entry.method not in BODY_METHODS:
        path += ("&" if "?" in path else "?") + urlencode(_strings(data))
    elif data is not None:
        if encoding == "form":
            body = urlencode(_strings(data)).encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        elif encoding == "multipart":
            body, content_type = multipart(data, None, b"", "")
        else:
            body = json.dumps(data, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"

    headers: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value)

    def put(name: str, value: str) -> None:
        headers[name.lower()] = (name, value)

    put("Host", target.host_header)
    put("User-Agent", USER_AGENT)
    put("Accept", "*/*")
    if close:
        put("Connection", "close")
    if content_type:
        put("Content-Type", content_type)
    for name, value in entry.headers:
        put(name, value)
    # Framing is ours alone (RFC 9112 §6.2): a spec cannot make the length lie.
    headers.pop("content-length", None)
    headers.pop("transfer-encoding", None)
    if body or entry.method in BODY_METHODS:
        put("Content-Length", str(len(body)))
    return Prepared(entry.method, path, tuple(headers.values()), body)


def multipart(fields: dict[str, Any], filename: str | None, content: bytes,
              content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) and its Content-Type header value."""
    boundary = "----httpd-client-" + uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in _strings(fields).items():
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; "
                     f"name=\"{_quote(name)}\"\r\n\r\n".encode()
                     + value.encode("utf-8") + b"\r\n")
    if filename is not None:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                     f"filename=\"{_quote(filename)}\"\r\n"
                     f"Content-Type: {content_type}\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _strings(data: dict[str, Any]) -> dict[str, str]:
    def text(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {str(k): text(v) for k, v in data.items()}


def _quote(name: str) -> str:
    # The HTML form encoding escapes these three in multipart field names and filenames.
    return name.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
