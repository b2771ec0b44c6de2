"""TLS for `streamscribe serve`: your own certificate, or a self-signed one for development.

Why this exists: some clients refuse plain `ws://` outright (the JavaScript AssemblyAI SDK checks
for `wss:`, the OpenAI Realtime client always dials `wss://`), and a browser gives a page its
microphone only in a secure context. So the server can serve HTTPS and WSS itself, with
uvicorn's own TLS, from either

- `--ssl-certfile F --ssl-keyfile K`: a PEM certificate (chain) and its private key, or
- `--tls self-signed`: a small local certificate authority and a certificate it signed for
  localhost (127.0.0.1, ::1 and the served host), made once in `<data_dir>/tls` and reused until
  it nears expiry. The CA's private key is never written: the CA a developer trusts
  (`<data_dir>/tls/ca.pem`) can vouch for that one certificate and nothing else.

`tls_files(settings)` settles which (or plain HTTP), refusing a bad combination before anything
starts with a message that names the fix; `trust_hint()` is the one line that tells people how to
make their clients trust the self-signed certificate. What this module deliberately leaves to
others: serving (uvicorn, configured in `server.app.run`) and the client side (`--ca-file` in
`streamscribe.client`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from streamscribe.config import Settings

SELF_SIGNED = "self-signed"
TLS_DIR = "tls"
CERT_NAME = "localhost.pem"  # the server's certificate, then the CA's (a full chain)
KEY_NAME = "localhost-key.pem"
CA_NAME = "ca.pem"  # what clients trust
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 825  # the longest validity Apple's platforms accept for a trusted server certificate
RENEW_DAYS = 30  # a certificate closer than this to expiry is made anew
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


class TlsRefused(ValueError):
    """The TLS settings cannot work; the message says what to change."""


@dataclass(frozen=True)
class TlsFiles:
    """What uvicorn serves with: a certificate (chain) and its key; `ca` when self-signed."""

    certfile: Path
    keyfile: Path
    ca: Path | None = None  # the self-signed certificate's authority, for clients to trust
    created: bool = False  # made by this start (not reused)

    def uvicorn_options(self) -> dict[str, str]:
        return {"ssl_certfile": str(self.certfile), "ssl_keyfile": str(self.keyfile)}


def tls_files(settings: Settings) -> TlsFiles | None:
    """The files `settings` ask to serve TLS with (None: plain HTTP); TlsRefused if they can't."""
    mode = (settings.tls or "").strip().lower()
    if mode in ("", "off", "none", "no"):
        mode = ""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if mode and mode != SELF_SIGNED:
        raise TlsRefused(
            f"--tls {settings.tls!r} is not a TLS mode: use --tls {SELF_SIGNED} (a development "
            "certificate for localhost), or --ssl-certfile and --ssl-keyfile for your own"
        )
    if mode and (cert or key):
        raise TlsRefused(
            f"--tls {SELF_SIGNED} and --ssl-certfile/--ssl-keyfile exclude each other: keep "
            f"--tls {SELF_SIGNED} for a development certificate, or drop it to serve your own"
        )
    if mode:
        return self_signed(settings.data_dir / TLS_DIR, _served_names(settings.host))
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = "--ssl-certfile", "--ssl-keyfile"
        if cert is None:
            given, missing = missing, given
        raise TlsRefused(
            f"{given} needs {missing} too: give both the certificate (PEM, with its chain) and "
            f"its private key, or --tls {SELF_SIGNED} for a development certificate"
        )
    check_pair(Path(cert), Path(key))
    return TlsFiles(Path(cert), Path(key))


def check_pair(cert: Path, key: Path) -> None:
    """Refuse files that are missing, unreadable, not PEM, encrypted or not a matching pair."""
    for flag, path in (("--ssl-certfile", cert), ("--ssl-keyfile", key)):
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            raise TlsRefused(
                f"cannot read {flag} {path}: {exc.strerror or exc}; give a readable PEM file"
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # a password callback, so an encrypted key fails here instead of prompting on a terminal
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise TlsRefused(
            f"cannot serve TLS with --ssl-certfile {cert} and --ssl-keyfile {key} ({reason}): "
            "give a PEM certificate (chain) and the unencrypted PEM private key that belongs to it"
        ) from None


def trust_hint(files: TlsFiles) -> str:
    """One line on how clients trust a self-signed certificate (empty for your own)."""
    if files.ca is None:
        return ""
    ca = files.ca.resolve()
    made = "made" if files.created else "reused"
    return (
        f"TLS: self-signed certificate for {', '.join(certificate_names(files.certfile))} "
        f"({made} in {ca.parent}). To trust it: NODE_EXTRA_CA_CERTS={ca} (Node), "
        f"SSL_CERT_FILE={ca} or REQUESTS_CA_BUNDLE={ca} (Python), --ca-file {ca} "
        "(streamscribe stream/mic); browsers: import it as a certificate authority"
    )


# ---------------------------------------------------------------------------- self-signed


def _served_names(host: str) -> list[str]:
    names = list(LOCAL_NAMES)
    host = host.strip()
    if host not in _WILDCARD_HOSTS and host.strip("[]") not in names:
        names.append(host.strip("[]"))
    return names


def self_signed(directory: Path, names: Iterable[str] = LOCAL_NAMES) -> TlsFiles:
    """The development certificate in `directory`: reused while it is valid for `names` and
    not near expiry, made anew (with a new CA) otherwise."""
    names = list(names)
    cert, key, ca = directory / CERT_NAME, directory / KEY_NAME, directory / CA_NAME
    if _reusable(cert, key, ca, names):
        return TlsFiles(cert, key, ca, created=False)
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem, ca_pem = make_certificate(names)
    _write(key, key_pem, 0o600)
    _write(ca, ca_pem, 0o644)
    _write(cert, cert_pem + ca_pem, 0o644)
    return TlsFiles(cert, key, ca, created=True)


def make_certificate(
    names: Iterable[str], now: dt.datetime | None = None
) -> tuple[bytes, bytes, bytes]:
    """A new CA and a server certificate it signed for `names`: (cert PEM, key PEM, CA PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "streamscribe development"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"streamscribe local CA {now:%Y-%m-%d %H:%M}"),
        ]
    )
    ca_skid = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_skid, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "streamscribe development"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_skid),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(pem), key_pem, ca_cert.public_bytes(pem)


def certificate_names(cert: Path) -> list[str]:
    """The names (DNS and IP) the first certificate in a PEM file is valid for."""
    from cryptography import x509

    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return [*san.get_values_for_type(x509.DNSName), *ips]


def _reusable(cert: Path, key: Path, ca: Path, names: list[str]) -> bool:
    if not (cert.is_file() and key.is_file() and ca.is_file()):
        return False
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        x509.load_pem_x509_certificate(ca.read_bytes())
        have = {_canonical(n) for n in certificate_names(cert)}
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except (ValueError, OSError, ssl.SSLError):
        return False
    left = loaded.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left > dt.timedelta(days=RENEW_DAYS) and {_canonical(n) for n in names} <= have


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower()


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)
