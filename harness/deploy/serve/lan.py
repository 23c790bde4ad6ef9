"""``harness serve --lan``: from the command line to a phone on the same network in one step.

The machine's LAN address; a token when none is given; a self-signed certificate for that
address when no ``--ssl-certfile`` is given (phones give the live camera only to HTTPS
pages), kept in the user's config folder and reused while it is valid for the address;
and the page's address, with the token in its fragment (never sent to the server), as a
URL and a QR code in the terminal.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from pathlib import Path

__all__ = ["lan_address", "new_token", "self_signed", "door_url", "qr_text", "config_dir"]

CERT_DAYS = 365


def lan_address() -> str:
    """This machine's address on its local network: the source address of a route to a
    private address (a UDP socket's connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if ipaddress.ip_address(address).is_loopback:
        raise ValueError("--lan: this machine has no network address besides loopback (is it on a network?); "
                         "give one with --lan ADDRESS")
    return address


def new_token() -> str:
    return secrets.token_urlsafe(24)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agegender-harness"


def self_signed(address: str, folder: Path | None = None) -> tuple[Path, Path]:
    """(certificate, key) for ``address``, made once and reused while valid for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = (folder or config_dir()) / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{address}.pem", folder / f"{address}.key"
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert_path.is_file() and key_path.is_file():
        try:
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            names = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if (ipaddress.ip_address(address) in names.get_values_for_type(x509.IPAddress)
                    and existing.not_valid_after_utc > now + datetime.timedelta(days=1)):
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass   # unreadable or for another address: made anew
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"harness door {address}")])
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # the key is for this user only
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def door_url(scheme: str, address: str, port: int, token: str | None) -> str:
    shown = f"[{address}]" if ":" in address else address
    return f"{scheme}://{shown}:{port}/" + (f"#token={token}" if token else "")


def qr_text(url: str) -> str:
    """The URL as a QR code drawn with block characters, for a phone's camera to read."""
    import io

    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()
