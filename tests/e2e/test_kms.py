"""Issue 14, deliverable 1: the keywrap provider aws-kms against a real KMS emulator.

local-kms (github.com/nsmithuk/local-kms, installed by scripts/setup from the Go module proxy)
runs once per module on a free loopback port, seeded with one AES key and an alias. A keywrap
with CREDENTIAL_KEY_PROVIDER=aws-kms points at it (CREDEX_KMS_ENDPOINT), with a store (every
cache off, so each retrieval unwraps through KMS) and a gateway in front, next to the session
stack and on its database.

What the emulator cannot do is played by small doubles on real sockets in this file:
 - `KmsFront`, an HTTP front of local-kms that records each request's headers and can answer a
   given number of requests with an AWS error (throttling, 5xx) instead of forwarding them;
 - `StsDouble`, AWS STS's AssumeRoleWithWebIdentity (the query protocol: form-encoded POST,
   XML answer), since STS cannot run here; it hands out fresh credentials at each exchange.
local-kms does not check SigV4 signatures (it reads only X-Amz-Target and the body): the
signature itself is pinned by tests/unit/http (test_sigv4_signature), which recomputes it; here
the front checks the Authorization header's shape, scope and signed headers, and which
credentials signed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
REGION = "eu-central-1"
ACCOUNT = "111122223333"
KEY_ID = "6f0c8d2e-3b1a-4c5d-9e7f-0a1b2c3d4e5f"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
ALIAS = "alias/credex-test"
# Static keys of this test session only (the emulator accepts any): made here, so that nothing
# shaped like an AWS credential is written in the repository.
ACCESS_KEY = "TEST" + secrets.token_hex(8).upper()
SECRET_KEY = secrets.token_hex(20)
LOCAL_KMS = h.TOOLS / "bin" / "local-kms"


# ---- the emulator ---------------------------------------------------------------------------

class LocalKms:
    """local-kms on 127.0.0.1:<port> with its data in <dir>/data (kept across restarts)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = h.free_ports(1)[0]
        self.proc: subprocess.Popen | None = None
        seed = directory / "seed.yaml"
        seed.write_text(
            "Keys:\n  Symmetric:\n    Aes:\n      - Metadata:\n"
            f"          KeyId: {KEY_ID}\n        BackingKeys:\n"
            f"          - {os.urandom(32).hex()}\n"
            f"Aliases:\n  - AliasName: {ALIAS}\n    TargetKeyId: {KEY_ID}\n")
        self.env = h.clean_base_env() | {"PORT": str(self.port), "KMS_REGION": REGION,
                                         "KMS_ACCOUNT_ID": ACCOUNT, "KMS_SEED_PATH": str(seed),
                                         "KMS_DATA_PATH": str(directory / "data")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "local-kms.log", "ab")
        self.proc = subprocess.Popen([str(LOCAL_KMS)], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "local-kms.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("local-kms did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def call(self, op: str, body: dict) -> tuple[int, dict]:
        """The emulator's own API, as an operator would use it (unsigned: it checks nothing)."""
        req = urllib.request.Request(self.url + "/", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/x-amz-json-1.1",
                                              "X-Amz-Target": f"TrentService.{op}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


# ---- doubles on real sockets ------------------------------------------------------------------

class KmsFront:
    """An HTTP front of local-kms: records the headers of each request and answers the next
    `fail` requests with `failure` (status, __type) instead of forwarding them; a status of 0
    means: say nothing for `stall` seconds, then forward."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.requests: list[dict[str, str]] = []
        self.fail = 0
        self.failure = (400, "ThrottlingException")
        self.stall = 0.0
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with front.lock:
                    front.requests.append({k.lower(): v for k, v in self.headers.items()})
                    failing = front.fail > 0
                    front.fail -= 1 if failing else 0
                    status, kind = front.failure
                if failing and status == 0:
                    time.sleep(front.stall)
                elif failing:
                    self._answer(status, json.dumps({"__type": kind, "message": "injected"}).encode())
                    return
                req = urllib.request.Request(front.upstream + "/", data=body, method="POST", headers={
                    "Content-Type": self.headers["Content-Type"],
                    "X-Amz-Target": self.headers["X-Amz-Target"]})
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        self._answer(r.status, r.read())
                except urllib.error.HTTPError as e:
                    self._answer(e.code, e.read())

            def _answer(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class StsDouble:
    """AssumeRoleWithWebIdentity as AWS STS answers it. Each exchange issues new credentials
    (access key ASIA...<n>) valid for `lifetime` seconds; `refuse` answers an ErrorResponse."""

    def __init__(self, role_arn: str):
        self.role_arn = role_arn
        self.lifetime = 3600
        self.refuse = False
        self.exchanges: list[dict[str, str]] = []
        self.issued: list[tuple[str, str]] = []  # (access key id, session token)
        sts = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw, strict_parsing=True).items()}
                ok = (self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
                      and "authorization" not in {k.lower() for k in self.headers}
                      and form.get("Action") == "AssumeRoleWithWebIdentity"
                      and form.get("Version") == "2011-06-15" and form.get("RoleArn") == sts.role_arn
                      and form.get("RoleSessionName") and form.get("WebIdentityToken"))
                sts.exchanges.append(form)
                if sts.refuse or not ok:
                    self._answer(400, "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                                      "<Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
                                      "<Message>refused by the test double</Message></Error>"
                                      "<RequestId>1</RequestId></ErrorResponse>")
                    return
                n = len(sts.issued) + 1
                akid = f"ASIACREDEXTEST{n:04d}"
                token = base64.b64encode(os.urandom(48)).decode()
                sts.issued.append((akid, token))
                exp = (datetime.now(timezone.utc) + timedelta(seconds=sts.lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._answer(200, f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:credex:keywrap</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>{sts.role_arn}/credex</Arn><AssumedRoleId>AROA:credex</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{base64.b64encode(os.urandom(30)).decode()}</SecretAccessKey>
      <Expiration>{exp}</Expiration>
      <AccessKeyId>{akid}</AccessKeyId>
    </Credentials>
    <Provider>oidc.eks.example</Provider>
    <Audience>sts.amazonaws.com</Audience>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>""")

            def _answer(self, status: int, text: str):
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- fixtures ---------------------------------------------------------------------------------

NO_AWS_ENV = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME")}


def kms_env(endpoint: str, **extra: str) -> dict[str, str]:
    return NO_AWS_ENV | {"CREDENTIAL_KEY_PROVIDER": "aws-kms", "CREDENTIAL_KMS_REGION": REGION,
                         "CREDENTIAL_KMS_CMK_ID": ALIAS, "CREDEX_KMS_ENDPOINT": endpoint,
                         "CREDEX_KMS_TIMEOUT_MS": "2000", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                         "AWS_SECRET_ACCESS_KEY": SECRET_KEY} | extra


@pytest.fixture(scope="module")
def kms(tmp_path_factory):
    if not LOCAL_KMS.exists():
        pytest.fail(f"{LOCAL_KMS} is missing: run scripts/setup", pytrace=False)
    emu = LocalKms(tmp_path_factory.mktemp("local-kms"))
    emu.start()
    yield emu
    emu.stop()


def spawn_keywrap(stack, **env: str) -> h.Instance:
    kw = stack.spawn("keywrap", **env)
    stack.wait_healthy(kw)
    return kw


@pytest.fixture(scope="module")
def trio(stack, kms):
    """(gateway addr, keywrap Instance) of an aws-kms keywrap with a store that caches nothing."""
    kw = spawn_keywrap(stack, **kms_env(kms.url))
    gateway, store = stack.spawn_pair(CREDEX_KEYWRAP_ADDR=kw.addr, CREDEX_DEK_CACHE_MAX_ENTRIES="0",
                                      CREDEX_DEK_CACHE_TTL_MS="0", CREDEX_PAYLOAD_CACHE_MAX_ENTRIES="0",
                                      CREDEX_STORE_METADATA_CACHE_ENTRIES="0")
    yield gateway.addr, kw
    codes = stack.stop_pair(gateway, store) | {"keywrap": kw.stop()}
    assert codes == {"gateway": 0, "store": 0, "keywrap": 0}, codes
    assert SECRET_KEY not in kw.log_text() and ACCESS_KEY not in kw.log_text()


@pytest.fixture(scope="module")
def db(stack, api):
    client, database = api.mongo()
    yield database
    client.close()


# ---- helpers ----------------------------------------------------------------------------------

def new_secret(api, addr: str, owner: str) -> tuple[str, bytes]:
    value = f"kms-{uuid.uuid4().hex}".encode()
    return api.ui(owner, addr=addr).create(value).secret.secret_id, value


def expect_error(call, code: C, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert (err.code(), x.reason(err)) == (code, reason), x.describe(err)
    return err


def keywrap_call(stack, kw: h.Instance, method: str, request, reply_type, identity: str = "store"):
    reply, _ = stack.unary("keywrap", f"/credex.v1.KeyWrap/{method}", request.SerializeToString(),
                           identity=identity, addr=kw.addr, timeout=20)
    return reply_type.FromString(reply)


def context(sid: str) -> dict[str, str]:
    return {"secret_id": sid, "version": "1", "owner_type": "user", "owner_id": "u-1", "kind": "api_key"}


def generate(stack, kw: h.Instance, ctx: dict[str, str]):
    pb = x.pb().keywrap
    return keywrap_call(stack, kw, "GenerateDataKey", pb.GenerateDataKeyRequest(encryption_context=ctx),
                        pb.GenerateDataKeyResponse)


def unwrap(stack, kw: h.Instance, wk, ctx: dict[str, str]):
    pb = x.pb().keywrap
    return keywrap_call(stack, kw, "Unwrap", pb.UnwrapRequest(wrapped_key=wk, encryption_context=ctx),
                        pb.UnwrapResponse)


def describe(stack, kw: h.Instance):
    pb = x.pb().keywrap
    return keywrap_call(stack, kw, "Describe", pb.DescribeRequest(), pb.DescribeResponse, identity="gateway")


# ---- the provider through the whole stack ------------------------------------------------------

def test_secrets_created_retrieved_and_rotated_under_aws_kms(api, db, trio):
    addr, _ = trio
    api.grant_retriever(x.AGENT)
    owner = x.uid("kim")
    sid, v1 = new_secret(api, addr, owner)
    assert api.agent(owner, addr=addr).retrieve(sid).value == v1
    doc = db.credential_encrypted_payloads.find_one({"secret_id": sid, "version": 1})
    assert (doc["key_provider"], doc["key_id"], doc["key_version"]) == ("aws-kms", KEY_ARN, ""), doc
    v2 = f"kms-rotated-{uuid.uuid4().hex}".encode()
    api.ui(owner, addr=addr).rotate(sid, v2, expected_version=1)
    assert api.agent(owner, addr=addr).retrieve(sid).value == v2
    two = db.credential_encrypted_payloads.find_one({"secret_id": sid, "version": 2})
    assert two["key_provider"] == "aws-kms" and bytes(two["wrapped_key"]) != bytes(doc["wrapped_key"])


def test_describe_reports_the_provider_key_and_health(stack, trio):
    _, kw = trio
    d = describe(stack, kw)
    assert (d.configured_name, d.key_id, d.region, d.healthy, d.dev_key_mode) == \
        ("aws-kms", KEY_ARN, REGION, True, False), d
    assert d.key_provider == x.pb().common.KEY_PROVIDER_AWS_KMS


def test_kms_encryption_context_prevents_cross_secret_unwrap(api, db, stack, trio):
    """The wrapped keys of two secrets are swapped in the database: KMS refuses to decrypt
    either under the other secret's context, and that is integrity_error, never a value."""
    addr, kw = trio
    api.grant_retriever(x.AGENT)
    owner = x.uid("swap")
    sid_a, value_a = new_secret(api, addr, owner)
    sid_b, value_b = new_secret(api, addr, owner)
    a = db.credential_encrypted_payloads.find_one({"secret_id": sid_a, "version": 1})
    b = db.credential_encrypted_payloads.find_one({"secret_id": sid_b, "version": 1})
    db.credential_encrypted_payloads.update_one({"_id": a["_id"]}, {"$set": {"wrapped_key": b["wrapped_key"]}})
    db.credential_encrypted_payloads.update_one({"_id": b["_id"]}, {"$set": {"wrapped_key": a["wrapped_key"]}})
    for sid, other in ((sid_a, value_b), (sid_b, value_a)):
        err = expect_error(lambda: api.agent(owner, addr=addr).retrieve(sid), C.DATA_LOSS, "integrity_error")
        assert other not in (err.details() or "").encode()
    # Keywrap itself: a key wrapped for one context does not unwrap under another.
    g = generate(stack, kw, context("s-1"))
    assert len(g.plaintext_data_key) == 32
    assert unwrap(stack, kw, g.wrapped_key, context("s-1")).plaintext_data_key == g.plaintext_data_key
    for changed in (context("s-2"), context("s-1") | {"version": "2"}, context("s-1") | {"extra": "x"}):
        expect_error(lambda: unwrap(stack, kw, g.wrapped_key, changed), C.DATA_LOSS, "integrity_error")


def test_rewrap_reencrypts_inside_kms_under_the_same_context(stack, trio):
    _, kw = trio
    pb = x.pb().keywrap
    g = generate(stack, kw, context("s-rewrap"))
    r = keywrap_call(stack, kw, "Rewrap", pb.RewrapRequest(wrapped_key=g.wrapped_key,
                                                           encryption_context=context("s-rewrap")),
                     pb.RewrapResponse)
    assert r.wrapped_key.ciphertext != g.wrapped_key.ciphertext and r.wrapped_key.key_id == KEY_ARN
    assert unwrap(stack, kw, r.wrapped_key, context("s-rewrap")).plaintext_data_key == g.plaintext_data_key
    expect_error(lambda: keywrap_call(stack, kw, "Rewrap", pb.RewrapRequest(
        wrapped_key=g.wrapped_key, encryption_context=context("s-other")), pb.RewrapResponse),
        C.DATA_LOSS, "integrity_error")


def test_a_local_cmk_wrapped_key_is_refused_not_sent_elsewhere(stack, trio):
    _, kw = trio
    pb = x.pb()
    wk = pb.keywrap.WrappedKey(ciphertext=b"\x01" + bytes(60), key_provider=pb.common.KEY_PROVIDER_LOCAL_CMK,
                               key_id="alias/credex-local", key_version="1")
    expect_error(lambda: unwrap(stack, kw, wk, context("s-1")), C.FAILED_PRECONDITION, "failed_precondition")


def test_disabled_key_fails_closed_with_failed_precondition(api, stack, kms, trio):
    addr, kw = trio
    api.grant_retriever(x.AGENT)
    owner = x.uid("dora")
    sid, value = new_secret(api, addr, owner)
    assert kms.call("DisableKey", {"KeyId": KEY_ID})[0] == 200
    try:
        err = expect_error(lambda: api.agent(owner, addr=addr).retrieve(sid), C.FAILED_PRECONDITION,
                           "failed_precondition")
        assert value not in (err.details() or "").encode()
        expect_error(lambda: new_secret(api, addr, owner), C.FAILED_PRECONDITION, "failed_precondition")
        time.sleep(5.2)  # past the Describe cache (KEYWRAP_AWS_DESCRIBE_TTL_MS)
        d = describe(stack, kw)
        assert (d.healthy, d.reason) == (False, "failed_precondition"), d
    finally:
        assert kms.call("EnableKey", {"KeyId": KEY_ID})[0] == 200
    assert api.agent(owner, addr=addr).retrieve(sid).value == value


def test_emulator_down_fails_closed_and_recovers(api, kms, trio):
    addr, _ = trio
    api.grant_retriever(x.AGENT)
    owner = x.uid("otto")
    sid, value = new_secret(api, addr, owner)
    kms.stop()
    try:
        err = expect_error(lambda: api.agent(owner, addr=addr).retrieve(sid), C.UNAVAILABLE, "unavailable")
        assert value not in (err.details() or "").encode()
        expect_error(lambda: new_secret(api, addr, owner), C.UNAVAILABLE, "unavailable")
    finally:
        kms.start()
    assert api.agent(owner, addr=addr).retrieve(sid).value == value
    sid2, value2 = new_secret(api, addr, owner)
    assert api.agent(owner, addr=addr).retrieve(sid2).value == value2


# ---- the move from local-cmk: a retired local-cmk root -----------------------------------------

def rewrap(stack, kw: h.Instance, wk, ctx: dict[str, str]):
    pb = x.pb().keywrap
    return keywrap_call(stack, kw, "Rewrap", pb.RewrapRequest(wrapped_key=wk, encryption_context=ctx),
                        pb.RewrapResponse).wrapped_key


def log_events(kw: h.Instance) -> list[dict]:
    return [json.loads(line) for line in kw.log_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def local_keys(stack, tmp_path_factory):
    """A fresh local-cmk root file and three data keys a local-cmk keywrap wrapped under it:
    (root file, [(context, plaintext data key, WrappedKey)])."""
    root = tmp_path_factory.mktemp("retired-root") / "old-local-cmk.key"
    root.write_text(os.urandom(32).hex() + "\n")
    root.chmod(0o600)
    kw = spawn_keywrap(stack, CREDEX_LOCAL_CMK_KEY_FILE=str(root))
    try:
        keys = []
        for i in range(3):
            ctx = context(f"s-move-{i}")
            g = generate(stack, kw, ctx)
            assert g.wrapped_key.key_provider == x.pb().common.KEY_PROVIDER_LOCAL_CMK
            keys.append((ctx, g.plaintext_data_key, g.wrapped_key))
    finally:
        assert kw.stop() == 0
    return root, keys


def test_local_cmk_keys_move_to_kms_with_the_retired_root(stack, kms, front, local_keys):
    """aws-kms with CREDEX_LOCAL_CMK_RETIRED_KEY_FILE: local-cmk keys unwrap locally (nothing
    goes to KMS), and Rewrap turns each into an ordinary KMS key through one signed KMS Encrypt
    with the same context, which KMS itself then decrypts under that context only. Without the
    retired file the moved keys still unwrap and the others are failed_precondition."""
    root, keys = local_keys
    aws = x.pb().common.KEY_PROVIDER_AWS_KMS
    kw = spawn_keywrap(stack, **kms_env(front.url, CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=str(root)))
    moved = []
    try:
        assert describe(stack, kw).retired_local_cmk
        ready = [e for e in log_events(kw) if e.get("event") == "keywrap.ready"]
        assert [(e["provider"], e["retired_local_cmk"]) for e in ready] == [("aws-kms", True)], ready
        with front.lock:
            front.requests.clear()
        for ctx, dek, wk in keys:
            assert unwrap(stack, kw, wk, ctx).plaintext_data_key == dek
        assert front.requests == []
        for ctx, dek, wk in keys:
            with front.lock:
                front.requests.clear()
            new = rewrap(stack, kw, wk, ctx)
            assert [r["x-amz-target"] for r in front.requests] == ["TrentService.Encrypt"]
            assert AUTH_RE.match(front.requests[0]["authorization"])["akid"] == ACCESS_KEY
            assert (new.key_provider, new.key_id, new.key_version) == (aws, KEY_ARN, ""), new
            assert dek not in new.ciphertext
            status, answer = kms.call("Decrypt", {"CiphertextBlob": base64.b64encode(new.ciphertext).decode(),
                                                  "EncryptionContext": ctx})
            assert status == 200 and base64.b64decode(answer["Plaintext"]) == dek, answer
            assert unwrap(stack, kw, new, ctx).plaintext_data_key == dek
            moved.append(new)
        # The context still binds, before the move and after it.
        ctx, dek, wk = keys[0]
        other = ctx | {"secret_id": "s-move-other"}
        expect_error(lambda: rewrap(stack, kw, wk, other), C.DATA_LOSS, "integrity_error")
        expect_error(lambda: unwrap(stack, kw, moved[0], other), C.DATA_LOSS, "integrity_error")
        status, _ = kms.call("Decrypt", {"CiphertextBlob": base64.b64encode(moved[0].ciphertext).decode(),
                                         "EncryptionContext": other})
        assert status == 400
        log = kw.log_text()
        assert root.read_text().strip() not in log
        for ctx, dek, _ in keys:
            assert dek.hex() not in log and base64.b64encode(dek).decode() not in log
            assert ctx["secret_id"] not in log
        ops = [e for e in log_events(kw) if e.get("event") == "keywrap.op" and e["op"] == "Rewrap"]
        assert [e["root"] for e in ops if e["outcome"] == "ok"] == ["retired"] * 3
    finally:
        assert kw.stop() == 0

    kw = spawn_keywrap(stack, **kms_env(front.url))
    try:
        assert not describe(stack, kw).retired_local_cmk
        for (ctx, dek, wk), new in zip(keys, moved):
            assert unwrap(stack, kw, new, ctx).plaintext_data_key == dek
            with front.lock:
                front.requests.clear()
            err = expect_error(lambda: unwrap(stack, kw, wk, ctx), C.FAILED_PRECONDITION, "failed_precondition")
            assert "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE" in err.details()
            expect_error(lambda: rewrap(stack, kw, wk, ctx), C.FAILED_PRECONDITION, "failed_precondition")
            assert front.requests == []
    finally:
        assert kw.stop() == 0


def test_retired_local_root_allowed_in_production_with_a_warning(stack, local_keys):
    """Production may leave local-cmk this way: keys under the retired root unwrap, new keys
    still come only from KMS (unreachable here: unavailable), and a warning names the way out."""
    root, keys = local_keys
    kw = spawn_keywrap(stack, **kms_env("https://127.0.0.1:1", CREDEX_PRODUCTION="true",
                                        CREDEX_OAUTH_TEST_CONNECT_TO="", CREDEX_EDGE_UI_URL="",
                                        CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=str(root)))
    try:
        ctx, dek, wk = keys[0]
        assert unwrap(stack, kw, wk, ctx).plaintext_data_key == dek
        expect_error(lambda: generate(stack, kw, ctx), C.UNAVAILABLE, "unavailable")
        warnings = [e for e in log_events(kw) if e.get("event") == "keywrap.retired_local_cmk"]
        assert len(warnings) == 1 and warnings[0]["level"] == "warn", warnings
        assert "credexctl keys rewrap" in warnings[0]["message"]
        assert "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE" in warnings[0]["message"]
    finally:
        assert kw.stop() == 0


def test_a_bad_retired_root_file_refuses_to_start(stack, kms, local_keys, tmp_path):
    """The retired file gets the key file checks (here: readable by others), naming its variable."""
    root, _ = local_keys
    open_copy = tmp_path / "open.key"
    open_copy.write_text(root.read_text())
    open_copy.chmod(0o644)
    kw = stack.spawn("keywrap", **kms_env(kms.url, CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=str(open_copy)))
    assert kw.wait_exit(60) != 0
    log = kw.log_text()
    assert f"CREDEX_LOCAL_CMK_RETIRED_KEY_FILE: {open_copy} is accessible by group or others" in log, log
    assert root.read_text().strip() not in log
    # local-cmk with its own root as the retired one: a mistake, not a rotation.
    kw = stack.spawn("keywrap", CREDEX_LOCAL_CMK_KEY_FILE=str(root), CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=str(root))
    assert kw.wait_exit(60) != 0
    assert "holds the same key as CREDEX_LOCAL_CMK_KEY_FILE" in kw.log_text()


# ---- retries, signing, credentials ------------------------------------------------------------

@pytest.fixture(scope="module")
def front(kms):
    f = KmsFront(kms.url)
    yield f
    f.close()


@pytest.fixture(scope="module")
def fronted(stack, front):
    kw = spawn_keywrap(stack, **kms_env(front.url, AWS_SESSION_TOKEN="credex-static-session-token"))
    yield kw
    assert kw.stop() == 0


AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                     r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                     r"Signature=(?P<sig>[0-9a-f]{64})$")


def test_requests_are_signed_with_sigv4_for_kms(stack, front, fronted):
    with front.lock:
        front.requests.clear()
    generate(stack, fronted, context("s-sig"))
    req = front.requests[-1]
    m = AUTH_RE.match(req["authorization"])
    assert m, req["authorization"]
    assert (m["akid"], m["region"], m["service"]) == (ACCESS_KEY, REGION, "kms")
    assert m["date"] == req["x-amz-date"][:8]
    signed = m["signed"].split(";")
    assert signed == sorted(signed)
    assert {"host", "x-amz-date", "x-amz-target", "content-type", "x-amz-security-token"} <= set(signed)
    assert req["x-amz-target"] == "TrentService.GenerateDataKey"
    assert req["content-type"] == "application/x-amz-json-1.1"
    assert req["x-amz-security-token"] == "credex-static-session-token"
    assert SECRET_KEY not in json.dumps(req)


@pytest.mark.parametrize("failure", [(400, "ThrottlingException"), (400, "com.amazonaws.kms#LimitExceededException"),
                                     (500, "KMSInternalException"), (503, "ServiceUnavailable")])
def test_transient_kms_errors_are_retried_with_backoff(stack, front, fronted, failure):
    with front.lock:
        front.requests.clear()
        front.fail, front.failure = 2, failure
    g = generate(stack, fronted, context("s-retry"))
    assert len(g.plaintext_data_key) == 32
    assert len(front.requests) == 3  # two refused, the third served


def test_persistent_throttling_ends_unavailable_after_bounded_retries(stack, front, fronted):
    with front.lock:
        front.requests.clear()
        front.fail, front.failure = 100, (400, "ThrottlingException")
    started = time.monotonic()
    try:
        expect_error(lambda: generate(stack, fronted, context("s-throttle")), C.UNAVAILABLE, "unavailable")
    finally:
        with front.lock:
            front.fail = 0
    assert len(front.requests) == 4  # one attempt and KEYWRAP_AWS_RETRIES (3) retries
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["AccessDeniedException", "UnrecognizedClientException",
                                  "InvalidSignatureException"])
def test_refused_credentials_are_a_deployment_fault_not_retried(stack, front, fronted, kind):
    with front.lock:
        front.requests.clear()
        front.fail, front.failure = 1, (400, kind)
    err = expect_error(lambda: generate(stack, fronted, context("s-denied")), C.UNAVAILABLE, "unavailable")
    assert kind in err.details() and "deployment fault" in err.details()
    assert len(front.requests) == 1


def test_describe_reports_refused_credentials_as_permission_denied(stack, front):
    """...and its answer is cached briefly: a second Describe right after asks KMS nothing."""
    kw = spawn_keywrap(stack, **kms_env(front.url))
    try:
        with front.lock:
            front.requests.clear()
            front.fail, front.failure = 1, (400, "AccessDeniedException")
        for _ in range(2):
            d = describe(stack, kw)
            assert (d.healthy, d.reason, d.key_provider) == \
                (False, "permission_denied", x.pb().common.KEY_PROVIDER_AWS_KMS), d
            assert "AccessDeniedException" in d.detail
        assert [r["x-amz-target"] for r in front.requests] == ["TrentService.DescribeKey"]
    finally:
        assert kw.stop() == 0


def test_a_timeout_is_unavailable_and_not_retried(stack, front):
    kw = spawn_keywrap(stack, **kms_env(front.url, CREDEX_KMS_TIMEOUT_MS="300"))
    try:
        with front.lock:
            front.requests.clear()
            front.fail, front.failure, front.stall = 1, (0, ""), 1.5
        started = time.monotonic()
        err = expect_error(lambda: generate(stack, kw, context("s-timeout")), C.UNAVAILABLE, "unavailable")
        assert time.monotonic() - started < 1.4, "waited for the stalled answer"
        assert len(front.requests) == 1, "a timed-out request was sent again"
        assert "KMS GenerateDataKey" in err.details()
    finally:
        assert kw.stop() == 0


def test_missing_credentials_refuse_to_start_naming_the_variables(stack, kms):
    kw = stack.spawn("keywrap", **(kms_env(kms.url) | NO_AWS_ENV))
    assert kw.wait_exit(60) != 0
    log = kw.log_text()
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        assert var in log, log
    kw = stack.spawn("keywrap", **kms_env(kms.url, CREDENTIAL_KMS_REGION=""))
    assert kw.wait_exit(60) != 0
    assert "CREDENTIAL_KMS_REGION must be set for aws-kms" in kw.log_text()
    assert SECRET_KEY not in kw.log_text()


def test_plain_http_endpoint_refused_in_production(stack, kms):
    # (the session stack's test-only settings that production also refuses are cleared)
    kw = stack.spawn("keywrap", **kms_env(kms.url, CREDEX_PRODUCTION="true", CREDEX_OAUTH_TEST_CONNECT_TO="",
                                          CREDEX_EDGE_UI_URL=""))
    assert kw.wait_exit(60) != 0
    assert "CREDEX_KMS_ENDPOINT: expected an https URL with CREDEX_PRODUCTION=true" in kw.log_text()


# ---- web identity (IRSA) ------------------------------------------------------------------------

ROLE_ARN = "arn:aws:iam::111122223333:role/credex-keywrap"


@pytest.fixture
def sts():
    s = StsDouble(ROLE_ARN)
    yield s
    s.close()


def web_identity_keywrap(stack, front, sts, token_file: Path) -> h.Instance:
    env = kms_env(front.url) | NO_AWS_ENV | {
        "AWS_ROLE_ARN": ROLE_ARN, "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "CREDEX_STS_ENDPOINT": sts.url}
    return spawn_keywrap(stack, **env)


def signer_of(req: dict[str, str]) -> tuple[str, str]:
    m = AUTH_RE.match(req["authorization"])
    assert m, req
    return m["akid"], req.get("x-amz-security-token", "")


def test_web_identity_exchanged_at_sts_and_used_to_sign(stack, front, sts, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.credex-first.sig\n")
    kw = web_identity_keywrap(stack, front, sts, token_file)
    try:
        with front.lock:
            front.requests.clear()
        generate(stack, kw, context("s-irsa"))
        generate(stack, kw, context("s-irsa"))
        assert len(sts.exchanges) == 1  # valid for an hour: exchanged once
        assert sts.exchanges[0]["WebIdentityToken"] == "eyJhbGciOiJSUzI1NiJ9.credex-first.sig"
        assert [signer_of(r) for r in front.requests] == [sts.issued[0]] * 2
        log = kw.log_text()
        assert sts.issued[0][1] not in log and "credex-first" not in log
    finally:
        assert kw.stop() == 0


def test_web_identity_refreshed_before_expiry(stack, front, sts, tmp_path):
    """Credentials that expire in 5 min 3 s are exchanged again once less than 5 minutes
    remain (KEYWRAP_AWS_REFRESH_AHEAD_MS), once for concurrent callers, with the token file read
    again (the kubelet rotates it), and the new credentials sign from then on."""
    sts.lifetime = 300 + 3
    token_file = tmp_path / "token"
    token_file.write_text("credex-token-one")
    kw = web_identity_keywrap(stack, front, sts, token_file)
    try:
        generate(stack, kw, context("s-refresh"))
        assert len(sts.exchanges) == 1
        token_file.write_text("credex-token-two")
        time.sleep(3.5)
        with front.lock:
            front.requests.clear()
        # Eight calls at once find the credentials due: exactly one exchange, all sign with it.
        with ThreadPoolExecutor(8) as pool:
            keys = list(pool.map(lambda i: generate(stack, kw, context(f"s-refresh-{i}")).plaintext_data_key,
                                 range(8)))
        assert len(set(keys)) == 8
        assert len(sts.exchanges) == 2
        assert sts.exchanges[1]["WebIdentityToken"] == "credex-token-two"
        assert {signer_of(r) for r in front.requests} == {sts.issued[1]}
    finally:
        assert kw.stop() == 0


def test_sts_refusal_fails_closed(stack, front, sts, tmp_path):
    sts.refuse = True
    token_file = tmp_path / "token"
    token_file.write_text("credex-token-refused")
    kw = web_identity_keywrap(stack, front, sts, token_file)
    try:
        with front.lock:
            front.requests.clear()
        err = expect_error(lambda: generate(stack, kw, context("s-sts")), C.UNAVAILABLE, "unavailable")
        assert "InvalidIdentityToken" in err.details()
        assert front.requests == []  # nothing unsigned or half-signed reached KMS
        sts.refuse = False
        assert len(generate(stack, kw, context("s-sts")).plaintext_data_key) == 32
    finally:
        assert kw.stop() == 0
