"""Issue 4, deliverable 6: secret lifecycle and masking through the public gateway, as a UI user.

Every test uses its own users, idempotency keys and values, so the tests are independent of each
other and of the order they run in. The stack is the session stack (ASan+UBSan build).
"""

from __future__ import annotations

import threading
import uuid

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def expect(fn, code: grpc.StatusCode, why: str) -> grpc.RpcError:
    err = rpc_error(fn)
    assert (err.code(), x.reason(err)) == (code, why), x.describe(err)
    return err


def secret_value(tag: str) -> bytes:
    return f"sk-e2e-{tag}-{uuid.uuid4().hex}".encode()


def no_value_in(messages, *values: bytes) -> None:
    for m in messages:
        raw = m.SerializeToString()
        for v in values:
            assert v not in raw, f"a read returned the secret value: {type(m).__name__}"


def assert_masked(meta, *, set_: bool = True) -> None:
    assert meta.value_set is set_
    assert meta.masked_value == ("********" if set_ else "")


# ---- lifecycle and masking --------------------------------------------------------------------

def test_lifecycle_and_masking(api):
    p = api.pb
    user = x.uid("alice")
    ui = api.ui(user)
    v1, v2 = secret_value("v1"), secret_value("v2")

    created = ui.create(v1, name="OpenAI key", description="for the e2e agent", provider="openai",
                        allowed_uses=[x.DEFAULT_USE])
    meta = created.secret
    sid = meta.secret_id
    assert created.created is True
    assert sid and len(sid) <= 64
    assert (meta.owner.owner_type, meta.owner.owner_id) == (p.common.OWNER_TYPE_USER, user)
    assert meta.kind == p.common.SECRET_KIND_API_KEY
    assert meta.status == p.common.SECRET_STATUS_ACTIVE
    assert (meta.display_name, meta.description, meta.provider) == ("OpenAI key", "for the e2e agent", "openai")
    assert list(meta.allowed_uses) == [x.DEFAULT_USE]
    assert meta.current_version == 1
    assert meta.created_by == user
    assert meta.created_at_ms > 0
    assert_masked(meta)

    got = ui.get(sid)
    assert got.secret_id == sid and got.current_version == 1
    assert_masked(got)
    listed = ui.list()
    assert sid in [s.secret_id for s in listed.secrets]
    owned = ui.list(scope=p.gateway.LIST_SECRETS_SCOPE_OWNED)
    assert sid in [s.secret_id for s in owned.secrets]
    versions = ui.versions(sid)
    assert [v.version for v in versions.versions] == [1]
    assert versions.versions[0].state == p.common.VERSION_STATE_CURRENT
    assert versions.versions[0].algorithm == "AES-256-GCM"
    no_value_in([created, got, listed, owned, versions], v1)

    rotated = ui.rotate(sid, v2, expected_version=1)
    assert rotated.secret.current_version == 2
    assert rotated.version.version == 2 and rotated.version.state == p.common.VERSION_STATE_CURRENT
    assert rotated.secret.rotated_at_ms > 0
    assert_masked(rotated.secret)
    expect(lambda: ui.rotate(sid, secret_value("stale"), expected_version=1), C.ABORTED, "conflict")
    versions = ui.versions(sid)
    states = {v.version: v.state for v in versions.versions}
    assert states == {2: p.common.VERSION_STATE_CURRENT, 1: p.common.VERSION_STATE_PREVIOUS}
    assert [v.version for v in versions.versions] == [2, 1], "newest first"
    # The rotate reply and the list describe version 2 alike, field by field (key, created_at).
    assert rotated.version == versions.versions[0], f"{rotated.version}\n!=\n{versions.versions[0]}"
    assert rotated.version.key_provider == p.common.KEY_PROVIDER_LOCAL_CMK and rotated.version.key_id
    assert rotated.version.created_at_ms == rotated.secret.rotated_at_ms
    no_value_in([rotated, versions, ui.get(sid), ui.list()], v1, v2)

    revoked = ui.revoke(sid, "e2e: no longer needed")
    assert revoked.status == p.common.SECRET_STATUS_REVOKED
    assert revoked.revoked_at_ms > 0
    assert ui.get(sid).status == p.common.SECRET_STATUS_REVOKED

    deleted = ui.delete(sid)
    assert deleted.status == p.common.SECRET_STATUS_DELETED
    assert deleted.deleted_at_ms > 0
    assert_masked(deleted, set_=False)
    no_value_in([revoked, deleted], v1, v2)


def test_delete_leaves_a_tombstone_and_destroys_the_payloads(api):
    user = x.uid("dora")
    ui = api.ui(user)
    v1, v2 = secret_value("del1"), secret_value("del2")
    sid = ui.create(v1).secret.secret_id
    ui.rotate(sid, v2, expected_version=1)
    client, db = api.mongo()
    with client:
        payloads = list(db.credential_encrypted_payloads.find({"secret_id": sid}))
        assert len(payloads) == 2, f"expected one payload document per version, got {len(payloads)}"
        assert {"credential_secret_refs", "credential_encrypted_payloads"} <= set(db.list_collection_names())

        ui.delete(sid)

        ref = db.credential_secret_refs.find_one({"secret_id": sid})
        assert ref is not None, "the tombstone (metadata) must remain"
        assert "deleted" in str(ref.get("status", "")).lower(), ref.get("status")
        for doc in db.credential_encrypted_payloads.find({"secret_id": sid}):
            leftovers = {path: value for path, value in x.flatten(doc).items() if is_key_material_field(path)
                         and value not in (None, b"", "", [], {})}
            assert not leftovers, f"payload of version {doc.get('version')} still holds {sorted(leftovers)}"
    # Deleting again is idempotent; the owner sees a tombstone or nothing, never a value.
    again = ui.delete(sid)
    assert again.status == api.pb.common.SECRET_STATUS_DELETED
    try:
        meta = ui.get(sid)
        assert meta.status == api.pb.common.SECRET_STATUS_DELETED
        assert_masked(meta, set_=False)
    except grpc.RpcError as err:
        assert (err.code(), x.reason(err)) == (C.NOT_FOUND, "not_found"), x.describe(err)
    assert sid not in [s.secret_id for s in ui.list().secrets], "tombstones are hidden from lists"


def test_values_are_encrypted_at_rest(api):
    ui = api.ui(x.uid("erin"))
    value = secret_value("at-rest")
    sid = ui.create(value).secret.secret_id
    client, db = api.mongo()
    with client:
        for coll in db.list_collection_names():
            for doc in db[coll].find({}):
                flat = repr(doc).encode()
                for form in x.encodings(value):
                    assert form not in flat, f"{coll} holds the plaintext of {sid}"


def is_key_material_field(path: str) -> bool:
    """Ciphertext and wrapped data key: what delete must destroy (nonce and tag are not secret)."""
    low = path.lower()
    last = low.rsplit(".", 1)[-1]
    return "ciphertext" in last or "wrap" in low or last in ("encrypted_data_key", "edk")


@pytest.mark.parametrize("case", ["empty_value", "value_over_64k", "oauth_kind", "no_idempotency_key",
                                  "long_display_name", "bad_allowed_use"])
def test_invalid_creates_are_refused(api, case):
    ui = api.ui(x.uid("inga"))
    c = api.pb.common
    call = {
        "empty_value": lambda: ui.create(b""),
        "value_over_64k": lambda: ui.create(b"v" * 65537),
        "oauth_kind": lambda: ui.create(secret_value("oauth"), kind=c.SECRET_KIND_PROVIDER_TOKEN_SET),
        "no_idempotency_key": lambda: ui.call("Secrets", "CreateSecret", api.pb.gateway.CreateSecretRequest(
            kind=c.SECRET_KIND_API_KEY, display_name="no key", value=secret_value("nokey"))),
        "long_display_name": lambda: ui.create(secret_value("long"), name="n" * 129),
        "bad_allowed_use": lambda: ui.create(secret_value("use"), allowed_uses=["Not A Use"]),
    }[case]
    err = expect(call, C.INVALID_ARGUMENT, "invalid_argument")
    assert b"sk-e2e" not in (err.details() or "").encode()
    assert not ui.list().secrets, "nothing may have been created"


# ---- idempotent create ------------------------------------------------------------------------

def test_idempotent_create(api):
    ui = api.ui(x.uid("ivan"))
    key = str(uuid.uuid4())
    first = ui.create(secret_value("idem"), key=key, name="same name")
    assert first.created is True
    replay = ui.create(secret_value("idem-replay"), key=key, name="same name")
    assert replay.created is False
    assert replay.secret.secret_id == first.secret.secret_id
    assert replay.secret.current_version == 1
    expect(lambda: ui.create(secret_value("idem-other"), key=key, name="another name"), C.ABORTED, "conflict")
    # The same key under another owner is another secret.
    other = api.ui(x.uid("ivy")).create(secret_value("idem-ivy"), key=key, name="same name")
    assert other.created is True and other.secret.secret_id != first.secret.secret_id
    ids = [s.secret_id for s in ui.list().secrets]
    assert ids.count(first.secret.secret_id) == 1


# ---- concurrent rotations ---------------------------------------------------------------------

def test_concurrent_rotations_have_one_winner(api):
    user = x.uid("carl")
    ui = api.ui(user)
    sid = ui.create(secret_value("race")).secret.secret_id
    n = 8
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def rotate(i: int) -> None:
        caller = api.ui(user)
        barrier.wait(timeout=30)
        try:
            results[i] = caller.rotate(sid, secret_value(f"race{i}"), expected_version=1, timeout=30)
        except grpc.RpcError as err:
            results[i] = err

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    wins = [r for r in results if not isinstance(r, grpc.RpcError)]
    losses = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(wins) == 1, f"{len(wins)} rotations won: {[x.describe(e) for e in losses]}"
    assert wins[0].secret.current_version == 2
    for err in losses:
        assert (err.code(), x.reason(err)) == (C.ABORTED, "conflict"), x.describe(err)
    assert ui.get(sid).current_version == 2
    assert [v.version for v in ui.versions(sid).versions] == [2, 1]


def test_concurrent_creates_with_one_key_make_one_secret(api):
    user = x.uid("cora")
    key = str(uuid.uuid4())
    n = 8
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def create(i: int) -> None:
        caller = api.ui(user)
        barrier.wait(timeout=30)
        try:
            results[i] = caller.create(secret_value(f"same{i}"), key=key, name="one secret", timeout=30)
        except grpc.RpcError as err:
            results[i] = err

    threads = [threading.Thread(target=create, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [x.describe(r) for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, errors
    assert len({r.secret.secret_id for r in results}) == 1
    assert sum(r.created for r in results) == 1, [r.created for r in results]
    assert [s.secret_id for s in api.ui(user).list().secrets].count(results[0].secret.secret_id) == 1


# ---- feature toggle ---------------------------------------------------------------------------

def test_feature_toggle_off(stack, api):
    inst = stack.spawn("gateway", CAIPE_CREDENTIALS_ENABLED="false")
    try:
        stack.wait_healthy(inst)
        ui = api.ui(x.uid("frank"), addr=inst.addr)
        agent = api.agent(x.uid("frank"), addr=inst.addr)
        expect(lambda: ui.create(secret_value("off")), C.FAILED_PRECONDITION, "feature_disabled")
        expect(lambda: ui.list(), C.FAILED_PRECONDITION, "feature_disabled")
        expect(lambda: ui.get("does-not-matter"), C.FAILED_PRECONDITION, "feature_disabled")
        expect(lambda: agent.retrieve("does-not-matter"), C.FAILED_PRECONDITION, "feature_disabled")
        assert stack.health("gateway", addr=inst.addr) == h.SERVING
        health = ui.call("Admin", "GetHealth", api.pb.gateway.GetHealthRequest())
        assert health.credentials_enabled is False
    finally:
        assert inst.stop() == 0, inst.log_text()[-4000:]


# ---- no value in any log (runs last in this module; covers every value the session's `api`
# sent so far, from every module) -----------------------------------------------------------------

def test_no_secret_value_in_any_log_of_the_session_stack(stack, api):
    assert api.values, "no values were sent"
    forms = {f for v in api.values for f in x.encodings(v)}
    logs = sorted((stack.run_dir / "logs").glob("*.log"))
    assert logs
    for path in logs:
        data = path.read_bytes()
        leaked = [f[:12] for f in forms if f in data]
        assert not leaked, f"{len(leaked)} secret value(s) in {path}, e.g. starting {leaked[0]!r}"


def pages(ui, size: int, **fields) -> list[list]:
    """Every page of a ListSecrets, in order, each a list of secrets."""
    out, token = [], ""
    for _ in range(20):
        reply = ui.list(page=x.pb().common.PageRequest(page_size=size, page_token=token), **fields)
        out.append(list(reply.secrets))
        token = reply.page.next_page_token
        if not token:
            return out
    raise AssertionError("more than 20 pages")


def test_list_pages_are_full_when_filtered(api):
    """Secrets shared with me, or everything I can see narrowed to one owner: the filter applies
    before the page is cut, so every page but the last holds page_size secrets."""
    p = api.pb
    alice, bob = x.uid("alice"), x.uid("bob")
    shared = []
    for _ in range(5):
        sid = api.ui(bob).create(secret_value("shared")).secret.secret_id
        api.ui(bob).share(sid, p.gateway.GRANTEE_TYPE_USER, alice, p.gateway.SHARE_ROLE_USER)
        shared.append(sid)
    # Lists are newest first: alice's own secrets, created last, would fill the first pages
    # if they were filtered out only after the page was cut.
    mine = [api.ui(alice).create(secret_value("mine")).secret.secret_id for _ in range(3)]
    ui = api.ui(alice)
    for fields in ({"scope": p.gateway.LIST_SECRETS_SCOPE_SHARED_WITH_ME},
                   {"scope": p.gateway.LIST_SECRETS_SCOPE_ACCESSIBLE,
                    "owner": p.common.Owner(owner_type=p.common.OWNER_TYPE_USER, owner_id=bob)}):
        got = pages(ui, 2, **fields)
        assert [len(page) for page in got] == [2, 2, 1], (fields, [len(page) for page in got])
        ids = [s.secret_id for page in got for s in page]
        assert sorted(ids) == sorted(shared) and len(set(ids)) == 5
        assert not set(ids) & set(mine)
    everything = [s.secret_id for page in pages(ui, 3) for s in page]
    assert set(mine + shared) <= set(everything)
