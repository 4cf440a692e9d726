"""Issue 14, deliverable 3: the backup and restore drill (docs/BACKUP_RESTORE.md).

Two private stacks: `source` and `target`, a fresh stack started on the same key material (its run
folder holds a copy of the source's PKI, local-cmk key included) with its own FerretDB and OpenFGA.
On the source: users' and teams' secrets with several versions, shares, a revoked and a deleted
one, a custom OAuth connector and a user's provider connection through the generic provider test
server (a platform client secret and a token set in the envelope store); what each retrieval
answers, every stored document and every tuple are recorded; then `credexctl backup create`. On
the target: `credexctl backup restore`, after which every secret retrieves with the same value
and version, the same documents (audit trail included) and tuples are there, revoked and deleted
stay so, the connection reads the same. Then the failure paths: a tampered byte refused before
anything is written, an interrupted backup (no manifest) refused, a second restore refused
without --wipe and idempotent with it, and a keywrap with OTHER key material: verify and restore
fail naming the key provider and CMK, and retrieval through it answers integrity_error.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import uuid

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
COLLECTIONS = ["credential_secret_refs", "credential_encrypted_payloads", "credential_audit_events",
               "oauth_connectors", "provider_connections", "oauth_flows",
               "credential_migration_previews", "credex_leases"]


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, providers):
    src_dir = tmp_path_factory.mktemp("backup-source")
    dst_dir = tmp_path_factory.mktemp("backup-target")
    with contextlib.ExitStack() as both:
        source = both.enter_context(h.running_stack(src_dir, "backup source stack",
                                                    spawn_env=providers.env()))
        # Same key material (and CA, issuer key): pki.sh keeps files that exist.
        shutil.copytree(src_dir / "pki", dst_dir / "pki")
        target = both.enter_context(h.running_stack(dst_dir, "backup target stack",
                                                    spawn_env=providers.env()))
        yield source, target


@pytest.fixture(scope="module")
def apis(stacks, tmp_path_factory):
    a = [x.Api(s, tmp_path_factory.mktemp("backup-certs")) for s in stacks]
    yield a
    for api in a:
        api.close()


def outcome(api, user, sid, addr=None):
    """What an agent acting for `user` gets: ("ok", version, value) or ("error", code, reason)."""
    try:
        r = api.agent(user, addr=addr).retrieve(sid)
        return ("ok", r.version, r.value)
    except grpc.RpcError as e:
        return ("error", e.code(), x.reason(e))


def documents(api):
    client, db = api.mongo()
    try:
        return {c: sorted(db[c].find({}), key=lambda d: repr(d["_id"])) for c in COLLECTIONS}
    finally:
        client.close()


def all_tuples(api):
    import requests

    out, token = set(), ""
    while True:
        body = {"page_size": 100} | ({"continuation_token": token} if token else {})
        r = requests.post(f"{api.fga_url}/stores/{api.fga_store}/read", json=body, timeout=10)
        r.raise_for_status()
        data = r.json()
        out |= {(t["key"]["user"], t["key"]["relation"], t["key"]["object"]) for t in data.get("tuples", [])}
        token = data.get("continuation_token", "")
        if not token:
            return out


def ctl(stack, *args, **env):
    """credexctl with the stack's environment (and overrides)."""
    saved = dict(stack.env)
    stack.env |= env
    try:
        return stack.credexctl_run(*args, timeout=120)
    finally:
        stack.env = saved


UI_CALLBACK = "https://ui.credex.test/oauth/callback"


def connect(api, providers, admin: str, user: str, team: str) -> str:
    """A custom OAuth connector (its client secret in the envelope store) enabled for `team`, and
    `user`'s connection through the generic provider (its token set in the envelope store):
    the connection id."""
    o, gen = api.pb.oauth, providers.generic
    issuer, key = gen.new_tenant(), f"bk-{uuid.uuid4().hex[:10]}"
    secret = "drill-client-" + secrets.token_hex(8)
    gen.register_client(f"cid-{key}", secret, (UI_CALLBACK,))
    conn = o.Connector(
        provider_key=key, type=o.CONNECTOR_TYPE_CUSTOM_OAUTH2, display_name=f"Drill {key}", client_id=f"cid-{key}",
        redirect_uri=UI_CALLBACK, scopes=["profile"],
        endpoints=o.ConnectorEndpoints(authorization_url=f"{issuer}/authorize", token_url=f"{issuer}/token",
                                       userinfo_url=f"{issuer}/userinfo", revocation_url=f"{issuer}/revoke"),
        account_mapping=o.AccountMapping(account_id_field="sub", account_name_field="name"))
    made = api.ui(admin).call("Connectors", "CreateConnector",
                              o.CreateConnectorRequest(connector=conn, client_secret=secret.encode()), timeout=30)
    api.ui(admin).call("Connectors", "EnableConnector",
                       o.EnableConnectorRequest(connector_id=made.connector_id, team_ids=[team]), timeout=30)
    start = api.ui(user).call("Connections", "StartConnect", o.StartConnectRequest(provider_key=key), timeout=30)
    back = providers.consent(start.authorization_url)
    done = api.ui(user).call("Connections", "CompleteConnect", o.CompleteConnectRequest(
        provider_key=key, code=back["code"], oauth_state=back["state"]), timeout=30)
    assert done.connection.state == o.CONNECTION_STATE_ACTIVE
    return done.connection.connection_id


def connection(api, user: str, connection_id: str) -> bytes:
    o = api.pb.oauth
    return api.ui(user).call("Connections", "GetConnection",
                             o.GetConnectionRequest(connection_id=connection_id)).SerializeToString()


@pytest.fixture(scope="module")
def drill(stacks, apis, providers, tmp_path_factory):
    """The source's state and its backup: (backup dir, cases, documents, tuples, connection)."""
    source, _ = stacks
    api = apis[0]
    api.grant_retriever(x.AGENT)
    c, g = api.pb.common, api.pb.gateway
    alice, bob, team, tadmin, tmember = (x.uid(n) for n in ("alice", "bob", "crew", "tara", "tom"))
    api.fga_write([(f"user:{tadmin}", "admin", f"team:{team}"), (f"user:{tmember}", "member", f"team:{team}")])
    cases = []  # (user who retrieves, secret id)
    # A user's secret with three versions, shared with bob.
    s1 = api.ui(alice).create("drill-v1-" + secrets.token_hex(8)).secret.secret_id
    api.ui(alice).rotate(s1, "drill-v2-" + secrets.token_hex(8))
    api.ui(alice).rotate(s1, "drill-v3-" + secrets.token_hex(8))
    api.ui(alice).share(s1, g.GRANTEE_TYPE_USER, bob, g.SHARE_ROLE_USER)
    cases += [(alice, s1), (bob, s1)]
    # A team's secret with two versions, used by a member.
    team_owner = c.Owner(owner_type=c.OWNER_TYPE_TEAM, owner_id=team)
    s2 = api.ui(tadmin).create("drill-team-" + secrets.token_hex(8), owner=team_owner).secret.secret_id
    api.ui(tadmin).rotate(s2, "drill-team2-" + secrets.token_hex(8))
    cases += [(tmember, s2), (tadmin, s2)]
    # Revoked and deleted ones, and one bob never had.
    s3 = api.ui(alice).create("drill-revoked-" + secrets.token_hex(8)).secret.secret_id
    api.ui(alice).revoke(s3, "drill")
    s4 = api.ui(alice).create("drill-deleted-" + secrets.token_hex(8)).secret.secret_id
    api.ui(alice).delete(s4)
    s5 = api.ui(alice).create("drill-plain-" + secrets.token_hex(8)).secret.secret_id
    cases += [(alice, s3), (alice, s4), (alice, s5), (bob, s5)]
    # A provider connection of the team member: connector, connection, and two platform/oauth
    # secrets (the client secret, the token set) in the envelope store.
    padmin = x.uid("padmin")
    api.fga_write([(f"user:{padmin}", "admin", "platform:credex")])
    conn_id = connect(api, providers, padmin, tmember, team)
    conn = (tmember, conn_id, connection(api, tmember, conn_id))
    before = {case: outcome(api, *case) for case in cases}
    assert before[(alice, s1)][:2] == ("ok", 3) and before[(bob, s1)][0] == "ok"
    assert before[(tmember, s2)][:2] == ("ok", 2)
    assert before[(alice, s3)][0] == before[(alice, s4)][0] == before[(bob, s5)][0] == "error"
    docs, tuples = documents(api), all_tuples(api)
    out = tmp_path_factory.mktemp("backups") / "b1"
    res = ctl(source, "backup", "create", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "key material NOT in the backup" in res.stdout
    # Nothing changed on the source while it was backed up.
    assert documents(api) == docs and all_tuples(api) == tuples
    # Platform and token-set keys are in the sample too.
    assert {d["kind"] for d in docs["credential_secret_refs"]} >= {"oauth_client_secret", "provider_token_set"}
    return out, before, docs, tuples, conn


def test_backup_holds_a_manifest_and_no_plaintext(drill):
    import json

    out, before, *_ = drill
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "credex-backup/1"
    names = {f["file"] for f in manifest["files"]}
    assert names == {f"{c}.bson" for c in COLLECTIONS} | {"openfga_tuples.jsonl"}
    assert manifest["keys"]["wrapped_under"][0]["key_provider"] == "local-cmk"
    assert not (out / "manifest.json.tmp").exists()
    blob = b"".join(p.read_bytes() for p in out.iterdir())
    for o in before.values():
        if o[0] == "ok":
            assert o[2] not in blob, "a backup file holds a secret value"


def test_restore_on_a_fresh_stack_gives_back_every_secret_share_and_event(stacks, apis, drill):
    _, target = stacks
    out, before, docs, tuples, conn = drill
    # A fresh stack is an empty target: no --wipe needed (its own grants are in the backup too).
    res = ctl(target, "backup", "restore", "--from", str(out))
    assert res.returncode == 0, res.stderr + res.stdout
    assert "key check:" in res.stdout and "wiped" not in res.stdout
    api = apis[1]
    # The very documents (audit trail included) and every tuple, before anything else runs.
    assert documents(api) == docs
    assert tuples <= all_tuples(api)
    after = {case: outcome(api, *case) for case in before}
    assert after == before
    user, conn_id, seen = conn
    assert connection(api, user, conn_id) == seen


def test_restore_refuses_a_non_empty_target_and_is_idempotent_with_wipe(stacks, apis, drill):
    _, target = stacks
    out, before, *_ = drill
    ctl(target, "backup", "restore", "--from", str(out), "--wipe")
    res = ctl(target, "backup", "restore", "--from", str(out))
    assert res.returncode == 1 and "not empty" in res.stderr, res.stderr
    restored = documents(apis[1])
    res = ctl(target, "backup", "restore", "--from", str(out), "--wipe")
    assert res.returncode == 0, res.stderr
    assert documents(apis[1]) == restored
    assert {case: outcome(apis[1], *case) for case in before} == before


def test_tampered_byte_is_refused_before_anything_is_written(stacks, apis, drill, tmp_path):
    _, target = stacks
    out = drill[0]
    ctl(target, "backup", "restore", "--from", str(out), "--wipe")
    state = documents(apis[1])
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    f = bad / "credential_encrypted_payloads.bson"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    for args in (("verify", "--from", str(bad), "--no-key-check"), ("restore", "--from", str(bad), "--wipe")):
        res = ctl(target, "backup", *args)
        assert res.returncode == 1, res.stdout
        assert "credential_encrypted_payloads.bson" in res.stderr and (
            "checksum mismatch" in res.stderr or "malformed" in res.stderr), res.stderr
    assert documents(apis[1]) == state  # --wipe did not run: nothing was written


def test_interrupted_backup_without_manifest_is_refused(stacks, drill, tmp_path):
    _, target = stacks
    partial = tmp_path / "partial"
    shutil.copytree(drill[0], partial)
    (partial / "manifest.json").unlink()
    res = ctl(target, "backup", "restore", "--from", str(partial), "--wipe")
    assert res.returncode == 1 and "manifest.json is missing" in res.stderr, res.stderr
    res = ctl(target, "backup", "create", "--out", str(drill[0]))
    assert res.returncode == 1 and "new or empty directory" in res.stderr, res.stderr


def test_wrong_key_material_fails_clearly_and_retrieval_is_an_integrity_error(stacks, apis, drill,
                                                                             tmp_path):
    _, target = stacks
    out, before, docs, *_ = drill
    ctl(target, "backup", "restore", "--from", str(out), "--wipe")
    other = tmp_path / "other-cmk.key"
    other.write_text(secrets.token_hex(32) + "\n")
    other.chmod(0o600)
    keywrap = target.spawn("keywrap", CREDEX_LOCAL_CMK_KEY_FILE=str(other))
    try:
        target.wait_healthy(keywrap)
        gateway, store = target.spawn_pair(CREDEX_KEYWRAP_ADDR=keywrap.addr)
        try:
            for args in (("verify", "--from", str(out)), ("restore", "--from", str(out), "--wipe")):
                res = ctl(target, "backup", *args, CREDEX_STORE_ADDR=store.addr)
                assert res.returncode == 1, res.stdout
                assert "integrity_error: wrong key material" in res.stderr, res.stderr
                assert "local-cmk key alias/credex-local" in res.stderr, res.stderr
            # The restore under the wrong key wrote the same data; it is never served as garbage.
            assert documents(apis[1]) == docs
            for (user, sid), o in before.items():
                if o[0] == "ok":
                    got = outcome(apis[1], user, sid, addr=gateway.addr)
                    assert got == ("error", C.DATA_LOSS, "integrity_error"), (user, sid, got)
                    # The right key material still opens it.
                    assert outcome(apis[1], user, sid) == o
        finally:
            codes = target.stop_pair(gateway, store)
            assert codes == {"gateway": 0, "store": 0}, codes
    finally:
        assert keywrap.stop() == 0


def test_check_data_keys_is_for_the_operator_only(stacks, apis):
    """store.CheckDataKeys answers only the operator's identity (credexctl), checks its input,
    and answers a key that does not unwrap with a reason, never with key material."""
    _, target = stacks
    p = apis[1].pb
    c = p.common
    probe = p.store.StoreDataKeyProbe(
        secret_id="sec_" + "0" * 26, version=1,
        owner=c.Owner(owner_type=c.OWNER_TYPE_USER, owner_id=x.uid("u")), kind=c.SECRET_KIND_API_KEY,
        wrapped_key=p.keywrap.WrappedKey(ciphertext=b"\x00" * 60, key_provider=c.KEY_PROVIDER_LOCAL_CMK,
                                         key_id="alias/credex-local"))
    request = p.store.StoreCheckDataKeysRequest(probes=[probe])

    def call(identity, req):
        with target.channel("store", identity) as ch:
            return p.store_grpc.CredentialStoreStub(ch).CheckDataKeys(req, timeout=10)

    for peer in ("gateway", "oauth"):
        with pytest.raises(grpc.RpcError) as info:
            call(peer, request)
        assert info.value.code() == C.PERMISSION_DENIED, x.describe(info.value)
    with pytest.raises(grpc.RpcError) as info:
        call(h.CLI_IDENTITY, p.store.StoreCheckDataKeysRequest())
    assert (info.value.code(), x.reason(info.value)) == (C.INVALID_ARGUMENT, "invalid_argument")
    reply = call(h.CLI_IDENTITY, request)
    assert [(k.secret_id, k.ok) for k in reply.checks] == [(probe.secret_id, False)]
    assert reply.checks[0].reason in ("integrity_error", "invalid_argument")
