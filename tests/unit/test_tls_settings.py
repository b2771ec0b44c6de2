"""TLS settings: the self-signed development certificate (made once, reused, renewed) and the
refusals that name their fix (streamscribe.server.tls); the client's CA file."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from streamscribe.client.streaming import AsyncStreamingClient, tls_context
from streamscribe.config import Settings
from streamscribe.server import tls
from streamscribe.server.tls import TlsRefused, tls_files


def verify(files: tls.TlsFiles, name: x509.GeneralName) -> None:
    """Verify the served chain against the CA the way a client does (raises if it fails)."""
    chain = x509.load_pem_x509_certificates(files.certfile.read_bytes())
    store = Store(x509.load_pem_x509_certificates(files.ca.read_bytes()))
    verifier = PolicyBuilder().store(store).build_server_verifier(name)
    verifier.verify(chain[0], chain[1:])


def settings(tmp_path: Path, **fields) -> Settings:
    return Settings(data_dir=tmp_path, **fields)


# ---------------------------------------------------------------------------- self-signed


def test_self_signed_makes_a_ca_and_a_localhost_certificate(tmp_path):
    files = tls_files(settings(tmp_path, tls="self-signed"))
    assert files is not None and files.created
    assert files.certfile == tmp_path / "tls" / "localhost.pem"
    assert files.ca == tmp_path / "tls" / "ca.pem"
    for name in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        verify(files, name)
    with pytest.raises(Exception, match="(?i)name|match|san"):
        verify(files, x509.DNSName("example.com"))
    assert stat.S_IMODE(os.stat(files.keyfile).st_mode) == 0o600
    leaf = x509.load_pem_x509_certificates(files.certfile.read_bytes())[0]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_the_certificate_is_reused_while_valid(tmp_path):
    first = tls_files(settings(tmp_path, tls="self-signed"))
    before = first.certfile.read_bytes(), first.keyfile.read_bytes()
    again = tls_files(settings(tmp_path, tls="Self-Signed"))
    assert again is not None and not again.created
    assert (again.certfile.read_bytes(), again.keyfile.read_bytes()) == before


def test_a_certificate_near_expiry_is_made_anew(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=tls.VALID_DAYS - 10)
    cert, key, ca = tls.make_certificate(tls.LOCAL_NAMES, now=long_ago)
    (folder / tls.CERT_NAME).write_bytes(cert + ca)
    (folder / tls.KEY_NAME).write_bytes(key)
    (folder / tls.CA_NAME).write_bytes(ca)
    files = tls.self_signed(folder)
    assert files.created
    assert (folder / tls.CERT_NAME).read_bytes() != cert + ca
    verify(files, x509.DNSName("localhost"))


def test_a_damaged_certificate_is_made_anew(tmp_path):
    first = tls.self_signed(tmp_path)
    first.keyfile.write_bytes(b"not a key")
    again = tls.self_signed(tmp_path)
    assert again.created
    verify(again, x509.DNSName("localhost"))


def test_the_served_host_joins_the_names(tmp_path):
    tls_files(settings(tmp_path, tls="self-signed"))
    files = tls_files(settings(tmp_path, tls="self-signed", host="10.1.2.3"))
    assert files.created  # the reused one did not name 10.1.2.3
    verify(files, x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    wildcard = tls_files(settings(tmp_path, tls="self-signed", host="0.0.0.0"))
    assert not wildcard.created and "0.0.0.0" not in tls.certificate_names(wildcard.certfile)


def test_the_trust_hint_is_one_line_naming_every_way_to_trust(tmp_path):
    files = tls_files(settings(tmp_path, tls="self-signed"))
    hint = tls.trust_hint(files)
    ca = str(files.ca.resolve())
    assert "\n" not in hint
    for part in (
        f"NODE_EXTRA_CA_CERTS={ca}",
        f"SSL_CERT_FILE={ca}",
        f"REQUESTS_CA_BUNDLE={ca}",
        f"--ca-file {ca}",
        "browser",
    ):
        assert part in hint, part


# ---------------------------------------------------------------------------- your own files


@pytest.fixture
def own_pair(tmp_path) -> tuple[Path, Path]:
    cert, key, ca = tls.make_certificate(["localhost"])
    (tmp_path / "cert.pem").write_bytes(cert + ca)
    (tmp_path / "key.pem").write_bytes(key)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_plain_http_by_default(tmp_path):
    assert tls_files(settings(tmp_path)) is None
    assert tls_files(settings(tmp_path, tls="off")) is None


def test_your_own_certificate_is_served_as_given(tmp_path, own_pair):
    cert, key = own_pair
    files = tls_files(settings(tmp_path, ssl_certfile=cert, ssl_keyfile=key))
    assert files == tls.TlsFiles(cert, key)
    assert files.uvicorn_options() == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    assert tls.trust_hint(files) == ""
    assert not (tmp_path / "tls").exists()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tls": "self-signed", "ssl_certfile": "c.pem", "ssl_keyfile": "k.pem"}, "exclude"),
        ({"tls": "letsencrypt"}, "--tls self-signed"),
        ({"ssl_certfile": "c.pem"}, "--ssl-certfile needs --ssl-keyfile"),
        ({"ssl_keyfile": "k.pem"}, "--ssl-keyfile needs --ssl-certfile"),
        ({"ssl_certfile": "missing.pem", "ssl_keyfile": "k.pem"}, "cannot read --ssl-certfile"),
    ],
)
def test_a_combination_that_cannot_work_is_refused_naming_the_fix(tmp_path, fields, says):
    with pytest.raises(TlsRefused, match=says):
        tls_files(settings(tmp_path, **fields))


def test_files_that_are_not_a_pair_are_refused(tmp_path, own_pair):
    cert, key = own_pair
    other_cert, _, _ = tls.make_certificate(["localhost"])
    (tmp_path / "other.pem").write_bytes(other_cert)
    with pytest.raises(TlsRefused, match="belongs to it"):
        tls_files(settings(tmp_path, ssl_certfile=tmp_path / "other.pem", ssl_keyfile=key))
    (tmp_path / "garbage.pem").write_text("hello")
    with pytest.raises(TlsRefused, match="PEM"):
        tls_files(settings(tmp_path, ssl_certfile=tmp_path / "garbage.pem", ssl_keyfile=key))


def test_an_encrypted_key_is_refused_not_prompted_for(tmp_path, own_pair):
    cert, _ = own_pair
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "locked.pem").write_bytes(encrypted)
    with pytest.raises(TlsRefused, match="unencrypted"):
        tls_files(settings(tmp_path, ssl_certfile=cert, ssl_keyfile=tmp_path / "locked.pem"))


def test_the_tls_settings_are_serve_flags():
    from streamscribe.cli.serve import settings_parameters

    names = {p.name for p in settings_parameters()}
    assert {"tls", "ssl_certfile", "ssl_keyfile"} <= names


# ---------------------------------------------------------------------------- the client side


def test_a_ca_file_applies_to_wss_only(tmp_path):
    files = tls.self_signed(tmp_path)
    assert tls_context("wss://127.0.0.1:8000/v3/ws", None) is None
    assert tls_context("wss://127.0.0.1:8000/v3/ws", files.ca) is not None
    with pytest.raises(ValueError, match="wss://"):
        tls_context("ws://127.0.0.1:8000/v3/ws", files.ca)
    (tmp_path / "nope.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="CA file"):
        tls_context("wss://127.0.0.1:8000/v3/ws", tmp_path / "nope.pem")


def test_the_client_takes_a_ca_file(tmp_path):
    files = tls.self_signed(tmp_path)
    client = AsyncStreamingClient("https://127.0.0.1:8443", ca_file=files.ca)
    assert client.session_url.startswith("wss://127.0.0.1:8443/v3/ws?")
    assert client.ca_file == files.ca
