"""Throw-away certificates for TLS tests, made with the ``openssl`` binary.

:func:`make_pki` writes, in a directory of the test's: a private CA, a server certificate it
signed (with the subject alternative names asked for: ``localhost`` and ``127.0.0.1`` unless told
otherwise), a client certificate it signed, and a second, unrelated CA with a client certificate
of its own (the one a server trusting only the first CA must refuse). Keys are P-256 EC, valid
for a day. Tests needing the binary skip with :data:`needs_openssl` when it is missing.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL_TIMEOUT = 30.0
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
"""Mark for tests (or ``pytestmark``) that need certificates from :func:`make_pki`."""


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """``(key, cert)`` bytes, the order ``grpc.ssl_server_credentials`` takes them in."""
        return self.key.read_bytes(), self.cert.read_bytes()


@dataclass(frozen=True)
class PKI:
    """The files :func:`make_pki` wrote."""

    ca: Path
    """The private CA's certificate (PEM): what clients and servers trust."""
    server: KeyPair
    """Server certificate signed by :attr:`ca`, for the names given to :func:`make_pki`."""
    client: KeyPair
    """Client certificate (``CN=client``, clientAuth) signed by :attr:`ca`."""
    other_ca: Path
    """A second CA, unrelated to :attr:`ca`."""
    other_client: KeyPair
    """Client certificate (``CN=intruder``) signed by :attr:`other_ca`."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=OPENSSL_TIMEOUT
    )


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def _issue(directory: Path, ca: str, name: str, extensions: str) -> KeyPair:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip
    return KeyPair(directory / f"{name}.pem", directory / f"{name}.key")


def _alt_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def make_pki(directory: Path, server_names: Sequence[str] = ("localhost", "127.0.0.1")) -> PKI:
    """Write a CA, a server and a client certificate, and another CA's client certificate.

    Args:
        directory: where the files go (it must exist).
        server_names: the server certificate's subject alternative names (host names, or IP
            addresses).
    """
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    alt_names = ",".join(_alt_name(name) for name in server_names)
    server = _issue(
        directory,
        "ca",
        "server",
        f"subjectAltName={alt_names}\nextendedKeyUsage=serverAuth\n",
    )
    client = _issue(directory, "ca", "client", "extendedKeyUsage=clientAuth\n")
    intruder = _issue(directory, "other-ca", "intruder", "extendedKeyUsage=clientAuth\n")
    return PKI(directory / "ca.pem", server, client, directory / "other-ca.pem", intruder)
