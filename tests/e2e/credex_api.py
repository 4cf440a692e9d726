"""Typed client side of the credex black-box tests (issue 4): Python stubs generated from proto/
at session start, dev JWTs, the three kinds of gateway callers, OpenFGA tuple writes and a
MongoDB client on the stack's FerretDB.

Nothing here knows the services' internals: the tests act as the UI (a user through the edge-like
path), as a browser (peer `edge`, marked browser) and as an agent runtime (its own mTLS identity,
a service JWT and the user's on-behalf-of token), exactly as docs/IDENTITY.md describes them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

import credex_harness as h

ROOT = h.ROOT
PROTO_DIR = ROOT / "proto"
PYGEN_DIR = h.TOOLS / "pygen"
REASON_KEY = "credex-reason"
C = grpc.StatusCode

AGENT = "agent-runtime"          # the approved server-side caller (platform retriever grant)
UNLISTED = "unlisted-runtime"    # a service of our CA without the retriever grant
DEFAULT_USE = "mcp_server_env"


# ---- generated stubs ----------------------------------------------------------------------------

class Pb:
    """The generated modules: pb.common, pb.gateway, pb.store, pb.keywrap, pb.oauth and their
    *_grpc companions (pb.gateway_grpc ...)."""


_pb_lock = threading.Lock()
_pb: Pb | None = None


def _proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "credex" / "v1").glob("*.proto"))


def generate_stubs() -> Path:
    """Generate (once per proto content) the Python stubs of proto/credex/v1 under
    .tools/pygen/<hash>; returns that directory. Only credex/v1 is generated: a generated
    `grpc/` package would shadow grpcio."""
    from grpc_tools import protoc  # grpcio-tools (tests/e2e/requirements.txt)
    import grpc_tools

    digest = hashlib.sha256()
    digest.update(getattr(grpc_tools, "__version__", "").encode())
    for p in _proto_files():
        digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    out = PYGEN_DIR / digest.hexdigest()[:20]
    if (out / ".done").exists():
        return out
    PYGEN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=PYGEN_DIR))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_DIR)) for p in _proto_files())]
    cwd = os.getcwd()
    try:
        os.chdir(PROTO_DIR)
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {PROTO_DIR}")
    (tmp / ".done").touch()
    try:
        tmp.rename(out)
    except OSError:  # a concurrent session won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def pb() -> Pb:
    global _pb
    with _pb_lock:
        if _pb is None:
            out = generate_stubs()
            if str(out) not in sys.path:
                sys.path.insert(0, str(out))
            mods = Pb()
            for name in ("common", "keywrap", "store", "oauth", "gateway"):
                setattr(mods, name, importlib.import_module(f"credex.v1.{name}_pb2"))
                setattr(mods, f"{name}_grpc", importlib.import_module(f"credex.v1.{name}_pb2_grpc"))
            _pb = mods
        return _pb


# ---- errors ---------------------------------------------------------------------------------------

def reason(err: grpc.RpcError) -> str | None:
    """The credex reason code of a failed call (trailing metadata `credex-reason`)."""
    for key, value in (err.trailing_metadata() or ()):
        if key == REASON_KEY:
            return value
    return None


def describe(err: grpc.RpcError) -> str:
    return f"{err.code()} reason={reason(err)!r} details={err.details()!r}"


# ---- JWTs -----------------------------------------------------------------------------------------

class TokenMint:
    """Dev tokens signed with the stack's dev issuer key (ES256, kid from jwks.json)."""

    def __init__(self, stack: h.Stack):
        from cryptography.hazmat.primitives import serialization

        self.key = serialization.load_pem_private_key(stack.pki.jwt_key.read_bytes(), None)
        self.kid = json.loads(stack.pki.jwks.read_text())["keys"][0]["kid"]
        self.issuer = stack.env.get("CREDEX_JWT_ISSUER") or \
            (stack.pki.dir / "jwt-issuer.txt").read_text().strip()
        self.audience = stack.env.get("CREDEX_JWT_AUDIENCE", "credex")

    def mint(self, claims: dict, *, ttl: int = 300, drop: tuple[str, ...] = (), headers: dict | None = None,
             key=None, algorithm: str = "ES256") -> str:
        import jwt

        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now - 5, "exp": now + ttl,
                "jti": uuid.uuid4().hex} | claims
        for name in drop:
            body.pop(name, None)
        hdr = {"kid": self.kid} | (headers or {})
        return jwt.encode(body, key or self.key, algorithm=algorithm, headers=hdr)

    def user(self, sub: str, **overrides) -> str:
        """An end user's access token (sub = the user id, azp the UI's client, no client_id)."""
        drop = overrides.pop("drop", ())
        ttl = overrides.pop("ttl", 300)
        return self.mint({"sub": sub, "azp": "caipe-ui", "preferred_username": sub, "typ": "Bearer"} | overrides,
                         ttl=ttl, drop=drop)

    def on_behalf_of(self, sub: str, service: str, **overrides) -> str:
        """A user's token issued to a service by token exchange: sub = the user, azp = the
        service, no client_id (docs/IDENTITY.md)."""
        return self.user(sub, azp=service, **overrides)

    def service(self, name: str, **overrides) -> str:
        """A service JWT (Keycloak client-credentials shape): sub service-account-NAME, azp NAME,
        and client_id NAME, the claim that only client-credentials tokens carry (the gateway's
        default CREDEX_JWT_SERVICE_RULE=client_claim)."""
        drop = overrides.pop("drop", ())
        ttl = overrides.pop("ttl", 300)
        return self.mint({"sub": f"service-account-{name}", "azp": name, "client_id": name,
                          "preferred_username": f"service-account-{name}", "typ": "Bearer"} | overrides,
                         ttl=ttl, drop=drop)


# ---- callers --------------------------------------------------------------------------------------

@dataclass
class Caller:
    """One way of reaching the gateway: an mTLS identity plus request metadata."""
    api: "Api"
    peer: str
    metadata: list[tuple[str, str]] = field(default_factory=list)
    addr: str | None = None

    def channel(self) -> grpc.Channel:
        return self.api.channel(self.peer, self.addr)

    def call_with(self, service: str, method: str, request, *, cid: str | None = None, timeout: float = 10,
                  metadata: list[tuple[str, str]] | None = None):
        """(reply, call) of credex.v1.<service>/<method>; raises grpc.RpcError."""
        p = self.api.pb
        module = p.oauth_grpc if service in ("Connectors", "Connections", "ProviderTokens") else p.gateway_grpc
        stub = getattr(module, f"{service}Stub")(self.channel())
        md = list(self.metadata) + list(metadata or ())
        if cid:
            md.append(("x-correlation-id", cid))
        return getattr(stub, method).with_call(request, timeout=timeout, metadata=md)

    def call(self, service: str, method: str, request, **kw):
        return self.call_with(service, method, request, **kw)[0]

    # -- Secrets ---------------------------------------------------------------------------
    def create(self, value: bytes | str, *, key: str | None = None, name: str | None = None, kind=None,
               allowed_uses=(), owner=None, description: str = "", provider: str = "", **kw):
        g, c = self.api.pb.gateway, self.api.pb.common
        if isinstance(value, str):
            value = value.encode()
        self.api.values.add(value)
        req = g.CreateSecretRequest(
            idempotency_key=key or str(uuid.uuid4()),
            kind=kind if kind is not None else c.SECRET_KIND_API_KEY,
            display_name=name or f"e2e {uuid.uuid4().hex[:8]}",
            description=description, provider=provider, allowed_uses=list(allowed_uses), value=value)
        if owner is not None:
            req.owner.CopyFrom(owner)
        return self.call("Secrets", "CreateSecret", req, **kw)

    def get(self, secret_id: str, **kw):
        return self.call("Secrets", "GetSecret", self.api.pb.gateway.GetSecretRequest(secret_id=secret_id), **kw)

    def list(self, **fields):
        kw = {k: fields.pop(k) for k in ("cid", "timeout") if k in fields}
        return self.call("Secrets", "ListSecrets", self.api.pb.gateway.ListSecretsRequest(**fields), **kw)

    def rotate(self, secret_id: str, value: bytes | str, expected_version: int = 0, **kw):
        if isinstance(value, str):
            value = value.encode()
        self.api.values.add(value)
        req = self.api.pb.gateway.RotateSecretRequest(secret_id=secret_id, expected_version=expected_version,
                                                      value=value)
        return self.call("Secrets", "RotateSecret", req, **kw)

    def versions(self, secret_id: str, **kw):
        return self.call("Secrets", "ListSecretVersions",
                         self.api.pb.gateway.ListSecretVersionsRequest(secret_id=secret_id), **kw)

    def revoke(self, secret_id: str, reason_note: str = "", **kw):
        return self.call("Secrets", "RevokeSecret",
                         self.api.pb.gateway.RevokeSecretRequest(secret_id=secret_id, reason=reason_note), **kw)

    def delete(self, secret_id: str, **kw):
        return self.call("Secrets", "DeleteSecret", self.api.pb.gateway.DeleteSecretRequest(secret_id=secret_id),
                         **kw)

    def share(self, secret_id: str, grantee_type: int, grantee_id: str, role: int | None = None, **kw):
        g = self.api.pb.gateway
        req = g.ShareSecretRequest(secret_id=secret_id, grantee=g.Grantee(grantee_type=grantee_type,
                                                                         grantee_id=grantee_id),
                                   role=role if role is not None else g.SHARE_ROLE_USER)
        return self.call("Secrets", "ShareSecret", req, **kw)

    def unshare(self, secret_id: str, grantee_type: int, grantee_id: str, role: int = 0, **kw):
        g = self.api.pb.gateway
        req = g.UnshareSecretRequest(secret_id=secret_id, grantee=g.Grantee(grantee_type=grantee_type,
                                                                           grantee_id=grantee_id), role=role)
        return self.call("Secrets", "UnshareSecret", req, **kw)

    # -- Retrieval -------------------------------------------------------------------------
    def retrieve_request(self, secret_ref: str, intended_use: str | None = DEFAULT_USE,
                         resource: tuple[str, str] | None = ("mcp_server", "mcp-e2e")):
        c, g = self.api.pb.common, self.api.pb.gateway
        req = g.RetrieveRequest(secret_ref=secret_ref, intended_use=intended_use or "")
        if resource is not None:
            req.resource_context.CopyFrom(c.ResourceContext(resource_type=resource[0], resource_id=resource[1]))
        return req

    def retrieve(self, secret_ref: str, intended_use: str | None = DEFAULT_USE,
                 resource: tuple[str, str] | None = ("mcp_server", "mcp-e2e"), **kw):
        return self.call("Retrieval", "Retrieve", self.retrieve_request(secret_ref, intended_use, resource), **kw)


class Api:
    """Everything a test needs to drive one stack (the session stack or a private one)."""

    def __init__(self, stack: h.Stack, certs_dir: Path, gateway_addr: str | None = None):
        self.stack = stack
        self.pb = pb()
        self.tokens = TokenMint(stack)
        self.certs_dir = certs_dir
        self.gateway_addr = gateway_addr or stack.addrs["gateway"]
        self._channels: dict[tuple[str, str], grpc.Channel] = {}
        self._lock = threading.Lock()
        self._granted: set[str] = set()
        self.values: set[bytes] = set()  # every value sent in a create or rotate (leak checks)

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    # -- identities ------------------------------------------------------------------------
    def identity_pair(self, name: str) -> tuple[Path, Path]:
        """(cert, key) for spiffe://credex.local/<name>: the stack's own when pki.sh issued one,
        else a test certificate from the same CA (pki_make_identity_cert)."""
        cert, key = self.stack.pki.cert(name), self.stack.pki.key(name)
        if cert.exists() and key.exists():
            return cert, key
        cert, key = self.certs_dir / f"{name}.pem", self.certs_dir / f"{name}.key"
        if not cert.exists():
            res = h.run_pki(self.stack.run_dir, "pki_make_identity_cert", str(self.certs_dir), name)
            if res.returncode != 0:
                raise RuntimeError(f"pki_make_identity_cert {name} failed: {res.stderr}")
        return cert, key

    def channel(self, peer: str, addr: str | None = None) -> grpc.Channel:
        addr = addr or self.gateway_addr
        with self._lock:
            ch = self._channels.get((peer, addr))
            if ch is None:
                cert, key = self.identity_pair(peer)
                ch = h.secure_channel(addr, h.channel_credentials(self.stack.pki.ca, cert, key))
                self._channels[(peer, addr)] = ch
            return ch

    # -- the three kinds of callers ----------------------------------------------------------
    def ui(self, user: str, addr: str | None = None) -> Caller:
        """A UI user through the edge-like path: peer credexctl, the user's token only."""
        return Caller(self, h.CLI_IDENTITY, [("x-credex-user-token", self.tokens.user(user))], addr)

    def browser(self, user: str, addr: str | None = None) -> Caller:
        """Browser traffic as the edge forwards it: peer edge, x-credex-caller: browser."""
        return Caller(self, "edge", [("x-credex-user-token", self.tokens.user(user)),
                                     ("x-credex-caller", "browser")], addr)

    def agent(self, user: str | None = None, service: str = AGENT, addr: str | None = None, *,
              service_token: str | None = None, user_token: str | None = None) -> Caller:
        """A server-side runtime: its own certificate, a service JWT (azp = its name) and, when
        acting for a user, the user's on-behalf-of token."""
        md = [("authorization", f"Bearer {service_token or self.tokens.service(service)}")]
        if user is not None or user_token is not None:
            md.append(("x-credex-user-token", user_token or self.tokens.user(user)))
        return Caller(self, service, md, addr)

    def raw(self, peer: str, metadata: list[tuple[str, str]], addr: str | None = None) -> Caller:
        return Caller(self, peer, metadata, addr)

    # -- OpenFGA ---------------------------------------------------------------------------
    @property
    def fga_url(self) -> str:
        return self.stack.env["CREDEX_OPENFGA_URL"]

    @property
    def fga_store(self) -> str:
        return self.stack.env["CREDEX_OPENFGA_STORE_ID"]

    def fga_write(self, tuples: list[tuple[str, str, str]], delete: bool = False) -> None:
        """Write (or delete) (user, relation, object) tuples; an existing tuple on write and a
        missing one on delete are fine."""
        import requests

        for user, relation, obj in tuples:
            # OpenFGA's own idempotency options, not its error text.
            part = {"tuple_keys": [{"user": user, "relation": relation, "object": obj}]}
            part["on_missing" if delete else "on_duplicate"] = "ignore"
            body = {("deletes" if delete else "writes"): part}
            model = self.stack.env.get("CREDEX_OPENFGA_MODEL_ID")
            if model:
                body["authorization_model_id"] = model
            r = requests.post(f"{self.fga_url}/stores/{self.fga_store}/write", json=body, timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"OpenFGA write {user} {relation} {obj}: {r.status_code} {r.text}")

    def fga_check(self, user: str, relation: str, obj: str) -> bool:
        import requests

        body = {"tuple_key": {"user": user, "relation": relation, "object": obj}}
        r = requests.post(f"{self.fga_url}/stores/{self.fga_store}/check", json=body, timeout=10)
        r.raise_for_status()
        return bool(r.json().get("allowed"))

    def fga_read(self, obj: str) -> list[tuple[str, str, str]]:
        """Every tuple on an object, as (user, relation, object)."""
        import requests

        out, token = [], ""
        while True:
            body = {"tuple_key": {"object": obj}, "page_size": 100}
            if token:
                body["continuation_token"] = token
            r = requests.post(f"{self.fga_url}/stores/{self.fga_store}/read", json=body, timeout=10)
            r.raise_for_status()
            data = r.json()
            out += [(t["key"]["user"], t["key"]["relation"], t["key"]["object"]) for t in data.get("tuples", [])]
            token = data.get("continuation_token", "")
            if not token:
                return out

    def grant_retriever(self, service: str = AGENT) -> None:
        """The platform allow-list entry of a server-side caller: service:<name> retriever on
        platform:credex."""
        if service in self._granted:
            return
        self.fga_write([(f"service:{service}", "retriever", "platform:credex")])
        self._granted.add(service)

    def grant_exchanger(self, service: str = AGENT) -> None:
        """The platform's exchanger grant of a server-side caller (service:<name> exchanger on
        platform:credex): it may exchange the identity of the users it acts for for their
        provider tokens. It needs the retriever grant too, which this also writes."""
        self.grant_retriever(service)
        if f"exchanger:{service}" in self._granted:
            return
        self.fga_write([(f"service:{service}", "exchanger", "platform:credex")])
        self._granted.add(f"exchanger:{service}")

    def add_team_member(self, team: str, user: str) -> None:
        self.fga_write([(f"user:{user}", "member", f"team:{team}")])

    # -- MongoDB ---------------------------------------------------------------------------
    def mongo(self):
        """The credex database on the stack's FerretDB (pymongo)."""
        import pymongo

        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{self.stack.ports['ferretdb']}",
                                     serverSelectionTimeoutMS=10000, directConnection=True)
        return client, client[self.stack.env.get("CREDEX_MONGO_DB", "credex")]


# ---- small helpers --------------------------------------------------------------------------------

def uid(prefix: str) -> str:
    """A unique, id-safe name for one test's users, teams and keys."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def cid() -> str:
    """A fresh correlation id: 32 lowercase hex chars, the shape the logger keeps (cx_log redacts
    random-looking mixed runs, and a prefixed id would be one)."""
    return uuid.uuid4().hex


def log_lines_with(path: Path, correlation_id: str) -> list[dict]:
    """The JSON lines of a log whose correlation_id is the given one."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        if correlation_id not in line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            out.append({"raw": line})
            continue
        if isinstance(obj, dict) and obj.get("correlation_id") == correlation_id:
            out.append(obj)
        elif correlation_id in line:
            out.append({"raw": line})
    return out


def flatten(doc, prefix: str = "") -> dict:
    """A stored document as {"dotted.path": leaf value}, to find fields by name."""
    out = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = doc
    return out


def encodings(value: bytes) -> list[bytes]:
    """The forms in which a leaked value could show up in a text log."""
    forms = [value, value.hex().encode(), base64.b64encode(value), base64.urlsafe_b64encode(value).rstrip(b"=")]
    return [f for f in forms if len(f) >= 8]


def wait_until(fn, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll fn() until it returns a truthy value; returns it, or raises AssertionError with the
    last exception/result after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = fn()
            if result:
                return result
            last = result
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")
        time.sleep(interval)
