"""A throwaway OpenLDAP slapd on loopback ports, with its own cn=config and data, for the LDAP connector tests.

The configuration is built with `slapadd -n0` from an LDIF in a temporary
folder (mdb backend, suffix dc=example,dc=test), so the machine's own slapd,
if any, is neither used nor touched. slapd listens on ldap:// (StartTLS
offered) and ldaps://, with a certificate from a CA made here, and the
portal binds as a service account whose ACLs are what the README asks of
production: read people, write the membership attributes of groups, write
under the ledger OU. `reset()` puts the directory back to the same people
and groups between tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools import pgcluster

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-for-tests"
SERVICE_DN = f"cn=jitportal,ou=services,{SUFFIX}"
SERVICE_PW = "portal-bind-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
LEDGER = f"ou=jitportal,{SUFFIX}"
USER_PASSWORD = "directory-password-1"  # every test person's own password


def available() -> bool:
    return all(os.path.exists(p) for p in (SLAPD, SLAPADD, f"{SCHEMA_DIR}/nis.ldif", f"{MODULE_DIR}/back_mdb.so"))


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


# The directory every test starts from. "ops" and "dba" are groupOfNames,
# "audit" a groupOfUniqueNames, "deploy" a posixGroup (memberUid). bob is a
# member of "ops" and "deploy" outside the portal; "solo" has one member.
PEOPLE_ROWS = {
    "ana": {"mail": "ana@example.com", "cn": "Ana"},
    "bob": {"mail": "bob@example.com", "cn": "Bob"},
    "carl": {"mail": "carl@example.com", "cn": "Carl"},
    # Two entries with one email: a filter on mail is not unique for them.
    "dup1": {"mail": "dup@example.com", "cn": "Dup One"},
    "dup2": {"mail": "dup@example.com", "cn": "Dup Two"},
    # An email with filter metacharacters (valid in an address's local part).
    "star": {"mail": "st*r)(uid=*@example.com", "cn": "Star"},
}


def _base_entries() -> list[tuple[str, dict]]:
    entries = [
        (SUFFIX, {"objectClass": ["dcObject", "organization"], "dc": "example", "o": "Example"}),
        (PEOPLE, {"objectClass": ["organizationalUnit"], "ou": "people"}),
        (GROUPS, {"objectClass": ["organizationalUnit"], "ou": "groups"}),
        (f"ou=services,{SUFFIX}", {"objectClass": ["organizationalUnit"], "ou": "services"}),
        (LEDGER, {"objectClass": ["organizationalUnit"], "ou": "jitportal"}),
        (
            SERVICE_DN,
            {
                "objectClass": ["applicationProcess", "simpleSecurityObject"],
                "cn": "jitportal",
                "userPassword": SERVICE_PW,
            },
        ),
    ]
    for number, (uid, row) in enumerate(PEOPLE_ROWS.items(), start=1):
        entries.append((person_dn(uid), {
            "objectClass": ["inetOrgPerson", "posixAccount"], "uid": uid, "cn": row["cn"], "sn": row["cn"].split()[-1],
            "mail": row["mail"], "uidNumber": str(10000 + number), "gidNumber": "10000",
            "homeDirectory": f"/home/{uid}", "userPassword": USER_PASSWORD,
        }))  # fmt: skip
    entries += [
        (group_dn("ops"), {"objectClass": ["groupOfNames"], "cn": "ops", "member": [person_dn("bob")]}),
        (group_dn("dba"), {"objectClass": ["groupOfNames"], "cn": "dba", "member": [person_dn("carl")]}),
        (group_dn("solo"), {"objectClass": ["groupOfNames"], "cn": "solo", "member": [person_dn("carl")]}),
        (
            group_dn("audit"),
            {"objectClass": ["groupOfUniqueNames"], "cn": "audit", "uniqueMember": [person_dn("carl")]},
        ),
        (
            group_dn("deploy"),
            {"objectClass": ["posixGroup"], "cn": "deploy", "gidNumber": "20000", "memberUid": ["bob"]},
        ),
    ]
    return entries


def _config_ldif(base: Path, tls: dict[str, Path]) -> str:
    schemas = "".join(
        f"include: file://{SCHEMA_DIR}/{name}.ldif\n\n" for name in ("core", "cosine", "nis", "inetorgperson")
    )
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {base}/slapd.pid
olcArgsFile: {base}/slapd.args
olcTLSCACertificateFile: {tls["ca"]}
olcTLSCertificateFile: {tls["cert"]}
olcTLSCertificateKeyFile: {tls["key"]}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}\
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: 1000

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: {ROOT_DN}
olcRootPW: {ROOT_PW}
olcDbDirectory: {base}/data
olcDbMaxSize: 104857600
# Throwaway data: no fsync per write.
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: uid,mail,cn eq
olcDbIndex: member,uniqueMember,memberUid eq
olcDbIndex: description eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to dn.subtree="{LEDGER}" by dn.exact="{SERVICE_DN}" write by * none
olcAccess: {{2}}to dn.children="{GROUPS}" attrs=member,uniqueMember,memberUid by dn.exact="{SERVICE_DN}" write by users read
olcAccess: {{3}}to * by dn.exact="{SERVICE_DN}" read by users read by * none
"""  # noqa: E501 (LDIF: one olcAccess rule a line, as slapadd reads it)


def _make_tls(folder: Path) -> dict[str, Path]:
    """Write a CA and a server certificate for 127.0.0.1 and localhost; return their paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jitportal test LDAP CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths["key"].chmod(0o600)
    return paths


class SlapdServer:
    """One slapd with its own cn=config and mdb data in a temporary folder, on two free loopback ports."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="jitportal-slapd-"))
        self.port = pgcluster.free_port()
        self.tls_port = pgcluster.free_port()
        self.log = self.base / "slapd.log"
        self.tls: dict[str, Path] = {}
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def start(self) -> None:
        (self.base / "config").mkdir()
        (self.base / "data").mkdir()
        self.tls = _make_tls(self.base)
        ldif = self.base / "config.ldif"
        ldif.write_text(_config_ldif(self.base, self.tls))
        done = subprocess.run(
            [SLAPADD, "-n0", "-F", str(self.base / "config"), "-l", str(ldif)],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"slapadd -n0 failed:\n{done.stdout}{done.stderr}")
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 (open while slapd runs; closed in stop())
        # -d keeps slapd in the foreground (so the fixture owns the process);
        # "stats" logs one line per operation, for reading a failure.
        self._proc = subprocess.Popen(
            [SLAPD, "-d", "stats", "-F", str(self.base / "config"), "-h", f"{self.url}/ {self.ldaps_url}/"],
            stdout=self._log_fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("slapd exited at start:\n" + self.log_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("slapd did not start listening:\n" + self.log_text())
        self.reset()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log_fh.close()
            self._proc = None
        shutil.rmtree(self.base, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- data -------------------------------------------------------------------

    def admin(self) -> ldap3.Connection:
        """Return a connection bound as the directory's root DN (the test's own view, not the portal's)."""
        server = ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(server, ROOT_DN, ROOT_PW, auto_bind=True, raise_exceptions=True, receive_timeout=10)

    def reset(self) -> None:
        """Delete everything below the suffix and load the base people and groups again."""
        with self.admin() as conn:
            try:
                conn.search(SUFFIX, "(objectClass=*)", ldap3.SUBTREE, attributes=[])
                found = [entry.entry_dn for entry in conn.entries]
            except ldap3.core.exceptions.LDAPNoSuchObjectResult:
                found = []
            # Children before their parents: the deepest DNs first.
            for dn in sorted(found, key=lambda d: len(ldap3.utils.dn.parse_dn(d)), reverse=True):
                conn.delete(dn)
            for dn, attributes in _base_entries():
                conn.add(dn, attributes=attributes)

    def members(self, group: str) -> set[str]:
        """Return the membership values of a group, lowercased, whatever its style."""
        with self.admin() as conn:
            conn.search(group, "(objectClass=*)", ldap3.BASE, attributes=["member", "uniqueMember", "memberUid"])
            entry = conn.response[0]["attributes"]
        return {v.lower() for key in ("member", "uniqueMember", "memberUid") for v in entry.get(key, [])}

    def modify(self, dn: str, changes: dict) -> None:
        with self.admin() as conn:
            conn.modify(dn, changes)

    def add(self, dn: str, attributes: dict) -> None:
        with self.admin() as conn:
            conn.add(dn, attributes=attributes)

    def delete(self, dn: str) -> None:
        with self.admin() as conn:
            conn.delete(dn)

    def children(self, dn: str) -> list[str]:
        with self.admin() as conn:
            conn.search(dn, "(objectClass=*)", ldap3.LEVEL, attributes=[])
            return sorted(entry.entry_dn for entry in conn.entries)

    def bind_as(self, uid: str, password: str = USER_PASSWORD) -> ldap3.Connection:
        """Bind as a person, the way an application checking group membership would."""
        server = ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server, person_dn(uid), password, auto_bind=True, raise_exceptions=True, receive_timeout=10
        )
