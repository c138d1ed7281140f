"""The proof issue 15 asks of TLS (docs/tls.md, "What was measured"): large transfers keep
their sha256, worker memory stays flat through a large download, reloads under TLS
keep-alive load lose nothing, a TLS slowloris costs no more than a plain one, testssl.sh
finds nothing weak, and the cipher choice honours a client that prefers ChaCha20.

One server for the module (plain and TLS listeners, the fixtures of tests/test_tls.py) with
a short header timeout and room for the slowloris connections."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator

import pytest
import trustme

from tests.conftest import Server, make_root, write_config
from tests.test_tls import TLS_HOST, TLSServer, ports_of, tls_settings

HEADER_TIMEOUT = 3.0  # seconds a stalled handshake or request head is held
HUNDRED_MIB = 100 << 20
CHUNK = 1 << 20


@pytest.fixture(scope="module")
def proof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    base = tmp_path_factory.mktemp("tlsproof")
    ca = trustme.CA()
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    root = make_root(base)
    (root / "htdocs" / "hundred.bin").write_bytes(os.urandom(HUNDRED_MIB))
    settings = tls_settings(base, ca)
    settings["server"]["backlog"] = "4096"
    settings["workers"]["max_connections"] = "3000"
    settings["http"]["header_timeout"] = str(HEADER_TIMEOUT)
    server = Server(root, write_config(root, settings))
    try:
        plain, secure = ports_of(server.start().stdout)
        yield TLSServer(server, plain, secure, ca, ca_file)
    finally:
        server.cleanup()


def head_of(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """Read a response head; returns it and the bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(head)


# ------------------------------------------------------------------ the cipher choice


def test_a_client_preferring_chacha20_gets_it(proof: TLSServer) -> None:
    """The server's order decides (testssl.sh wants one), except that a client which puts
    ChaCha20 first gets it: such a client has no AES hardware (docs/tls.md)."""
    aes_first = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305"
    chacha_first = "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"
    aes256_first = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    for offered, chosen in [(aes_first, "ECDHE-ECDSA-AES128-GCM-SHA256"),
                            (chacha_first, "ECDHE-ECDSA-CHACHA20-POLY1305"),
                            (aes256_first, "ECDHE-ECDSA-AES128-GCM-SHA256")]:
        context = proof.context(maximum_version=ssl.TLSVersion.TLSv1_2)
        context.set_ciphers(offered)
        with proof.connect(context=context) as sock:
            cipher = sock.cipher()
            assert cipher is not None and cipher[0] == chosen, offered


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_tls13_client_preferring_chacha20_gets_it(proof: TLSServer) -> None:
    def suite(offered: str) -> str:
        result = subprocess.run(
            ["openssl", "s_client", "-connect", f"{TLS_HOST}:{proof.tls_port}", "-servername",
             "localhost", "-tls1_3", "-ciphersuites", offered],
            input="", capture_output=True, text=True, timeout=30)
        found = [line for line in result.stdout.splitlines()
                 if line.startswith("New, TLSv1.3, Cipher is ")]
        assert found, result.stdout + result.stderr
        return found[0].rsplit(" ", 1)[1]

    assert suite("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384") \
        == "TLS_CHACHA20_POLY1305_SHA256"
    assert suite("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384") == "TLS_AES_256_GCM_SHA384"
