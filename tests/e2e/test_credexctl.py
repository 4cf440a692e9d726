"""credexctl against the session stack (issue 8, findings 13 and 17).

- `--json` prints the canonical proto3 JSON mapping of the reply (common/pjson): the same document
  grpcurl (protojson) prints for the same RPC with the same request and identity;
- `secret share/unshare` name the grantee with `--grantee TYPE:ID`; `--user` is the acting user
  in every command;
- `--version` prints the project version; `retrieve --json` prints the RetrieveResponse with the
  value in base64, while plain `retrieve` writes the raw value and nothing else;
- what retrieve prints is not left behind in credexctl's memory (a gdb stopped at exit() looks).

Every test uses its own users, so tests are independent of each other and of their order.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pytest

import credex_api as x
import credex_harness as h

RESOURCE = "mcp_server:mcp-e2e"


def ctl(stack, *args: str, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """credexctl with the stack's settings and the CLI's certificate; stdout/stderr as bytes."""
    env = h.clean_base_env() | stack.env | {
        "CREDEX_TLS_CERT": str(stack.pki.cert(h.CLI_IDENTITY)),
        "CREDEX_TLS_KEY": str(stack.pki.key(h.CLI_IDENTITY)),
        "CREDEX_RUN_DIR": str(stack.run_dir),
    }
    return subprocess.run([str(stack.credexctl), *args], env=env, input=stdin, capture_output=True,
                          timeout=timeout)


def ok(res: subprocess.CompletedProcess) -> bytes:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr.decode(errors='replace')}"
    return res.stdout


def ctl_json(stack, *args: str):
    return json.loads(ok(ctl(stack, *args, "--json")))


def create(stack, user: str, value: bytes) -> str:
    out = ok(ctl(stack, "secret", "create", "--user", user, "--name", "cli e2e", "--kind", "api_key",
                 "--value-stdin", "--quiet", stdin=value))
    sid = out.decode().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", sid), out
    return sid


def retrieve(stack, sid: str, user: str, *extra: str) -> subprocess.CompletedProcess:
    return ctl(stack, "retrieve", sid, "--as-service", x.AGENT, "--for-user", user, "--use", x.DEFAULT_USE,
               "--resource", RESOURCE, *extra)


def grpcurl_json(stack, method: str, request: dict, headers: list[str], identity: str = h.CLI_IDENTITY) -> str:
    """grpcurl's output (protojson) for one gateway call with this identity's certificate."""
    cmd = [str(stack.grpcurl_bin), "-cacert", str(stack.pki.ca), "-cert", str(stack.pki.cert(identity)),
           "-key", str(stack.pki.key(identity)), "-servername", "localhost", "-max-time", "10"]
    for hd in headers:
        cmd += ["-H", hd]
    cmd += ["-d", json.dumps(request), stack.addrs["gateway"], method]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


def user_header(stack, user: str) -> str:
    token = ok(ctl(stack, "token", "--user", user)).decode().strip()
    return f"x-credex-user-token: {token}"


# ---- --version --------------------------------------------------------------------------------------

def test_version_prints_the_project_version(stack):
    cmake = (h.ROOT / "CMakeLists.txt").read_text()
    version = re.search(r"project\(credex VERSION ([0-9.]+)", cmake).group(1)
    res = ctl(stack, "--version")
    assert ok(res) == f"credexctl {version}\n".encode()
    assert res.stderr == b""


# ---- share / unshare: --grantee, and --user is the acting user --------------------------------------

def test_share_and_unshare_name_the_grantee_with_grantee(stack, api):
    owner, bob = x.uid("cli-owner"), x.uid("cli-bob")
    value = b"sk-cli-share-" + x.uid("v").encode()
    api.values.add(value)
    sid = create(stack, owner, value)
    assert retrieve(stack, sid, bob).returncode == 1, "bob may not use it before the share"

    shared = ctl_json(stack, "secret", "share", sid, "--user", owner, "--grantee", f"user:{bob}")
    assert shared["applied"] is True
    assert shared["share"]["grantee"] == {"granteeType": "GRANTEE_TYPE_USER", "granteeId": bob}
    assert shared["share"]["role"] == "SHARE_ROLE_USER"
    assert ok(retrieve(stack, sid, bob)) == value
    shares = ctl_json(stack, "secret", "shares", sid, "--user", owner)["shares"]
    assert {(s["grantee"]["granteeId"], s["role"]) for s in shares} == {
        (owner, "SHARE_ROLE_OWNER"), (bob, "SHARE_ROLE_USER")}

    # the other grantee kinds parse into their types (a preview changes nothing)
    for kind, gtype in (("team", "GRANTEE_TYPE_TEAM"), ("service", "GRANTEE_TYPE_SERVICE")):
        name = "cli-team-x" if kind == "team" else "cli-svc-x"
        prev = ctl_json(stack, "secret", "share", sid, "--user", owner, "--grantee", f"{kind}:{name}", "--preview")
        assert prev["share"]["grantee"] == {"granteeType": gtype, "granteeId": name}
        assert "applied" not in prev  # false: the default, omitted

    removed = ctl_json(stack, "secret", "unshare", sid, "--user", owner, "--grantee", f"user:{bob}")
    assert removed == {"removedCount": 1}
    res = retrieve(stack, sid, bob)
    assert res.returncode == 1 and res.stderr.startswith(b"credexctl: not_found:"), res.stderr


def test_grantee_option_is_checked_and_user_is_never_the_grantee(stack):
    owner = x.uid("cli-owner")
    sid = create(stack, owner, b"sk-cli-grantee-" + x.uid("v").encode())
    bad = ["bob", "user:", ":bob", "group:bob", "user:bad id", "service:Upper", "team:-x"]
    for g in bad:
        res = ctl(stack, "secret", "share", sid, "--user", owner, "--grantee", g)
        assert res.returncode == 2, (g, res.stderr)
        assert b"--grantee" in res.stderr
    # no grantee at all: a usage error, not a grant to whoever --user names
    for sub in ("share", "unshare"):
        res = ctl(stack, "secret", sub, sid, "--user", owner)
        assert res.returncode == 2 and b"--grantee" in res.stderr, res.stderr
    # the old spelling (acting user in --as, grantee in --user) is refused, not reinterpreted
    res = ctl(stack, "secret", "share", sid, "--as", owner, "--user", x.uid("cli-bob"))
    assert res.returncode == 2, res.stderr
    assert b"--user" in res.stderr and b"--as" in res.stderr
    # --as alone still names the acting user
    peer = x.uid("cli-peer")
    assert ctl_json(stack, "secret", "share", sid, "--as", owner, "--grantee", f"user:{peer}")["applied"]
    help_text = ok(ctl(stack, "secret", "--help")).decode()
    assert "--grantee" in help_text and "in share/unshare --user names the grantee" not in help_text


# ---- retrieve --json and the raw value --------------------------------------------------------------

def test_retrieve_json_carries_the_value_in_base64(stack, api):
    user = x.uid("cli-ret")
    value = b"sk-cli\x00\xff\n\"bin\"-" + x.uid("v").encode()
    api.values.add(value)
    sid = create(stack, user, value)

    raw = retrieve(stack, sid, user)
    assert ok(raw) == value, "without --json stdout is the value, byte for byte"

    res = retrieve(stack, sid, user, "--json")
    doc = json.loads(ok(res))
    assert base64.b64decode(doc["value"], validate=True) == value
    assert doc == {"secretId": sid, "version": 1, "kind": "SECRET_KIND_API_KEY", "value": doc["value"]}
    assert res.stderr == b""

    # the same document grpcurl prints for the same Retrieve by the same service for the same user
    service_jwt = ok(ctl(stack, "token", "--service", x.AGENT)).decode().strip()
    obo = ok(ctl(stack, "token", "--service", x.AGENT, "--user", user)).decode().strip()
    rtype, rid = RESOURCE.split(":")
    g = grpcurl_json(stack, "credex.v1.Retrieval/Retrieve",
                     {"secret_ref": sid, "intended_use": x.DEFAULT_USE,
                      "resource_context": {"resource_type": rtype, "resource_id": rid}},
                     [f"authorization: Bearer {service_jwt}", f"x-credex-user-token: {obo}"], identity=x.AGENT)
    assert json.loads(g) == doc
    assert res.stdout.decode() == g, "same text as grpcurl, indentation included"


# What a gdb stopped at exit() in credexctl sees: the bytes in stdout's stdio buffer (glibc x86-64:
# _IO_buf_base and _IO_buf_end at offsets 56 and 64 of the FILE), and in every writable mapping,
# counted per needle. Freed memory keeps its content (ASan's quarantine too), so a copy that was
# freed without being wiped is still found.
MEMORY_SCAN = r"""
import gdb, os
needles = [bytes.fromhex(v) for v in os.environ["CX_NEEDLES"].split(",")]
inf = gdb.selected_inferior()
fp = int(gdb.parse_and_eval("*(unsigned long *)&stdout"))
base = int.from_bytes(bytes(inf.read_memory(fp + 56, 8)), "little")
end = int.from_bytes(bytes(inf.read_memory(fp + 64, 8)), "little")
buf = bytes(inf.read_memory(base, end - base)) if base and end > base else b""
counts = [0] * len(needles)
for line in open(f"/proc/{inf.pid}/maps"):
    p = line.split()
    lo, hi = (int(v, 16) for v in p[0].split("-"))
    if not p[1].startswith("rw") or hi - lo > (256 << 20):
        continue
    try:
        mem = bytes(inf.read_memory(lo, hi - lo))
    except gdb.MemoryError:
        continue
    for i, n in enumerate(needles):
        counts[i] += mem.count(n)
print("SCAN", json.dumps({"stdio": [buf.count(n) for n in needles], "memory": counts}))
""".replace("import gdb, os", "import gdb, json, os")


def copies_at_exit(stack, tmp_path, args: list[str], needles: list[bytes]) -> dict:
    gdb = shutil.which("gdb")
    assert gdb, "gdb is needed for this test (scripts/setup installs it)"
    script = tmp_path / "scan.py"
    script.write_text(MEMORY_SCAN)
    env = h.clean_base_env() | stack.env | {
        "CREDEX_TLS_CERT": str(stack.pki.cert(h.CLI_IDENTITY)),
        "CREDEX_TLS_KEY": str(stack.pki.key(h.CLI_IDENTITY)),
        "CREDEX_RUN_DIR": str(stack.run_dir),
        "CX_NEEDLES": ",".join(n.hex() for n in needles),
    }
    res = subprocess.run([gdb, "-nx", "-batch", "-ex", "set pagination off", "-ex", "set breakpoint pending on",
                          "-ex", "break exit", "-ex", "run", "-ex", f"source {script}",
                          "--args", str(stack.credexctl), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    found = [line for line in res.stdout.splitlines() if line.startswith("SCAN ")]
    assert found, f"gdb scan did not run:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return json.loads(found[-1][5:])


def test_retrieve_leaves_no_copy_of_the_value_in_its_own_buffers(stack, api, tmp_path):
    """Raw: the value is written to the stdout descriptor, never into stdio's buffer. --json: the
    base64 text (jansson's tree, the text credexctl wrote) is wiped everywhere. (Copies of the raw
    value that the gRPC transport keeps, in its receive buffers, are common/rpc's to wipe.)"""
    user = x.uid("cli-mem")
    value = b"sk-cli-mem-" + x.uid("v").encode()
    api.values.add(value)
    sid = create(stack, user, value)
    args = ["retrieve", sid, "--as-service", x.AGENT, "--for-user", user, "--use", x.DEFAULT_USE,
            "--resource", RESOURCE]
    raw = copies_at_exit(stack, tmp_path, args, [value])
    assert raw["stdio"] == [0], "the value stayed in stdout's stdio buffer"
    b64 = base64.b64encode(value)
    js = copies_at_exit(stack, tmp_path, [*args, "--json"], [value, b64])
    assert js["stdio"] == [0, 0]
    assert js["memory"][1] == 0, f"{js['memory'][1]} unwiped copies of the value's base64"


# ---- --json is grpcurl's shape ----------------------------------------------------------------------

def same_as_grpcurl(stack, ctl_args: list[str], method: str, request: dict, headers: list[str]) -> dict:
    mine = ok(ctl(stack, *ctl_args, "--json")).decode()
    theirs = grpcurl_json(stack, method, request, headers)
    assert json.loads(mine) == json.loads(theirs), f"credexctl:\n{mine}\ngrpcurl:\n{theirs}"
    assert mine == theirs, f"same document, different text:\ncredexctl:\n{mine}\ngrpcurl:\n{theirs}"
    return json.loads(mine)


def test_secret_json_is_what_grpcurl_prints(stack, api):
    user = x.uid("cli-json")
    value = b"sk-cli-json-" + x.uid("v").encode()
    api.values.add(value)
    sid = create(stack, user, value)
    hdr = [user_header(stack, user)]

    shown = same_as_grpcurl(stack, ["secret", "show", sid, "--user", user], "credex.v1.Secrets/GetSecret",
                            {"secret_id": sid}, hdr)
    assert shown["secretId"] == sid
    assert shown["owner"] == {"ownerType": "OWNER_TYPE_USER", "ownerId": user}
    assert shown["kind"] == "SECRET_KIND_API_KEY" and shown["status"] == "SECRET_STATUS_ACTIVE"
    assert shown["currentVersion"] == 1 and shown["maskedValue"] == "********"
    assert re.fullmatch(r"[0-9]+", shown["createdAtMs"]), "int64 as a decimal string"
    assert "rotatedAtMs" not in shown and "description" not in shown, "defaults are omitted"

    listed = same_as_grpcurl(stack, ["secret", "list", "--user", user, "--scope", "owned"],
                             "credex.v1.Secrets/ListSecrets",
                             {"scope": "LIST_SECRETS_SCOPE_OWNED", "page": {}}, hdr)
    assert [s["secretId"] for s in listed["secrets"]] == [sid]
    same_as_grpcurl(stack, ["secret", "versions", sid, "--user", user], "credex.v1.Secrets/ListSecretVersions",
                    {"secret_id": sid}, hdr)
    same_as_grpcurl(stack, ["secret", "shares", sid, "--user", user], "credex.v1.Secrets/ListSecretShares",
                    {"secret_id": sid}, hdr)
    for doc in (shown, listed):
        assert value.decode() not in json.dumps(doc)


def test_health_json_is_what_grpcurl_prints(stack):
    # grpc.health.v1 on the gateway
    mine = json.loads(ok(ctl(stack, "health", "--json")))
    assert mine == {"status": "SERVING"}
    res = stack.grpcurl("gateway", "grpc.health.v1.Health/Check")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == mine

    # credential health (Admin.GetHealth) as the CLI itself; checkedAtMs may tick between calls
    service_jwt = ok(ctl(stack, "token", "--service", h.CLI_IDENTITY)).decode().strip()

    def both():
        a = json.loads(ok(ctl(stack, "gateway-health", "--json")))
        b = json.loads(grpcurl_json(stack, "credex.v1.Admin/GetHealth", {},
                                    [f"authorization: Bearer {service_jwt}"]))
        for doc in (a, b):
            for c in doc.get("components", []):
                c.pop("checkedAtMs", None)
        return a, b

    a, b = both()
    if a != b:  # a component's status may change between the two calls: compare once more
        a, b = both()
    assert a == b, f"credexctl {a}\ngrpcurl {b}"
    assert a["status"].startswith("HEALTH_STATUS_") and a["credentialsEnabled"] is True
    assert a["keyProvider"] == "KEY_PROVIDER_LOCAL_CMK"


def test_every_json_output_is_the_canonical_mapping(stack, api):
    """The commands whose replies the tests above do not compare with grpcurl print the same
    mapping: camelCase names, enum value names, int64 as strings."""
    user = x.uid("cli-all")
    v1, v2 = b"sk-cli-all-1-" + x.uid("v").encode(), b"sk-cli-all-2-" + x.uid("v").encode()
    api.values.update({v1, v2})
    created = json.loads(ok(ctl(stack, "secret", "create", "--user", user, "--name", "all", "--kind", "token",
                                "--value-stdin", "--json", stdin=v1)))
    assert created["created"] is True and created["secret"]["kind"] == "SECRET_KIND_TOKEN"
    sid = created["secret"]["secretId"]
    updated = ctl_json(stack, "secret", "update", sid, "--user", user, "--description", "d")
    assert updated["description"] == "d" and re.fullmatch(r"[0-9]+", updated["updatedAtMs"])
    rotated = json.loads(ok(ctl(stack, "secret", "rotate", sid, "--user", user, "--expected-version", "1",
                                "--value-stdin", "--json", stdin=v2)))
    assert rotated["secret"]["currentVersion"] == 2
    assert rotated["version"]["state"] == "VERSION_STATE_CURRENT"
    versions = ctl_json(stack, "secret", "versions", sid, "--user", user)["versions"]
    assert [(v["version"], v["state"], v["keyProvider"]) for v in versions] == [
        (2, "VERSION_STATE_CURRENT", "KEY_PROVIDER_LOCAL_CMK"), (1, "VERSION_STATE_PREVIOUS", "KEY_PROVIDER_LOCAL_CMK")]
    revoked = ctl_json(stack, "secret", "revoke", sid, "--user", user, "--reason", "e2e")
    assert revoked["status"] == "SECRET_STATUS_REVOKED" and "revokedAtMs" in revoked
    deleted = ctl_json(stack, "secret", "delete", sid, "--user", user)
    assert deleted["status"] == "SECRET_STATUS_DELETED" and "valueSet" not in deleted
    for doc in (created, updated, rotated, versions, revoked, deleted):
        text = json.dumps(doc)
        assert v1.decode() not in text and v2.decode() not in text
        assert "secret_id" not in text and "current_version" not in text


# ---- dev: OpenFGA tuples through common/fga ---------------------------------------------------------

def test_dev_writes_and_removes_tuples_idempotently(stack, api):
    """`credexctl dev` writes its tuples to the stack's OpenFGA; writing what exists and removing
    what is missing succeed (a partly existing write adds the rest); a refusal names its reason
    without repeating OpenFGA's text."""
    svc, team, user = x.uid("svc"), x.uid("team"), x.uid("user")
    member = (f"user:{user}", "member", f"team:{team}")
    admin = (f"user:{user}", "admin", f"team:{team}")

    for _ in range(2):
        assert ok(ctl(stack, "dev", "grant-retriever", svc)) == \
            f"wrote platform:credex#retriever@service:{svc}\n".encode()
    assert api.fga_check(f"service:{svc}", "retriever", "platform:credex")

    ok(ctl(stack, "dev", "add-team-member", team, user))
    assert set(api.fga_read(f"team:{team}")) == {member}
    ok(ctl(stack, "dev", "add-team-member", team, user, "--admin"))  # member exists already
    assert set(api.fga_read(f"team:{team}")) == {member, admin}

    ok(ctl(stack, "dev", "add-team-member", team, user, "--remove"))
    assert set(api.fga_read(f"team:{team}")) == {admin}
    for _ in range(2):  # the member tuple is gone already
        ok(ctl(stack, "dev", "add-team-member", team, user, "--admin", "--remove"))
    assert api.fga_read(f"team:{team}") == []

    ok(ctl(stack, "dev", "make-admin", user))
    assert api.fga_check(f"user:{user}", "admin", "platform:credex")
    for _ in range(2):
        ok(ctl(stack, "dev", "make-admin", user, "--remove"))
    assert not api.fga_check(f"user:{user}", "admin", "platform:credex")
    ok(ctl(stack, "dev", "grant-retriever", svc, "--remove"))
    assert not api.fga_check(f"service:{svc}", "retriever", "platform:credex")

    for _ in range(2):
        assert ok(ctl(stack, "dev", "grant-exchanger", svc)) == \
            f"wrote platform:credex#exchanger@service:{svc}\n".encode()
    assert api.fga_check(f"service:{svc}", "exchanger", "platform:credex")
    ok(ctl(stack, "dev", "grant-exchanger", svc, "--remove"))
    assert not api.fga_check(f"service:{svc}", "exchanger", "platform:credex")

    # A store id left over from another stack: refused, with the reason and without OpenFGA's
    # message (which would repeat the request's values).
    env_store = stack.env["CREDEX_OPENFGA_STORE_ID"]
    bogus = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    res = subprocess.run([str(stack.credexctl), "dev", "make-admin", user],
                         env=h.clean_base_env() | stack.env | {"CREDEX_OPENFGA_STORE_ID": bogus},
                         capture_output=True, timeout=30)
    assert res.returncode == 1, res
    err = res.stderr.decode()
    assert err.startswith("credexctl: unavailable: ") and bogus in err, err
    assert user not in err and env_store not in err, err
