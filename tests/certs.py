"""Certificates for real TLS in the tests: a CA made by trustme, and a certificate it signed for 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import trustme

HOST = "127.0.0.1"


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """The CA's certificate, the server's certificate and its key, as PEM files in ``directory``."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file
