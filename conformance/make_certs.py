"""Make the certificates the TLS conformance tests use (Python's
`cryptography`): a CA, a server certificate for 127.0.0.1 and localhost,
a client certificate with CN=tls-client and one with CN=tls-stranger, and
a second CA nobody trusts. Writes PEM files into the directory given.

Usage: python3 make_certs.py DIR
"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def name(cn, org=None):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def build(subject, issuer, issuer_key, key, ca=False, usage=None, sans=None):
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(days=1))
         .not_valid_after(NOW + datetime.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                            critical=True)
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)  # RabbitMQ, as the oracle, reads them as its own user


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def main(out):
    os.makedirs(out, exist_ok=True)
    key = lambda: ec.generate_private_key(ec.SECP256R1())
    ca_key = key()
    ca_name = name("Warren conformance CA")
    ca = build(ca_name, ca_name, ca_key, ca_key, ca=True)
    write(f"{out}/ca.pem", pem_cert(ca))
    other_key = key()
    other_name = name("Untrusted CA")
    write(f"{out}/other-ca.pem", pem_cert(build(other_name, other_name, other_key, other_key, ca=True)))
    server_key = key()
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = build(name("localhost"), ca_name, ca_key, server_key,
                   usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)
    write(f"{out}/server.pem", pem_cert(server))
    write(f"{out}/server.key", pem_key(server_key))
    for who in ("tls-client", "tls-stranger"):
        k = key()
        cert = build(name(who, "Warren conformance"), ca_name, ca_key, k,
                     usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        write(f"{out}/{who}.pem", pem_cert(cert))
        write(f"{out}/{who}.key", pem_key(k))


if __name__ == "__main__":
    main(sys.argv[1])
