"""Issue 13 (quickstart 9): the MCP impersonation example (clients/python/examples/
mcp_impersonation.py) run as a tool server process with the installed Python client, against the
real stack and the generic provider test server, whose userinfo endpoint is the provider API the
`whoami` tool calls (it checks the bearer token).

With USE_IMPERSONATION_TOKENS=true a tool call carries the invoking user's own provider token; a
missing connection, a scope never granted, a connector no longer enabled, a revoked connection and
a denied check each fail at the credential step, and the provider receives no API request. With
the flag off the static path is unchanged: the tool server's secret, retrieved by reference.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import credex_api as x
import credex_harness as h
from credex_connections import World, connect_over_grpc
from credex_pyclient import clean_env, client_python  # noqa: F401  (fixture)

EXAMPLE = h.ROOT / "clients" / "python" / "examples" / "mcp_impersonation.py"
# The tool server reaches the provider test servers by their real names: resolve those to the
# loopback ports they listen on (as CREDEX_OAUTH_TEST_CONNECT_TO does for oauth), then run the
# example unchanged.
LAUNCH = r"""
import json, os, runpy, socket, sys
ports = json.loads(os.environ.pop("E2E_HOST_PORTS"))
real = socket.getaddrinfo
def getaddrinfo(host, port, *a, **k):
    if host in ports:
        return real("127.0.0.1", ports[host], *a, **k)
    return real(host, port, *a, **k)
socket.getaddrinfo = getaddrinfo
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ToolServer:
    """One run of the example with a batch of tool calls: the answers, in order."""

    def __init__(self, api: x.Api, providers, python, gw_addr: str):
        self.api, self.providers, self.python, self.gw_addr = api, providers, python, gw_addr

    def run(self, calls: list[dict], *, impersonation: bool, service: str = x.AGENT, scopes: str = "profile",
            provider: str = "", api_url: str = "", static_ref: str = "") -> list[dict]:
        cert, key = self.api.identity_pair(service)
        g = self.providers.generic
        env = clean_env() | {
            "CREDEX_GATEWAY_ADDR": self.gw_addr, "CREDEX_CA_FILE": str(self.api.stack.pki.ca),
            "CREDEX_CERT_FILE": str(cert), "CREDEX_KEY_FILE": str(key),
            "CREDEX_SERVICE_TOKEN": self.api.tokens.service(service), "CREDEX_SERVER_NAME": "localhost",
            "USE_IMPERSONATION_TOKENS": "true" if impersonation else "false", "PROVIDER_KEY": provider,
            "PROVIDER_SCOPES": scopes, "PROVIDER_API_URL": api_url, "PROVIDER_CA_FILE": str(self.providers.ca_file),
            "STATIC_SECRET_REF": static_ref, "MCP_SERVER_ID": "whoami-tools",
            "E2E_HOST_PORTS": json.dumps({host: g.port for host in g.hosts})}
        stdin = "".join(json.dumps(c) + "\n" for c in calls)
        res = subprocess.run([str(self.python), "-c", LAUNCH, str(EXAMPLE)], input=stdin, capture_output=True,
                             text=True, timeout=120, env=env)
        assert res.returncode == 0, res.stderr
        outs = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(outs) == len(calls), res.stdout
        return outs


@pytest.fixture(scope="module")
def mw(api, providers, stack):
    """Connections world: ann connected the connector of `key`; an exchange-enabled gateway."""
    w = World(api, providers)
    api.grant_exchanger(x.AGENT)
    w.ann = w.alice
    w.connector_id, w.key, w.issuer = w.connector()
    w.conn = connect_over_grpc(w, providers, w.ann, w.key)
    w.gw = stack.spawn("gateway", CREDENTIAL_EXCHANGE_ENABLED="true")
    stack.wait_healthy(w.gw)
    yield w
    assert w.gw.stop() == 0, h.tail(w.gw.log_path)
    api.fga_write([(f"user:{w.admin}", "admin", "platform:credex")], delete=True)


@pytest.fixture
def tools(api, providers, client_python, mw):  # noqa: F811 - the fixture
    return ToolServer(api, providers, client_python, mw.gw.addr)


def whoami(api: x.Api, user: str, service: str = x.AGENT) -> dict:
    return {"tool": "whoami", "arguments": {}, "user_token": api.tokens.on_behalf_of(user, service)}


def userinfo_calls(providers, since: int) -> list:
    return providers.generic.requests(since=since, path_suffix="/userinfo")


def test_impersonation_calls_the_provider_as_the_user(mw, api, providers, tools):
    mark = providers.generic.mark()
    out = tools.run([whoami(api, mw.ann)], impersonation=True, provider=mw.key, api_url=f"{mw.issuer}/userinfo")
    assert out[0]["ok"], out
    assert out[0]["result"]["sub"] == providers.generic.user.id
    calls = userinfo_calls(providers, mark)
    assert len(calls) == 1
    tok = calls[0].headers["authorization"].partition(" ")[2]
    grant = providers.generic.book.check_access(tok)
    assert grant is not None and grant.client_id == f"cid-{mw.key}", "not the user's connection token"


def test_refusals_fail_before_the_tool_call(mw, api, providers, tools):
    """Each case: the credential step refuses, and no request reaches the provider's API."""
    o = api.pb.oauth
    stranger = x.uid("zed")  # in the team, never connected
    api.add_team_member(mw.team, stranger)
    norights = x.uid("rt")
    api.grant_retriever(norights)  # no exchanger grant
    url = f"{mw.issuer}/userinfo"
    mark = providers.generic.mark()
    cases = [
        ("missing connection", dict(calls=[whoami(api, stranger)], provider=mw.key), "not_found"),
        ("missing scope", dict(calls=[whoami(api, mw.ann)], provider=mw.key, scopes="profile admin"),
         "reconsent_required"),
        ("denied check", dict(calls=[whoami(api, mw.ann, norights)], provider=mw.key, service=norights),
         "permission_denied"),
    ]
    for what, kw, reason in cases:
        out = tools.run(kw.pop("calls"), impersonation=True, api_url=url, **kw)
        assert (out[0]["ok"], out[0].get("stage"), out[0].get("reason")) == (False, "credentials", reason), \
            (what, out)
    # a connector disabled by its admin
    admin = api.ui(mw.admin)
    admin.call("Connectors", "DisableConnector", o.DisableConnectorRequest(connector_id=mw.connector_id), timeout=30)
    try:
        out = tools.run([whoami(api, mw.ann)], impersonation=True, provider=mw.key, api_url=url)
        assert (out[0]["ok"], out[0].get("stage")) == (False, "credentials"), out
        assert out[0]["reason"] in ("permission_denied", "failed_precondition"), out
    finally:
        admin.call("Connectors", "EnableConnector", o.EnableConnectorRequest(
            connector_id=mw.connector_id, team_ids=[mw.team]), timeout=30)
    assert userinfo_calls(providers, mark) == [], "a refused tool call reached the provider"
    # a revoked connection (the user disconnected it)
    bob_conn = connect_over_grpc(mw, providers, mw.bob, mw.key)
    mark = providers.generic.mark()  # oauth itself read the account at connect
    api.ui(mw.bob).call("Connections", "Disconnect", o.DisconnectRequest(connection_id=bob_conn.connection_id),
                        timeout=30)
    out = tools.run([whoami(api, mw.bob)], impersonation=True, provider=mw.key, api_url=url)
    assert (out[0]["ok"], out[0].get("stage")) == (False, "credentials"), out
    assert out[0]["reason"] in ("not_found", "failed_precondition"), out
    assert userinfo_calls(providers, mark) == [], "a refused tool call reached the provider"


def test_flag_off_keeps_the_static_credential(mw, api, providers, tools):
    """USE_IMPERSONATION_TOKENS=false: the tool server's secret (a token of the provider, stored
    by reference) is the bearer, whatever connection the user has."""
    g = providers.generic
    static = g.issue_tokens(f"cid-{mw.key}", "profile")["access_token"]
    sid = api.ui(mw.ann).create(static, allowed_uses=["http_authorization_header"]).secret.secret_id
    api.grant_retriever(x.AGENT)
    mark = g.mark()
    out = tools.run([whoami(api, mw.ann)], impersonation=False, api_url=f"{mw.issuer}/userinfo", static_ref=sid)
    assert out[0]["ok"], out
    calls = userinfo_calls(providers, mark)
    assert [c.headers["authorization"] for c in calls] == [f"Bearer {static}"]
    # and with no secret the flag-off path is refused at the credential step, as before
    out = tools.run([whoami(api, mw.ann)], impersonation=False, api_url=f"{mw.issuer}/userinfo",
                    static_ref="sec_NOPE0000000000000000000000")
    assert (out[0]["ok"], out[0]["reason"]) == (False, "not_found"), out

