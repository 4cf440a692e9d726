"""Issue 13, deliverable 4: the Python client of agent runtimes (clients/python), against the
real stack.

The package is installed the way a runtime installs it (credex_pyclient) and runs in its own
interpreter, one process per call. Exchange and Inject: test_exchange.py.
"""

from __future__ import annotations

import uuid

import pytest

import credex_api as x
import credex_harness as h

from credex_pyclient import client_python, runtime  # noqa: F401  (fixtures)


RESOURCE = {"resource_type": "mcp_server", "resource_id": "mcp-pyclient"}


@pytest.fixture
def owned(api):
    """(owner, secret id, value): a fresh user's secret; agent-runtime is an allowed retriever."""
    api.grant_retriever(x.AGENT)
    owner = x.uid("pia")
    value = f"sk_pyclient_{uuid.uuid4().hex}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    return owner, sid, value


def assert_hidden(value: bytes, *texts: str) -> None:
    for text in texts:
        for form in x.encodings(value) + [repr(value).encode()]:
            assert form.decode(errors="replace") not in text, "the secret value leaked into a repr or message"


def test_retrieve_returns_the_value_and_hides_it(api, runtime, owned):
    owner, sid, value = owned
    corr = x.cid()
    out = runtime("retrieve", sid, user_token=api.tokens.on_behalf_of(owner, x.AGENT), intended_use=x.DEFAULT_USE,
                  resource_context=RESOURCE, correlation_id=corr)
    assert out["ok"], out
    assert (out["type"], bytes.fromhex(out["value"]), out["secret_id"], out["version"], out["kind"]) == \
        ("Secret", value, sid, 1, "api_key")
    assert out["correlation_id"] == corr
    assert "value=<hidden>" in out["repr"] and sid in out["repr"]
    assert_hidden(value, out["repr"], out["str"])
    # The correlation id reached the gateway (and so its audit record).
    assert x.log_lines_with(api.stack.log_path("gateway"), corr)


@pytest.mark.parametrize("who", ["stranger", "unlisted-service"])
def test_denied_retrieve_raises_with_the_reason(api, runtime, owned, who):
    owner, sid, value = owned
    corr = x.cid()
    if who == "stranger":  # a user without read_metadata: the not_found of a missing secret
        out = runtime("retrieve", sid, user_token=api.tokens.on_behalf_of(x.uid("sam"), x.AGENT),
                      intended_use=x.DEFAULT_USE, resource_context=RESOURCE, correlation_id=corr)
        want = ("NotFound", "not_found", "NOT_FOUND")
    else:  # the owner's token through a service without the retriever grant
        out = runtime("retrieve", sid, peer=x.UNLISTED, user_token=api.tokens.on_behalf_of(owner, x.UNLISTED),
                      intended_use=x.DEFAULT_USE, resource_context=RESOURCE, correlation_id=corr)
        want = ("PermissionDenied", "permission_denied", "PERMISSION_DENIED")
    assert not out["ok"], out
    assert (out["type"], out["reason"], out["code"]) == want, out
    assert out["from_server"] and out["correlation_id"] == corr and "CredexError" in out["classes"]
    assert_hidden(value, out["str"], out["repr"])


def test_outage_raises_unavailable(api, runtime, owned):
    owner, sid, _ = owned
    dead = f"127.0.0.1:{h.free_ports(1)[0]}"
    out = runtime("retrieve", sid, addr=dead, user_token=api.tokens.on_behalf_of(owner, x.AGENT),
                  intended_use=x.DEFAULT_USE, resource_context=RESOURCE, timeout=5)
    assert not out["ok"], out
    assert (out["type"], out["reason"], out["code"], out["from_server"]) == \
        ("Unavailable", "unavailable", "UNAVAILABLE", False), out
