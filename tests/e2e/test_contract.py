"""Issue 8, finding 2: one input contract for gateway, store and credexctl (common/contract).

Before, the rules were written three times and disagreed: the gateway counted characters where
store counted bytes, control characters, duplicate allowed uses and a resource id with a space
passed the gateway and failed in store (after two OpenFGA checks), credexctl had a third copy,
non-UTF-8 bytes were stored, a NUL silently truncated a display name, and a revoke reason with
terminal escapes was written verbatim into the audit trail. These tests hold the three to one
rule set, through the real processes: what one accepts the others accept, what one refuses the
others refuse, with the same rule in the message and never the offending value.
"""

from __future__ import annotations

import uuid

import grpc
import pytest

import credex_api as x
from test_credexctl import ctl

C = grpc.StatusCode
E_ACUTE = "\u00e9"  # two bytes in UTF-8, one character


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_limits_count_characters_in_gateway_store_and_cli(api, stack):
    """128 two-byte characters (256 bytes) are a valid display name everywhere; 129 nowhere."""
    user = x.uid("chars")
    ok_name, long_name = E_ACUTE * 128, E_ACUTE * 129
    meta = api.ui(user).create(f"sk-{uuid.uuid4().hex}", name=ok_name).secret
    assert meta.display_name == ok_name  # through the gateway and store, stored and read back
    err = rpc_error(lambda: api.ui(user).create(f"sk-{uuid.uuid4().hex}", name=long_name))
    assert (err.code(), x.reason(err)) == (C.INVALID_ARGUMENT, "invalid_argument"), x.describe(err)
    assert "display_name: must be 1..128 characters" in err.details()
    res = ctl(stack, "secret", "create", "--user", user, "--name", ok_name, "--kind", "api_key",
              "--value-stdin", "--quiet", stdin=b"sk-cli-" + uuid.uuid4().hex.encode())
    assert res.returncode == 0, res.stderr
    res = ctl(stack, "secret", "create", "--user", user, "--name", long_name, "--kind", "api_key",
              "--value-stdin", "--quiet", stdin=b"sk-cli-x")
    assert res.returncode == 2, res.stderr
    assert b"--name: must be 1..128 characters" in res.stderr, res.stderr


def test_credexctl_refuses_what_the_gateway_refuses_without_echoing_it(stack):
    user = x.uid("cli-contract")
    canary = "CANARY" + uuid.uuid4().hex[:8]
    cases = [
        (["--name", canary + "\x1b[31m"], b"--name"),
        (["--name", "ok", "--provider", canary + " x"], b"--provider"),
        (["--name", "ok", "--allowed-use", canary.upper()], b"--allowed-use"),
        (["--name", "ok", "--description", canary + "\r"], b"--description"),
    ]
    for extra, option in cases:
        res = ctl(stack, "secret", "create", "--user", user, "--kind", "api_key", *extra,
                  "--value-stdin", stdin=b"sk-never-sent")
        assert res.returncode == 2, (extra, res.stderr)
        assert option in res.stderr, res.stderr
        assert canary.encode() not in res.stderr and canary.upper().encode() not in res.stderr


def test_credexctl_checks_the_whole_request_before_sending(stack, api):
    """Rules across entries (here: allowed uses must not repeat) are checked on the request
    itself, the same check the gateway makes, before anything is sent: no audit event."""
    user = x.uid("cli-dup")
    res = ctl(stack, "secret", "create", "--user", user, "--name", "dup", "--kind", "api_key",
              "--allowed-use", "mcp_server_env", "--allowed-use", "mcp_server_env", "--value-stdin",
              stdin=b"sk-cli-dup")
    assert res.returncode != 0, res.stderr
    assert b"invalid_argument: request: allowed_uses[1]: repeats an earlier entry" in res.stderr
    client, db = api.mongo()
    with client:
        assert db.credential_audit_events.count_documents({"subject_user_id": user}) == 0


@pytest.mark.parametrize("case", ["resource-with-space", "duplicate-uses", "control-characters"])
def test_gateway_refuses_before_asking_openfga(api, stack, case):
    """What store would refuse, the gateway refuses first (the contract comes before OpenFGA):
    the only call that reaches store is the denial's audit record."""
    owner = x.uid("early")
    api.grant_retriever(x.AGENT)
    sid = api.ui(owner).create(f"sk-{uuid.uuid4().hex}").secret.secret_id
    cid = x.cid()
    if case == "resource-with-space":
        call = lambda: api.agent(owner).retrieve(sid, resource=("mcp_server", "my server"), cid=cid)
    elif case == "duplicate-uses":
        call = lambda: api.ui(owner).create("v", allowed_uses=["a_b", "a_b"], cid=cid)
    else:
        call = lambda: api.ui(owner).revoke(sid, "gone\x1b]0;owned\x07", cid=cid)
    err = rpc_error(call)
    assert (err.code(), x.reason(err)) == (C.INVALID_ARGUMENT, "invalid_argument"), x.describe(err)
    # Nothing reached store but the audit append: its access log has no call of this id but one.
    lines = x.log_lines_with(stack.log_path("store"), cid)
    methods = [line.get("method", "") for line in lines if line.get("event") == "rpc.done"]
    assert methods == ["/credex.v1.CredentialStore/AppendAuditEvent"], methods


def test_revoke_reason_stays_out_of_the_audit_trail_when_invalid(api):
    owner = x.uid("reason")
    sid = api.ui(owner).create(f"sk-{uuid.uuid4().hex}").secret.secret_id
    note = "rotated after \x1b[2Jincident"
    err = rpc_error(lambda: api.ui(owner).revoke(sid, note))
    assert x.reason(err) == "invalid_argument"
    # A valid note is kept as the attribute `note`.
    api.ui(owner).revoke(sid, "rotated after the incident")
    client, db = api.mongo()
    with client:
        events = list(db.credential_audit_events.find({"resource_id": sid}))
    for ev in events:
        assert "\x1b" not in repr(ev) and "2Jincident" not in repr(ev), ev
    notes = [e["attributes"].get("note") for e in events
             if e["event_type"] == "secret.revoked" and e["outcome"] == "success"]
    assert notes == ["rotated after the incident"]
