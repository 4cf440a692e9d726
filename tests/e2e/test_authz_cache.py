"""The gateway's cache of OpenFGA check answers (docs/AUTHZ_CACHE.md) seen from outside.

Sharing and unsharing through the gateway take effect at once (test_retrieval.py pins that, and
this cache must not change it). Tuples written to OpenFGA directly, not through the gateway (as
`credexctl dev` or another gateway replica does), reach the gateway through its watch of
OpenFGA's changelog: every check that starts 3 * CREDEX_OPENFGA_WATCH_MS or more after such a
write returned sees it. That bound is a guarantee of the design, not a tuning value, so the tests
assert it without a margin: every retrieval that starts after the bound gives the new answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

import credex_api as x

C = grpc.StatusCode
NOT_FOUND = {(C.NOT_FOUND, "not_found")}
DEFAULT_WATCH_MS = 100  # docs/CONFIGURATION.md


def gateway_watch_ms(stack) -> int:
    """CREDEX_OPENFGA_WATCH_MS as the stack's gateway process actually has it."""
    pid = stack.pid("gateway")
    assert pid, "no gateway pid"
    env = dict(e.decode(errors="replace").split("=", 1)
               for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
    return int(env.get("CREDEX_OPENFGA_WATCH_MS", DEFAULT_WATCH_MS))


@pytest.fixture
def bound(stack) -> float:
    """Seconds after a direct OpenFGA write from which every check sees it."""
    return 3 * gateway_watch_ms(stack) / 1000


def denied(caller, sid: str) -> bool:
    try:
        caller.retrieve(sid)
    except grpc.RpcError as e:
        assert (e.code(), x.reason(e)) in NOT_FOUND, x.describe(e)
        return True
    return False


def after_direct_write(api, bound: float, tuples, *, delete: bool, check) -> float:
    """Write (or delete) tuples in OpenFGA directly, then: poll `check` until it holds (returns
    the seconds that took) and, once the bound has passed, require it for three more calls."""
    api.fga_write(tuples, delete=delete)
    t0 = time.monotonic()
    seen = None
    while time.monotonic() < t0 + bound:
        if check():
            seen = time.monotonic() - t0
            break
        time.sleep(0.01)
    time.sleep(max(0.0, t0 + bound - time.monotonic()))
    for _ in range(3):
        assert check(), f"the direct OpenFGA write was not honoured {bound}s after it returned"
    return seen if seen is not None else bound


def test_share_deleted_in_openfga_is_denied_within_the_bound(api, bound):
    """A user share deleted directly in OpenFGA: a retrieval that succeeded a moment before (and
    whose answers are cached) is denied within the bound."""
    api.grant_retriever(x.AGENT)
    owner, bob = x.uid("owen"), x.uid("bob")
    g = api.pb.gateway
    value = f"ghp_e2e_cache_{x.uid('v')}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, bob, g.SHARE_ROLE_USER)
    share = (f"user:{bob}", "user", f"secret_ref:{sid}")
    assert share in api.fga_read(f"secret_ref:{sid}"), "the share is not the tuple this test deletes"
    agent = api.agent(bob)
    for _ in range(3):  # the first fills the cache, the others are answered from it
        assert agent.retrieve(sid).value == value
    took = after_direct_write(api, bound, [share], delete=True, check=lambda: denied(agent, sid))
    print(f"share deletion honoured after {took:.3f}s (bound {bound}s)")
    assert api.agent(owner).retrieve(sid).value == value  # the owner is unaffected


def test_team_membership_removed_in_openfga_is_denied_within_the_bound(api, bound):
    """Team membership changes are changes to every secret shared with the team."""
    api.grant_retriever(x.AGENT)
    owner, team, carol = x.uid("otto"), x.uid("crew"), x.uid("carol")
    g = api.pb.gateway
    value = f"ghp_e2e_cache_{x.uid('v')}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    api.ui(owner).share(sid, g.GRANTEE_TYPE_TEAM, team, g.SHARE_ROLE_USER)
    api.add_team_member(team, carol)
    agent = api.agent(carol)
    for _ in range(3):
        assert agent.retrieve(sid).value == value
    after_direct_write(api, bound, [(f"user:{carol}", "member", f"team:{team}")], delete=True,
                       check=lambda: denied(agent, sid))


def test_share_added_in_openfga_is_seen_within_the_bound(api, bound):
    """The other direction: a cached denial does not outlive a grant written directly."""
    api.grant_retriever(x.AGENT)
    owner, dana = x.uid("olga"), x.uid("dana")
    value = f"ghp_e2e_cache_{x.uid('v')}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    agent = api.agent(dana)
    for _ in range(3):
        assert denied(agent, sid)

    def allowed() -> bool:
        try:
            return agent.retrieve(sid).value == value
        except grpc.RpcError as e:
            assert (e.code(), x.reason(e)) in NOT_FOUND, x.describe(e)
            return False

    after_direct_write(api, bound, [(f"user:{dana}", "user", f"secret_ref:{sid}")], delete=False,
                       check=allowed)


def test_unshare_through_the_gateway_needs_no_wait(api):
    """Repeated: the gateway's own writes flush its cache before they return, so no retrieval
    after an unshare returns is answered from a cached grant, even right after a cached hit."""
    api.grant_retriever(x.AGENT)
    owner, eve = x.uid("oda"), x.uid("eve")
    g = api.pb.gateway
    value = f"ghp_e2e_cache_{x.uid('v')}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    agent = api.agent(eve)
    for _ in range(3):
        api.ui(owner).share(sid, g.GRANTEE_TYPE_USER, eve, g.SHARE_ROLE_USER)
        assert agent.retrieve(sid).value == value
        assert agent.retrieve(sid).value == value
        api.ui(owner).unshare(sid, g.GRANTEE_TYPE_USER, eve)
        assert denied(agent, sid)
