"""Issue 11: connector URLs cannot be turned against the platform, seen from outside. A platform
admin talks to the public gateway (gRPC); oauth validates and calls the provider test servers
(tests/e2e/providers) over real TLS, reached through CREDEX_OAUTH_TEST_CONNECT_TO.

- CreateConnector refuses URLs that are http, carry userinfo, or name loopback, private,
  link-local (cloud metadata), CGNAT, unique-local, multicast, unspecified or reserved
  addresses in any notation (decimal, octal, hex, short forms, IPv4-mapped IPv6), localhost
  and *.localhost: ssrf_blocked (invalid_argument where the URL cannot be read at all), and
  nothing is stored. Every URL field is screened, and a self-managed GitLab base URL too.
- Names that resolve to loopback are refused (at creation, or at the latest when TestConnector
  resolves them): the names /etc/hosts maps to loopback here.
  (A DNS answer that changes between check and connect, the rebinding case, needs a resolver
  the test controls: common/http's unit tests pin it through its resolver hook.)
- A custom OIDC connector whose discovery document names another issuer is refused, and so is
  one whose discovery names a token endpoint on a metadata address.
- TestConnector of a connector whose token endpoint answers with a redirect to loopback does
  not follow it: the canary listener sees no connection.
- Oversized and slow (stalled or trickling) answers end as unavailable, within
  CREDEX_OAUTH_HTTP_TIMEOUT_MS plus a margin.
- Positive controls: the same connectors on a well-behaved issuer are created and pass
  TestConnector, and no request that TestConnector makes carries the client secret.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from pathlib import Path

import grpc
import pytest

import credex_api as x
from providers import WRONG_ISSUER_HOST, Fault

C = grpc.StatusCode
BLOCKED = {"ssrf_blocked"}
BLOCKED_OR_UNREADABLE = {"ssrf_blocked", "invalid_argument"}
# What a refused discovery may answer: the document is wrong (invalid_argument,
# failed_precondition), names a forbidden URL (ssrf_blocked) or cannot be had (unavailable).
DISCOVERY_REFUSED = {"invalid_argument", "failed_precondition", "ssrf_blocked", "unavailable"}
TIME_MARGIN_S = 5.0


# ---- fixtures and helpers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin(api, stack):
    """A platform admin's caller (admin on platform:credex)."""
    user = x.uid("ssrfadm")
    api.fga_write([(f"user:{user}", "admin", "platform:credex")])
    return api.ui(user)


@pytest.fixture(autouse=True)
def _canary_untouched(providers):
    """No test here may make credex connect to the canary (a loopback listener outside the
    connect-to mapping)."""
    before = providers.canary.connections
    yield
    time.sleep(0.2)  # a connection accepted just now is counted by the canary's own thread
    assert providers.canary.connections == before, "credex connected to a loopback canary"


def slug(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"[:32]


def redirect_uri(key: str) -> str:
    return f"https://credex.example.test/api/credentials/oauth/{key}/callback"


def connector(api, key: str, ctype, endpoints: dict, *, scopes=("openid",), mapping=("sub", "name"),
              client_id: str | None = None):
    o = api.pb.oauth
    return o.Connector(provider_key=key, type=ctype, display_name=f"e2e {key}", client_id=client_id or f"cid-{key}",
                       endpoints=o.ConnectorEndpoints(**endpoints), redirect_uri=redirect_uri(key),
                       scopes=list(scopes),
                       account_mapping=o.AccountMapping(account_id_field=mapping[0], account_name_field=mapping[1]))


def oauth2(api, key: str, base: str, **endpoints):
    """A CUSTOM_OAUTH2 connector whose endpoints are under `base`, some replaced."""
    eps = {"authorization_url": f"{base}/authorize", "token_url": f"{base}/token",
           "userinfo_url": f"{base}/userinfo"} | endpoints
    return connector(api, key, api.pb.oauth.CONNECTOR_TYPE_CUSTOM_OAUTH2, eps, scopes=("profile",))


def oidc(api, key: str, issuer: str):
    return connector(api, key, api.pb.oauth.CONNECTOR_TYPE_CUSTOM_OIDC, {"issuer_url": issuer})


def secret() -> bytes:
    return f"cs-e2e-ssrf-{uuid.uuid4().hex}".encode()


def create(api, admin, conn, client_secret: bytes):
    return admin.call("Connectors", "CreateConnector",
                      api.pb.oauth.CreateConnectorRequest(connector=conn, client_secret=client_secret), cid=x.cid())


def refused(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def assert_nothing_stored(api, admin, key: str) -> None:
    listed = admin.call("Connectors", "ListConnectors", api.pb.oauth.ListConnectorsRequest(include_disabled=True))
    assert key not in [c.provider_key for c in listed.connectors]
    client, db = api.mongo()
    try:
        leftovers = [d for d in db["oauth_connectors"].find({}) if key in str(d)]
    finally:
        client.close()
    assert not leftovers, f"a refused connector left {len(leftovers)} document(s)"


def expect_create_refused(api, admin, conn, reasons: set[str]) -> str:
    err = refused(lambda: create(api, admin, conn, secret()))
    why = x.reason(err)
    assert why in reasons, x.describe(err)
    assert err.code() in (C.INVALID_ARGUMENT, C.FAILED_PRECONDITION, C.UNAVAILABLE), x.describe(err)
    assert_nothing_stored(api, admin, conn.provider_key)
    return why


def run_test_connector(api, admin, connector_id: str, timeout: float = 40):
    """TestConnector's outcome: ("ok", checks) when every check passed, ("failed", [(name,
    reason)]) for the checks that did not, or ("rpc", reason) when the call itself failed."""
    try:
        reply = admin.call("Connectors", "TestConnector",
                           api.pb.oauth.TestConnectorRequest(connector_id=connector_id), timeout=timeout)
    except grpc.RpcError as err:
        return "rpc", x.reason(err)
    failed = [(c.name, c.reason) for c in reply.checks if not c.passed]
    assert reply.ok == (not failed), reply
    assert reply.tested_at_ms > 0
    return ("ok", [c.name for c in reply.checks]) if reply.ok else ("failed", failed)


def assert_test_fails(outcome, reasons: set[str], why: str = "") -> None:
    kind, detail = outcome
    if kind == "rpc":
        assert detail in reasons, outcome
    else:
        assert kind == "failed", f"TestConnector passed {why}: {outcome}"
        assert any(reason in reasons for _, reason in detail), outcome


def refused_at_create_or_test(api, admin, conn, reasons: set[str]) -> str:
    """Refused at creation with nothing stored, or, for a rule that can only apply when credex
    calls out (resolution, discovery), created but failing TestConnector; which of the two."""
    try:
        made = create(api, admin, conn, secret())
    except grpc.RpcError as err:
        assert x.reason(err) in reasons, x.describe(err)
        assert_nothing_stored(api, admin, conn.provider_key)
        return "create"
    assert_test_fails(run_test_connector(api, admin, made.connector_id), reasons)
    return "test"


def no_secret_sent(requests, value: bytes) -> None:
    for r in requests:
        assert not r.contains(value), f"the client secret was sent in {r.method} {r.path}"


def http_timeout_s(stack) -> float:
    return int(stack.env.get("CREDEX_OAUTH_HTTP_TIMEOUT_MS", "10000")) / 1000


# ---- the URL matrix at configuration time -------------------------------------------------------

def url_cases(canary: int) -> list[tuple[str, str, set[str]]]:
    """(label, URL, accepted reasons). Literal forms a strict URL reader may call unreadable
    (numeric shorthand, zone ids) may be invalid_argument; everything else is ssrf_blocked."""
    p = f":{canary}"
    b, bu = BLOCKED, BLOCKED_OR_UNREADABLE
    return [
        ("http", "http://idp.credex.test/token", b),
        ("userinfo", "https://user:pw@idp.credex.test/token", bu),
        ("userinfo-name-only", "https://user@idp.credex.test/token", bu),
        ("loopback", f"https://127.0.0.1{p}/token", b),
        ("loopback-other", "https://127.5.6.7/token", b),
        ("loopback-short", f"https://127.1{p}/token", bu),
        ("loopback-decimal", f"https://2130706433{p}/token", bu),
        ("loopback-hex", f"https://0x7f000001{p}/token", bu),
        ("loopback-hex-dotted", f"https://0x7f.0x0.0x0.0x1{p}/token", bu),
        ("loopback-octal", f"https://0177.0.0.1{p}/token", bu),
        ("loopback-octal-whole", f"https://017700000001{p}/token", bu),
        ("loopback-v6", f"https://[::1]{p}/token", b),
        ("loopback-v6-long", f"https://[0:0:0:0:0:0:0:1]{p}/token", b),
        ("loopback-mapped", f"https://[::ffff:127.0.0.1]{p}/token", b),
        ("loopback-mapped-hex", f"https://[::ffff:7f00:1]{p}/token", b),
        ("localhost", f"https://localhost{p}/token", b),
        ("localhost-upper", f"https://LOCALHOST{p}/token", b),
        ("localhost-dot", f"https://localhost.{p}/token", b),
        ("sub-localhost", f"https://idp.localhost{p}/token", b),
        ("sub-localhost-dot", f"https://a.b.localhost.{p}/token", b),
        ("unspecified", "https://0.0.0.0/token", b),
        ("unspecified-short", "https://0/token", bu),
        ("unspecified-v6", "https://[::]/token", b),
        ("private-10", "https://10.0.0.1/token", b),
        ("private-10-short", "https://10.1/token", bu),
        ("private-172", "https://172.16.0.1/token", b),
        ("private-172-top", "https://172.31.255.255/token", b),
        ("private-192", "https://192.168.1.1/token", b),
        ("private-192-hex", "https://0xc0a80101/token", bu),
        ("private-192-decimal", "https://3232235777/token", bu),
        ("private-mapped", "https://[::ffff:10.0.0.1]/token", b),
        ("metadata", "https://169.254.169.254/latest/meta-data/", b),
        ("metadata-decimal", "https://2852039166/latest/meta-data/", bu),
        ("metadata-hex", "https://0xa9fea9fe/latest/meta-data/", bu),
        ("metadata-octal", "https://0251.0376.0251.0376/latest/meta-data/", bu),
        ("metadata-mapped", "https://[::ffff:169.254.169.254]/latest/meta-data/", b),
        ("metadata-mapped-hex", "https://[::ffff:a9fe:a9fe]/latest/meta-data/", b),
        ("metadata-v6-aws", "https://[fd00:ec2::254]/latest/meta-data/", b),
        ("link-local-v6", "https://[fe80::1]/token", b),
        ("link-local-v6-zone", "https://[fe80::1%25eth0]/token", bu),
        ("cgnat", "https://100.64.0.1/token", b),
        ("cgnat-top", "https://100.127.255.254/token", b),
        ("ula", "https://[fc00::1]/token", b),
        ("ula-fd", "https://[fd12:3456:789a::1]/token", b),
        ("multicast", "https://224.0.0.1/token", b),
        ("multicast-v6", "https://[ff02::1]/token", b),
        ("reserved", "https://240.0.0.1/token", b),
        ("broadcast", "https://255.255.255.255/token", b),
    ]


UNREADABLE = [
    ("no-host", "https:///token"),
    ("bad-bracket", "https://[::1/token"),
    ("bad-port", "https://idp.credex.test:99999/token"),
    ("space-in-host", "https://idp credex.test/token"),
    ("not-a-url", "token endpoint"),
]


def test_url_matrix_is_refused_and_nothing_stored(api, admin, providers):
    """Every case as the token URL of a custom OAuth 2.0 connector. One test over the matrix
    (each case names itself on failure) keeps the session's connector count small."""
    problems = []
    for label, url, reasons in url_cases(providers.canary.port) + [(l, u, BLOCKED_OR_UNREADABLE) for l, u in UNREADABLE]:
        key = slug(f"ssrf-{label}")
        conn = oauth2(api, key, providers.generic.new_tenant(), token_url=url)
        try:
            expect_create_refused(api, admin, conn, reasons)
        except (AssertionError, grpc.RpcError) as e:
            problems.append(f"{label} ({url}): {e}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("field", ["authorization_url", "token_url", "userinfo_url", "revocation_url"])
def test_every_url_field_is_screened(api, admin, providers, field):
    key = slug(f"ssrf-{field.split('_')[0]}")
    conn = oauth2(api, key, providers.generic.new_tenant(), **{field: "https://169.254.169.254/latest/meta-data/"})
    expect_create_refused(api, admin, conn, BLOCKED)


@pytest.mark.parametrize("issuer", ["https://169.254.169.254", "https://localhost", "http://idp.credex.test",
                                    "https://[::ffff:10.0.0.1]"])
def test_oidc_issuer_is_screened(api, admin, issuer):
    expect_create_refused(api, admin, oidc(api, slug("ssrf-issuer"), issuer), BLOCKED)


@pytest.mark.parametrize("base", ["https://10.0.0.1", "https://localhost", "http://gitlab.example.test",
                                  "https://0x7f.1"])
def test_self_managed_gitlab_base_is_screened(api, admin, base):
    """A built-in GitLab connector's self-managed base URL (endpoints.issuer_url) is screened
    like any connector URL."""
    o = api.pb.oauth
    conn = o.Connector(provider_key="gitlab", type=o.CONNECTOR_TYPE_BUILT_IN, display_name="GitLab e2e",
                       client_id=f"cid-{uuid.uuid4().hex[:8]}", redirect_uri=redirect_uri("gitlab"),
                       scopes=["read_user"], endpoints=o.ConnectorEndpoints(issuer_url=base))
    err = refused(lambda: create(api, admin, conn, secret()))
    assert x.reason(err) in (BLOCKED_OR_UNREADABLE if "0x" in base else BLOCKED), x.describe(err)
    client, db = api.mongo()
    try:
        assert not [d for d in db["oauth_connectors"].find({}) if base in str(d)]
    finally:
        client.close()


def loopback_names_in_hosts_file() -> list[str]:
    names = []
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and (fields[0].startswith("127.") or fields[0] == "::1"):
            names += [n for n in fields[1:] if "localhost" not in n.lower()]
    return sorted(set(names))


def test_names_resolving_to_loopback_are_refused(api, admin, providers):
    names = loopback_names_in_hosts_file()
    if not names:
        pytest.skip("no name other than localhost maps to loopback in /etc/hosts on this machine; "
                    "resolution to internal addresses is pinned by common/http's unit tests")
    for name in names[:4]:
        conn = oauth2(api, slug("ssrf-hosts"), providers.generic.new_tenant(),
                      token_url=f"https://{name}:{providers.canary.port}/token")
        refused_at_create_or_test(api, admin, conn, BLOCKED)


# ---- discovery ----------------------------------------------------------------------------------

def test_positive_control_and_no_secret_sent(api, admin, providers):
    """The same kinds of connector on a well-behaved issuer are created and pass TestConnector
    (so the refusals around them are the rules at work, not an unreachable provider), and no
    request TestConnector made carries the client secret."""
    g = providers.generic
    for make in (lambda k, iss: oidc(api, k, iss), lambda k, iss: oauth2(api, k, iss)):
        issuer = g.new_tenant()
        mark = g.mark()
        value = secret()
        made = create(api, admin, make(slug("ssrf-ok"), issuer), value)
        assert made.client_secret_masked and made.connector_id
        outcome = run_test_connector(api, admin, made.connector_id)
        assert outcome[0] == "ok", outcome
        path = urllib.parse.urlsplit(issuer).path
        seen = [r for r in g.requests(since=mark) if path in r.path]
        assert seen, "TestConnector reached nothing at the provider"
        no_secret_sent(seen, value)


def test_oidc_discovery_naming_another_issuer_is_refused(api, admin, providers):
    """Discovery must name the configured issuer (OIDC Discovery 4.3, RFC 8414 3.3): refused at
    creation, or (if discovery is deferred) created but failing TestConnector's discovery check."""
    g = providers.generic
    issuer = g.new_tenant(WRONG_ISSUER_HOST)
    mark = g.mark()
    conn = oidc(api, slug("ssrf-issuer"), issuer)
    try:
        made = create(api, admin, conn, secret())
    except grpc.RpcError as err:
        assert err.code() in (C.INVALID_ARGUMENT, C.FAILED_PRECONDITION), x.describe(err)
        assert_nothing_stored(api, admin, conn.provider_key)
    else:
        kind, detail = run_test_connector(api, admin, made.connector_id)
        assert kind == "failed" and "discovery" in [name for name, _ in detail], (kind, detail)
    assert g.requests(since=mark, host=WRONG_ISSUER_HOST), "the discovery document was never fetched"


def test_discovery_naming_an_internal_token_endpoint_is_refused(api, admin, providers):
    g = providers.generic
    issuer = g.new_tenant()
    g.discovery_patch[issuer] = {"token_endpoint": "https://169.254.169.254/latest/meta-data/"}
    refused_at_create_or_test(api, admin, oidc(api, slug("ssrf-disco"), issuer), BLOCKED)


def test_discovery_redirect_to_loopback_is_not_followed(api, admin, providers):
    g = providers.generic
    issuer = g.new_tenant()
    path = urllib.parse.urlsplit(issuer).path
    fault = g.add_fault(Fault("redirect", path_suffix=f"{path}/.well-known/openid-configuration",
                              location=providers.canary_url("/.well-known/openid-configuration")))
    try:
        refused_at_create_or_test(api, admin, oidc(api, slug("ssrf-disco-302"), issuer), DISCOVERY_REFUSED)
    finally:
        g.remove_fault(fault)


# ---- outbound calls of TestConnector ------------------------------------------------------------

def outcome_with_fault(api, admin, providers, fault_for_token_path, reasons: set[str]):
    """Create a custom OAuth 2.0 connector on a fresh issuer, make its token endpoint misbehave,
    run TestConnector, and check it fails with one of `reasons` after reaching the endpoint
    without the client secret. The elapsed seconds of TestConnector."""
    g = providers.generic
    issuer = g.new_tenant()
    value = secret()
    made = create(api, admin, oauth2(api, slug("ssrf-call"), issuer), value)
    token_path = urllib.parse.urlsplit(f"{issuer}/token").path
    fault = g.add_fault(fault_for_token_path(token_path))
    mark, canary = g.mark(), providers.canary.connections
    try:
        started = time.monotonic()
        outcome = run_test_connector(api, admin, made.connector_id)
        elapsed = time.monotonic() - started
    finally:
        g.remove_fault(fault)
    time.sleep(0.2)
    assert providers.canary.connections == canary, "credex followed the provider to a loopback canary"
    assert_test_fails(outcome, reasons, f"although its token endpoint misbehaved ({fault.kind})")
    reached = g.requests(since=mark, path_suffix=token_path)
    assert reached, "TestConnector never called the token endpoint"
    no_secret_sent(g.requests(since=mark), value)
    return elapsed


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_token_endpoint_redirect_to_loopback_is_not_followed(api, admin, providers, status):
    """The redirect is not followed (the canary, checked after every test here, sees no
    connection), and a token endpoint that answers with a redirect does not pass the test: the
    code exchange would fail against it just the same."""
    outcome_with_fault(api, admin, providers,
                       lambda path: Fault("redirect", path_suffix=path, status=status,
                                          location=providers.canary_url("/token")),
                       {"unavailable", "ssrf_blocked", "failed_precondition", "invalid_argument"})


@pytest.mark.parametrize("declare_length", [True, False])
def test_oversized_answer_is_unavailable(api, admin, providers, stack, declare_length):
    elapsed = outcome_with_fault(api, admin, providers,
                                 lambda path: Fault("oversized", path_suffix=path, size=8 << 20,
                                                    declare_length=declare_length),
                                 {"unavailable"})
    assert elapsed < http_timeout_s(stack) + TIME_MARGIN_S


@pytest.mark.parametrize("kind", ["slow", "trickle"])
def test_slow_answer_is_unavailable_in_bounded_time(api, admin, providers, stack, kind):
    """A provider that stalls before answering, or sends one byte a second, is given up within
    the whole-exchange limit CREDEX_OAUTH_HTTP_TIMEOUT_MS (plus a margin for the hop)."""
    elapsed = outcome_with_fault(api, admin, providers,
                                 lambda path: Fault(kind, path_suffix=path, seconds=60 if kind == "slow" else 1,
                                                    size=4096),
                                 {"unavailable"})
    assert elapsed < http_timeout_s(stack) + TIME_MARGIN_S, f"TestConnector took {elapsed:.1f}s"
