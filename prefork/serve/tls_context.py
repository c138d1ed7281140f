"""TLS contexts built from the [tls] sections, and the checks configtest, start and reload make.

One `ssl.SSLContext` per [tls] section, built the same way for the check (in httpdctl and in
the master before a reload) and for serving (in each worker after fork, from the files as
they are then: a reload picks up renewed certificates). Building is the check: the key is
loaded against its certificate by OpenSSL itself (`load_cert_chain`), so "the key does not
match" is OpenSSL's verdict, not ours.

Defaults and why (docs/tls.md): TLS 1.2 and 1.3 only (RFC 8996 retired 1.0 and 1.1); for
TLS 1.2 Mozilla's "intermediate" suites, ECDHE key exchange with AEAD ciphers only (TLS 1.3
suites are all of that kind and OpenSSL's defaults are kept); the server's order among them
(Python's default OP_CIPHER_SERVER_PREFERENCE), except that a client which puts ChaCha20 first
gets it (OpenSSL's SSL_OP_PRIORITIZE_CHACHA): such a client has no AES hardware, and
testssl.sh rates a server without an order of its own as a weakness; ALPN `http/1.1`; no
renegotiation (OP_NO_RENEGOTIATION: a client-initiated renegotiation costs the server a full
handshake and is a known DoS lever); session tickets on (OpenSSL's defaults: TLS 1.3 sends
two tickets after the handshake).

SNI: the default context (the bare [tls], else the first section) carries an `sni_callback`
that switches the connection to the context whose server_name matches the name the client
asked for (exact, or `*.example.com` for one label); no match keeps the default. OpenSSL
then takes the certificate and key of the chosen context; the protocol versions and the
cipher list in force are those of the default context, whose handshake it is.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from prefork.config.sections import Config, TLSSettings
from prefork.config.settings import default_tls
from prefork.errors import ConfigError

EXPIRY_WARNING = datetime.timedelta(days=14)
ALPN_PROTOCOLS = ["http/1.1"]
# SSL_OP_PRIORITIZE_CHACHA (OpenSSL 1.1.1 and later), which Python's ssl does not name: with
# the server's cipher order, ChaCha20 goes first when the client put it first.
OP_PRIORITIZE_CHACHA = 0x00200000
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class TLSContexts:
    """The contexts of a configuration: the default one, and the others by server name."""

    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext] = field(default_factory=dict)  # lower-case names
    wildcard: dict[str, ssl.SSLContext] = field(default_factory=dict)  # "example.com" for *.

    def for_name(self, name: str) -> ssl.SSLContext:
        """The context for the SNI `name` (the default when none is configured for it)."""
        name = name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            _, _, parent = name.partition(".")
            found = self.wildcard.get(parent)
        return found if found is not None else self.default

    def _on_sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                _context: ssl.SSLContext) -> None:
        if name:
            chosen = self.for_name(name)
            if chosen is not self.default:
                sslobj.context = chosen


def section_id(tls: TLSSettings) -> str:
    return f"tls:{tls.name}" if tls.name else "tls"


def build_contexts(config: Config) -> TLSContexts | None:
    """The contexts of every [tls] section (None without any). Raises ConfigError naming the
    section's key, the file and the line that set it."""
    default_settings = default_tls(config)
    if default_settings is None:
        return None
    contexts = TLSContexts(default=build_context(config, default_settings))
    for tls in config.tls:
        context = contexts.default if tls is default_settings else build_context(config, tls)
        for name in tls.server_name:
            lowered = name.lower().rstrip(".")
            if lowered.startswith("*."):
                contexts.wildcard[lowered[2:]] = context
            else:
                contexts.exact[lowered] = context
    if contexts.exact or contexts.wildcard:
        contexts.default.sni_callback = contexts._on_sni
    return contexts


def build_context(config: Config, tls: TLSSettings) -> ssl.SSLContext:
    """One section's server context; raises ConfigError."""
    section = section_id(tls)

    def fail(key: str, message: str) -> ConfigError:
        file, line = config.where(section, key)
        return ConfigError(message, file=file, line=line, key=f"{section}.{key}")

    for key in ("certificate", "certificate_key", "key_password_file"):
        path = getattr(tls, key)
        if path and not os.access(path, os.R_OK):
            why = "not found" if not os.path.exists(path) else "not readable by this user"
            raise fail(key, f"{path}: {why}")
    password = None
    if tls.key_password_file:
        try:
            with open(tls.key_password_file, encoding="utf-8") as file:
                password = file.readline().rstrip("\r\n")
        except (OSError, UnicodeError) as exc:
            raise fail("key_password_file", f"cannot read {tls.key_password_file}: {exc}") \
                from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.protocols[0]]
    context.maximum_version = _VERSIONS[tls.protocols[-1]]
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | OP_PRIORITIZE_CHACHA
    if not tls.session_tickets:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    try:
        context.set_ciphers(tls.ciphers)
    except ssl.SSLError:
        raise fail("ciphers", f"OpenSSL knows no cipher in {tls.ciphers!r}") from None
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    try:
        context.load_cert_chain(tls.certificate, tls.certificate_key, password=password or "")
    except ssl.SSLError as exc:
        raise _load_error(exc, tls, fail) from None
    except OSError as exc:
        raise fail("certificate", f"cannot read {tls.certificate}: {exc.strerror or exc}") \
            from None
    return context


def _load_error(exc: ssl.SSLError, tls: TLSSettings, fail: Callable[[str, str], ConfigError]
                ) -> ConfigError:
    """OpenSSL's refusal of a certificate and key, said in the operator's terms."""
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return fail("certificate_key", f"{tls.certificate_key} is not the key of the "
                                       f"certificate in {tls.certificate}")
    if _encrypted(tls.certificate_key):  # OpenSSL says only "PEM lib" for a bad password
        key = "key_password_file" if tls.key_password_file else "certificate_key"
        return fail(key, f"cannot decrypt {tls.certificate_key}: wrong or missing password")
    if _first_certificate(tls.certificate) is None:
        return fail("certificate", f"{tls.certificate}: no PEM certificate in it ({reason})")
    return fail("certificate_key", f"{tls.certificate_key}: not a usable PEM private key "
                                   f"({reason})")


def _encrypted(key_path: str) -> bool:
    """Whether a PEM key is encrypted (PKCS#8 or the traditional Proc-Type header)."""
    try:
        with open(key_path, "rb") as file:
            return b"ENCRYPTED" in file.read(4096)
    except OSError:
        return False


def _first_certificate(path: str) -> bytes | None:
    """The first PEM certificate block of `path` (the server's own), or None."""
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError:
        return None
    begin = text.find(b"-----BEGIN CERTIFICATE-----")
    end = text.find(b"-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return None
    return text[begin:end + len(b"-----END CERTIFICATE-----")] + b"\n"


def expiry_warnings(config: Config, now: datetime.datetime | None = None) -> list[str]:
    """A line for each certificate that expires within EXPIRY_WARNING (or has expired).
    Reading the dates needs the `cryptography` package (the `tls` extra): without it, one
    line says the dates were not checked."""
    if not config.tls:
        return []
    try:
        from cryptography import x509
    except ImportError:
        return ["certificate expiry dates not checked: the cryptography package is not "
                "installed (pip install 'prefork[tls]')"]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    warnings = []
    for tls in config.tls:
        pem = _first_certificate(tls.certificate)
        if pem is None:
            continue
        try:
            not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        except ValueError:
            continue  # OpenSSL accepted it; the warning is only a courtesy
        left = not_after - now
        where = f"[{section_id(tls)}] certificate {tls.certificate}"
        if left <= datetime.timedelta(0):
            warnings.append(f"{where} expired on {not_after:%Y-%m-%d %H:%M} UTC: clients "
                            f"will refuse it")
        elif left <= EXPIRY_WARNING:
            warnings.append(f"{where} expires on {not_after:%Y-%m-%d %H:%M} UTC, in "
                            f"{left.days} days: renew it, then httpdctl reload")
    return warnings


def check(config: Config) -> list[str]:
    """Build every context (the check that each key matches its certificate and the files
    are readable); raises ConfigError. Returns warnings (certificates about to expire)."""
    build_contexts(config)
    return expiry_warnings(config)
