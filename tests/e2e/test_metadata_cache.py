"""Issue 10, deliverable 2: the store's cache of secret metadata, seen from outside with two store
replicas (docs/DOCUMENT_CACHE.md).

Replica A is the session stack's store behind the session gateway; replica B is a second store
process on the same database with its own gateway (`replica`, spawned here), both with the
shipped settings (cache on, bound 300 ms, poll 100 ms). A secret is retrieved through a replica
a few times first, so that its metadata is in that replica's cache and in use when the change
comes. Then:

- a revoke or delete through replica A is refused by replica A at the very next retrieval;
- a revoke through replica A is refused by replica B within the bound;
- a change made directly in the database (status set to revoked, or the metadata document
  deleted, with pymongo on the stack's FerretDB) is refused by both replicas within the bound.

A bound is asserted on the start times of retrievals, measured from the moment the change had
returned: every retrieval that starts BOUND after it must be refused (never a value), however
slowly this test's own calls run on a loaded machine. The database outage (the cache stops
answering) is in test_outages.py, whose stack owns its FerretDB.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

import credex_api as x

C = grpc.StatusCode
BOUND = 0.300  # CREDEX_STORE_METADATA_CACHE_BOUND_MS, the shipped default
REFUSED_REVOKED = (C.FAILED_PRECONDITION, "failed_precondition")


@pytest.fixture(scope="module")
def replica(stack):
    """Replica B: a second store with the default settings and a gateway in front of it. Yields
    the address of its gateway."""
    gateway, store = stack.spawn_pair()
    yield gateway.addr
    codes = stack.stop_pair(gateway, store)
    assert codes == {"gateway": 0, "store": 0}, f"replica exit codes {codes}"
    assert "store.metadata_cache_enabled" in store.log_text(), "replica B ran without its cache"


@pytest.fixture(scope="module")
def db(api):
    client, database = api.mongo()
    yield database
    client.close()


def new_secret(api, tag: str) -> tuple[str, str, bytes]:
    api.grant_retriever(x.AGENT)
    owner = x.uid(f"mc-{tag}")
    value = f"metadata-cache-{tag}-{uuid.uuid4().hex}".encode()
    return owner, api.ui(owner).create(value).secret.secret_id, value


def in_use(api, owner: str, sid: str, value: bytes, *addrs: str | None) -> None:
    """Retrieve through each replica a few times, a poll period apart: its metadata is cached
    and in use (re-read by the watcher) when the change comes."""
    for _ in range(4):
        for addr in addrs:
            assert api.agent(owner, addr=addr).retrieve(sid).value == value
        time.sleep(0.03)


def outcome(api, owner: str, sid: str, value: bytes, addr: str | None):
    """(served, error) of one retrieval; a value other than the secret's fails the test."""
    try:
        reply = api.agent(owner, addr=addr).retrieve(sid, timeout=5)
    except grpc.RpcError as err:
        assert value not in (err.details() or "").encode()
        return False, err
    assert reply.value == value, "a retrieval returned another value"
    return True, None


def last_served_after(api, owner: str, sid: str, value: bytes, addrs: list[str | None], since: float,
                      refused: set) -> dict:
    """Retrieve through every replica in turn until 2 * BOUND after `since` (time.monotonic() at
    the moment the change had returned); returns, per replica, how long after `since` the last
    retrieval that still got the value had started (None: none did). Every refusal must be one
    of `refused` (code, reason)."""
    last: dict = {addr: None for addr in addrs}
    while time.monotonic() - since < 2 * BOUND:
        for addr in addrs:
            started = time.monotonic()
            served, err = outcome(api, owner, sid, value, addr)
            if served:
                last[addr] = started - since
            else:
                assert (err.code(), x.reason(err)) in refused, x.describe(err)
    return last


@pytest.mark.parametrize("change", ["revoke", "delete"])
def test_change_through_a_replica_is_refused_there_at_the_next_call(api, change):
    """After a delete the owner keeps `use` on the tombstone (the gateway keeps the owner and
    platform links), so both refusals are the store's, from the changed metadata."""
    owner, sid, value = new_secret(api, f"own-{change}")
    in_use(api, owner, sid, value, None)
    getattr(api.ui(owner), change)(sid)
    err = outcome(api, owner, sid, value, None)[1]
    assert err is not None, f"replica A served a secret right after its {change}"
    assert (err.code(), x.reason(err)) == REFUSED_REVOKED, x.describe(err)


def test_revoke_through_one_replica_is_refused_by_the_other_within_the_bound(api, replica):
    owner, sid, value = new_secret(api, "other-revoke")
    in_use(api, owner, sid, value, replica)
    api.ui(owner).revoke(sid)  # through replica A
    revoked = time.monotonic()
    last = last_served_after(api, owner, sid, value, [replica], revoked, {REFUSED_REVOKED})
    print(f"revoke through A: last value served by B {last[replica]} s after it (bound {BOUND} s)")
    assert last[replica] is None or last[replica] < BOUND, last


@pytest.mark.parametrize("change", ["status-revoked", "document-deleted"])
def test_direct_database_write_is_refused_by_both_replicas_within_the_bound(api, db, replica, change):
    owner, sid, value = new_secret(api, f"direct-{change}")
    in_use(api, owner, sid, value, None, replica)
    if change == "status-revoked":
        res = db.credential_secret_refs.update_one({"_id": sid}, {"$set": {"status": "revoked"}})
        assert res.modified_count == 1
        refused = {REFUSED_REVOKED}
    else:
        res = db.credential_secret_refs.delete_one({"_id": sid})
        assert res.deleted_count == 1
        refused = {(C.NOT_FOUND, "not_found")}
    written = time.monotonic()
    last = last_served_after(api, owner, sid, value, [None, replica], written, refused)
    print(f"{change} in the database: last value served {last} s after it (bound {BOUND} s)")
    for addr, t in last.items():
        assert t is None or t < BOUND, (addr or "replica A", t)
