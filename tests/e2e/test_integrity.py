"""Issue 4, deliverable 6: tampered or swapped ciphertext gives integrity_error, never bytes.

A MongoDB client (pymongo on the stack's FerretDB) changes one stored field of a payload document
at a time, or swaps whole envelopes between two secrets and between two versions of one secret;
the agent runtime then retrieves and must get integrity_error.

Retrieval goes through a private gateway + store pair (conftest `nocache`) with the data-key
cache and the payload cache disabled (CREDEX_DEK_CACHE_MAX_ENTRIES=0,
CREDEX_PAYLOAD_CACHE_MAX_ENTRIES=0), so that every retrieval reads the stored payload, unwraps the
stored wrapped key and decrypts the stored ciphertext: a cached key or payload (authenticated when
it was cached) would serve the original value and hide the tampering until it leaves the cache.
Secrets are created through the session gateway (same database).

With the payload cache ON (`cached_pair`, the last test), a tamper after a cached retrieval is
reported once the entry expires (CREDEX_PAYLOAD_CACHE_TTL_MS): until then the store serves the
copy it authenticated before the tampering, never the tampered bytes. The store's retry-once rule
(evict and read the database again when anything fails after a cache hit) only applies when the
cached copy itself fails, e.g. after a CMK rewrap retired its wrapped key; that path is pinned by
the store's unit tests (tests/unit/store, test_payload_cache_retry), since keywrap cannot be made
to retire a key from here.

Field names are found in the stored document (the envelope format is store's), by name.

The secret's metadata document is outside input too: a field altered in the database (owner
type, kind, status, allowed uses, current version) must answer integrity_error for GetSecret,
Retrieve and a list that meets the row, never unavailable (which would make tampering look like
an outage) and never an answer; each such call leaves exactly one audit event, with reason
integrity_error. These go through the session gateway, whose store reads the metadata live for
GetSecret and lists, and for Retrieve through its metadata cache, which honours a change made in
the database within its bound (docs/DOCUMENT_CACHE.md): the Retrieve is checked once the bound
has passed since the tampering.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from bson import Binary

import credex_api as x

C = grpc.StatusCode
# Fields of a payload document that identify it rather than form its envelope.
IDENTITY_FIELDS = {"_id", "payload_id", "secret_id", "version", "state", "status", "created_at",
                   "created_at_ms", "created_by", "destroyed_at", "destroyed_at_ms", "updated_at",
                   "updated_at_ms"}


@pytest.fixture(scope="module")
def pair(nocache):
    """Address of the private gateway whose store has no data-key cache (conftest `nocache`)."""
    return nocache[0].addr


@pytest.fixture(scope="module")
def db(stack, api):
    client, database = api.mongo()
    yield database
    client.close()


def new_secret(api, owner: str, tag: str) -> tuple[str, bytes]:
    value = f"integrity-{tag}-{uuid.uuid4().hex}".encode()
    return api.ui(owner).create(value).secret.secret_id, value


def payload(db, sid: str, version: int = 1) -> dict:
    doc = db.credential_encrypted_payloads.find_one({"secret_id": sid, "version": version})
    assert doc is not None, f"no payload document for {sid} v{version}: " \
                            f"{list(db.credential_encrypted_payloads.find({'secret_id': sid}))}"
    return doc


def is_wrapped(path: str) -> bool:
    p = path.lower()
    return "wrap" in p or "encrypted_data_key" in p or "edk" in p.split(".") or "dek" in p


def find_path(doc: dict, target: str) -> tuple[str, bool]:
    """(dotted path, is_suffix) of the field to tamper for a target; is_suffix means "the GCM tag
    is the last 16 bytes of that field" (no separate tag field)."""
    flat = x.flatten(doc)
    last = {p: p.rsplit(".", 1)[-1].lower() for p in flat}

    def pick(pred) -> str | None:
        hits = [p for p in flat if pred(p, last[p])]
        return sorted(hits, key=len)[0] if hits else None

    found = None
    if target == "ciphertext":
        found = pick(lambda p, n: not is_wrapped(p) and n in ("ciphertext", "ct", "encrypted_value", "data",
                                                                "cipher_text", "encrypted"))
    elif target == "nonce":
        found = pick(lambda p, n: n in ("nonce", "iv", "gcm_nonce"))
    elif target == "tag":
        found = pick(lambda p, n: n in ("tag", "auth_tag", "gcm_tag", "mac"))
        if found is None:
            ct = find_path(doc, "ciphertext")[0]
            return ct, True
    elif target == "wrapped_key":
        found = pick(lambda p, n: is_wrapped(p) and isinstance(flat[p], (bytes, Binary, str))
                     and n not in ("key_id", "key_version", "key_provider", "provider", "algorithm")
                     and ("ciphertext" in n or "wrap" in n or n in ("edk", "encrypted_data_key", "blob")))
    elif target == "key_id":
        found = pick(lambda p, n: n in ("key_id", "cmk_id", "kek_id"))
    elif target in ("version", "secret_id"):
        found = target if target in doc else None
    assert found, f"no {target} field in the payload document; fields: {sorted(flat)}"
    return found, False


def get_path(doc: dict, path: str):
    for part in path.split("."):
        doc = doc[part]
    return doc


def tampered(value, suffix: bool = False):
    """The same value with one bit (or character) changed."""
    if isinstance(value, (bytes, Binary)):
        raw = bytearray(bytes(value))
        assert raw, "empty field"
        i = len(raw) - 1 if suffix else len(raw) // 2
        raw[i] ^= 0x01
        return Binary(bytes(raw), value.subtype) if isinstance(value, Binary) else bytes(raw)
    if isinstance(value, str):
        assert value, "empty field"
        i = len(value) - 1 if suffix else len(value) // 2
        # Stay inside base64/hex alphabets where possible; skip '=' padding at the end.
        while suffix and i > 0 and value[i] == "=":
            i -= 1
        if suffix:
            i = max(0, i - 2)  # the last significant base64 char carries padding bits only partly
        swap = {"A": "B", "B": "A", "0": "1", "1": "0", "a": "b", "b": "a"}
        ch = swap.get(value[i], "A" if value[i] != "A" else "B")
        return value[:i] + ch + value[i + 1:]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 100
    raise AssertionError(f"cannot tamper a {type(value).__name__}")


def expect_integrity_error(api, addr: str, owner: str, sid: str, value: bytes) -> None:
    with pytest.raises(grpc.RpcError) as info:
        reply = api.agent(owner, addr=addr).retrieve(sid)
        assert value not in reply.SerializeToString(), "tampered data gave the original secret"
    err = info.value
    assert (err.code(), x.reason(err)) == (C.DATA_LOSS, "integrity_error"), x.describe(err)
    assert value not in (err.details() or "").encode()


@pytest.mark.parametrize("target", ["ciphertext", "nonce", "tag", "wrapped_key", "key_id", "version",
                                    "secret_id"])
def test_tampered_payload_field_is_an_integrity_error(api, db, pair, target):
    api.grant_retriever(x.AGENT)
    owner = x.uid("tina")
    sid, value = new_secret(api, owner, target)
    # Untampered, the private pair retrieves it (so the failure below is the tampering's).
    assert api.agent(owner, addr=pair).retrieve(sid).value == value
    doc = payload(db, sid)
    path, suffix = find_path(doc, target)
    if target == "secret_id":
        new = f"tampered-{uuid.uuid4().hex}"
    else:
        new = tampered(get_path(doc, path), suffix)
    res = db.credential_encrypted_payloads.update_one({"_id": doc["_id"]}, {"$set": {path: new}})
    assert res.modified_count == 1
    expect_integrity_error(api, pair, owner, sid, value)


def test_tampered_owner_in_the_metadata_is_an_integrity_error(api, db, pair):
    """The associated data binds the owner: moving a secret to another owner in the database
    must not make it decrypt."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("olga")
    sid, value = new_secret(api, owner, "owner")
    assert api.agent(owner, addr=pair).retrieve(sid).value == value
    ref = db.credential_secret_refs.find_one({"secret_id": sid})
    assert ref is not None and ref.get("owner_id") == owner, ref
    db.credential_secret_refs.update_one({"_id": ref["_id"]}, {"$set": {"owner_id": x.uid("olga-twin")}})
    expect_integrity_error(api, pair, owner, sid, value)


def test_metadata_pointing_at_another_secrets_payload_is_an_integrity_error(api, db, pair):
    """The secret's metadata is made to point at another secret's (valid) payload: the associated
    data binds the secret id, so it must not decrypt as this secret."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("pia")
    sid_a, value_a = new_secret(api, owner, "ptr-a")
    sid_b, value_b = new_secret(api, owner, "ptr-b")
    ref_a = db.credential_secret_refs.find_one({"secret_id": sid_a})
    pointer = [k for k in ref_a if "payload" in k.lower()]
    assert pointer, f"no payload pointer in the metadata document: {sorted(ref_a)}"
    payload_b = payload(db, sid_b)
    db.credential_secret_refs.update_one({"_id": ref_a["_id"]}, {"$set": {pointer[0]: payload_b["payload_id"]}})
    expect_integrity_error(api, pair, owner, sid_a, value_b)
    assert api.agent(owner, addr=pair).retrieve(sid_b).value == value_b


def swap_envelopes(db, a: dict, b: dict) -> list[str]:
    fields = sorted((set(a) | set(b)) - IDENTITY_FIELDS)
    assert fields, f"nothing to swap in {sorted(a)}"
    db.credential_encrypted_payloads.update_one({"_id": a["_id"]}, {"$set": {f: b[f] for f in fields if f in b}})
    db.credential_encrypted_payloads.update_one({"_id": b["_id"]}, {"$set": {f: a[f] for f in fields if f in a}})
    return fields


def test_envelopes_swapped_between_two_secrets(api, db, pair):
    api.grant_retriever(x.AGENT)
    owner = x.uid("sam")
    sid_a, value_a = new_secret(api, owner, "swap-a")
    sid_b, value_b = new_secret(api, owner, "swap-b")
    fields = swap_envelopes(db, payload(db, sid_a), payload(db, sid_b))
    assert any("cipher" in f or "wrap" in f for f in fields), fields
    expect_integrity_error(api, pair, owner, sid_a, value_b)
    expect_integrity_error(api, pair, owner, sid_b, value_a)


def test_envelopes_swapped_between_two_versions(api, db, pair):
    api.grant_retriever(x.AGENT)
    owner = x.uid("vera")
    sid, v1 = new_secret(api, owner, "swap-v1")
    v2 = f"integrity-swap-v2-{uuid.uuid4().hex}".encode()
    api.ui(owner).rotate(sid, v2, expected_version=1)
    assert api.agent(owner, addr=pair).retrieve(sid).value == v2
    swap_envelopes(db, payload(db, sid, 1), payload(db, sid, 2))
    expect_integrity_error(api, pair, owner, sid, v1)


def test_integrity_errors_are_audited_and_service_goes_on(api, db, pair):
    """After integrity errors, an untouched secret still retrieves through the same pair."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("ursula")
    sid, value = new_secret(api, owner, "fine")
    assert api.agent(owner, addr=pair).retrieve(sid).value == value


CACHE_TTL_MS = 1500
METADATA_BOUND = 0.300  # CREDEX_STORE_METADATA_CACHE_BOUND_MS of the session stack (the default)


@pytest.fixture(scope="module")
def cached_pair(stack):
    """A private gateway + store pair with the payload cache ON (short TTL) and the data-key cache
    off: the address of its gateway."""
    gateway, store = stack.spawn_pair(CREDEX_DEK_CACHE_MAX_ENTRIES="0", CREDEX_DEK_CACHE_TTL_MS="0",
                                      CREDEX_PAYLOAD_CACHE_MAX_ENTRIES="64",
                                      CREDEX_PAYLOAD_CACHE_TTL_MS=str(CACHE_TTL_MS))
    yield gateway.addr
    codes = stack.stop_pair(gateway, store)
    assert codes == {"gateway": 0, "store": 0}, f"cached pair exit codes {codes}"


@pytest.mark.parametrize("target", ["ciphertext", "wrapped_key"])
def test_tamper_after_a_cached_retrieval_is_detected_when_the_entry_expires(api, db, cached_pair,
                                                                             target):
    api.grant_retriever(x.AGENT)
    owner = x.uid("carla")
    sid, value = new_secret(api, owner, f"cached-{target}")
    assert api.agent(owner, addr=cached_pair).retrieve(sid).value == value  # now cached
    doc = payload(db, sid)
    path, suffix = find_path(doc, target)
    res = db.credential_encrypted_payloads.update_one(
        {"_id": doc["_id"]}, {"$set": {path: tampered(get_path(doc, path), suffix)}})
    assert res.modified_count == 1
    tampered_at = time.monotonic()
    # Within the TTL: the authenticated copy or integrity_error, never anything else.
    try:
        assert api.agent(owner, addr=cached_pair).retrieve(sid).value == value
    except grpc.RpcError as err:
        assert (err.code(), x.reason(err)) == (C.DATA_LOSS, "integrity_error"), x.describe(err)
    # Once the entry has expired the store reads the tampered document again.
    time.sleep(max(0.0, CACHE_TTL_MS / 1000 + 0.3 - (time.monotonic() - tampered_at)))
    expect_integrity_error(api, cached_pair, owner, sid, value)


# A metadata field altered in the database, and whether the owner's list still selects the row
# (its filter names the owner type, the gateway's kinds and the live statuses).
METADATA_TAMPERS = [
    ("owner_type", "robot", False),
    ("kind", "ssh_key", False),
    ("status", "paused", False),
    ("allowed_uses", ["Not A Use"], True),
    ("allowed_uses", [f"use{i}" for i in range(17)], True),
    ("current_version", 0, True),
    ("current_version", "1", True),
]


def audit_events(db, correlation_id: str) -> list[dict]:
    """The audit events of one call (store writes them before it answers)."""
    return list(db.credential_audit_events.find({"correlation_id": correlation_id}))


def expect_audited_integrity_error(db, call, event_type: str) -> None:
    cid = x.cid()
    with pytest.raises(grpc.RpcError) as info:
        call(cid)
    err = info.value
    assert (err.code(), x.reason(err)) == (C.DATA_LOSS, "integrity_error"), x.describe(err)
    events = audit_events(db, cid)
    assert [(e["event_type"], e["outcome"], e["reason"]) for e in events] == \
        [(event_type, "failed", "integrity_error")], events


@pytest.mark.parametrize("field,value,listed", METADATA_TAMPERS,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(METADATA_TAMPERS)])
def test_tampered_metadata_is_an_audited_integrity_error(api, db, field, value, listed):
    api.grant_retriever(x.AGENT)
    owner = x.uid("mona")
    sid, secret = new_secret(api, owner, f"meta-{field}")
    assert api.agent(owner).retrieve(sid).value == secret
    ref = db.credential_secret_refs.find_one({"secret_id": sid})
    assert ref is not None and field in ref, ref
    db.credential_secret_refs.update_one({"_id": ref["_id"]}, {"$set": {field: value}})
    tampered_at = time.monotonic()
    try:
        expect_audited_integrity_error(db, lambda cid: api.ui(owner).get(sid, cid=cid), "secret.read")
        time.sleep(max(0.0, METADATA_BOUND - (time.monotonic() - tampered_at)))
        expect_audited_integrity_error(db, lambda cid: api.agent(owner).retrieve(sid, cid=cid),
                                       "secret.retrieved")
        if listed:
            expect_audited_integrity_error(db, lambda cid: api.ui(owner).list(cid=cid), "secret.listed")
    finally:
        db.credential_secret_refs.replace_one({"_id": ref["_id"]}, ref)
    assert api.agent(owner).retrieve(sid).value == secret
    assert [s.secret_id for s in api.ui(owner).list().secrets] == [sid]
