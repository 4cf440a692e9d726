"""Keycloak as credex's identity provider, end to end (issue 12, item 5).

A real Keycloak (the session's `keycloak` fixture, realms from deploy/keycloak/) issues the tokens;
a gateway of the session stack started for this module verifies them through Keycloak's JWKS URL
over https (CREDEX_JWKS_CA_FILE names the test CA), with Keycloak's issuer, audience `credex` and
the default service-token rule (client_claim, client_id). Nothing here signs a token itself:
user tokens come from the password grant of the `credex-ui` client, the agent runtime's own token
from the client-credentials grant of the `agent-runtime` client.

Shown: a user's token creates and lists a secret (owned by the user's Keycloak `sub`); the agent
runtime's token with that user's token retrieves it (after the platform retriever grant the other
tests use), and not with another user's token; each Keycloak token in the other slot is refused;
a token of another realm (audience credex, another issuer and keys), a token for another audience,
a token of credex's dev issuer, and tampered tokens (payload or signature) are `unauthenticated`.
The authorization-code flow, played with an HTTP client through Keycloak's login and consent
pages (keycloak.Keycloak.login), gives a user token that works too, and the realm's client for
credex as a relying party requires PKCE S256 and consent, binds the code to the verifier and
returns the nonce.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
import uuid

import grpc
import pytest
import requests

import credex_api as x
import credex_harness as h
import keycloak as kc

C = grpc.StatusCode
UNAUTHENTICATED = (C.UNAUTHENTICATED, "unauthenticated")
REDIRECT = "https://ui.credex.test/connections/callback"
CONNECTOR = "credex-connector"


@pytest.fixture(scope="module")
def kc_gateway(stack, keycloak):
    """A gateway of the session stack that trusts only the Keycloak realm `credex`."""
    gw = stack.spawn("gateway", **keycloak.gateway_env())
    stack.wait_healthy(gw)
    yield gw
    code = gw.stop()
    assert code == 0, f"Keycloak gateway exit code {code}:\n{h.tail(gw.log_path)}"


def ui(api, gw, user_token: str) -> x.Caller:
    """The UI path: peer credexctl, the user's token only."""
    return x.Caller(api, h.CLI_IDENTITY, [("x-credex-user-token", user_token)], gw.addr)


def agent(api, gw, service_token: str, user_token: str | None = None) -> x.Caller:
    md = [("authorization", f"Bearer {service_token}")]
    if user_token is not None:
        md.append(("x-credex-user-token", user_token))
    return x.Caller(api, x.AGENT, md, gw.addr)


def refused(fn) -> tuple:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), x.reason(info.value)


def secret_value() -> bytes:
    return f"kc_e2e_{uuid.uuid4().hex}".encode()


def redirect_query(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT + "?"), location
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def connector_token(keycloak, **form: str) -> requests.Response:
    """The token endpoint as credex calls it for a custom connector: client_secret_basic."""
    return requests.post(keycloak.token_url(), data=form, timeout=30, verify=str(keycloak.ca_file),
                         auth=(CONNECTOR, kc.CLIENT_SECRETS[CONNECTOR]))


def test_keycloak_tokens_have_the_shapes_credex_relies_on(keycloak):
    user, service = keycloak.user_token("alice"), keycloak.service_token()
    u, s = kc.claims(user), kc.claims(service)
    issuer = keycloak.issuer()
    assert u["iss"] == issuer and s["iss"] == issuer
    assert kc.AUDIENCE in kc.audiences(user) and kc.AUDIENCE in kc.audiences(service)
    assert u["azp"] == kc.UI_CLIENT and "client_id" not in u, u
    assert s["azp"] == "agent-runtime" and s["client_id"] == "agent-runtime", s
    assert u["sub"] != s["sub"]
    # Discovery names the public issuer, whichever address it was asked at.
    doc = requests.get(f"{keycloak.base_url}/realms/{kc.REALM}/.well-known/openid-configuration",
                       verify=str(keycloak.ca_file), timeout=30).json()
    assert doc["issuer"] == issuer and doc["jwks_uri"].startswith(keycloak.public_url + "/")
    assert "S256" in doc["code_challenge_methods_supported"]
    # What a custom OIDC connector relies on (docs/KEYCLOAK.md): RFC 9207 `iss`, revocation.
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["revocation_endpoint"].startswith(keycloak.public_url + "/")


def test_keycloak_user_token_creates_and_lists_a_secret(api, keycloak, kc_gateway):
    token = keycloak.user_token("alice")
    sub = kc.claims(token)["sub"]
    caller = ui(api, kc_gateway, token)
    created = caller.create(secret_value(), allowed_uses=[]).secret
    assert created.owner.owner_id == sub
    listed = [m.secret_id for m in caller.list(page=api.pb.common.PageRequest(page_size=200)).secrets]
    assert created.secret_id in listed
    # Bob's own token does not see Alice's secret.
    bob = ui(api, kc_gateway, keycloak.user_token("bob"))
    assert created.secret_id not in [m.secret_id for m in bob.list(page=api.pb.common.PageRequest(page_size=200)).secrets]


def test_keycloak_service_token_with_user_token_retrieves(api, keycloak, kc_gateway):
    api.grant_retriever(x.AGENT)
    alice = keycloak.user_token("alice")
    value = secret_value()
    sid = ui(api, kc_gateway, alice).create(value, allowed_uses=[]).secret.secret_id
    service = keycloak.service_token()
    got = agent(api, kc_gateway, service, alice).retrieve(sid)
    assert got.value == value and got.secret_id == sid
    # The same service token for another user: not Alice's secret.
    bob = keycloak.user_token("bob")
    code, why = refused(lambda: agent(api, kc_gateway, service, bob).retrieve(sid))
    assert code in (C.NOT_FOUND, C.PERMISSION_DENIED), (code, why)


def test_keycloak_tokens_in_the_wrong_slot_are_refused(api, keycloak, kc_gateway):
    api.grant_retriever(x.AGENT)
    alice = keycloak.user_token("alice")
    sid = ui(api, kc_gateway, alice).create(secret_value(), allowed_uses=[]).secret.secret_id
    service = keycloak.service_token()
    # The user's token as the service's own, and the service token as a user's.
    assert refused(lambda: agent(api, kc_gateway, alice, alice).retrieve(sid)) == UNAUTHENTICATED
    assert refused(lambda: agent(api, kc_gateway, service, service).retrieve(sid)) == UNAUTHENTICATED
    assert refused(lambda: ui(api, kc_gateway, service).list()) == UNAUTHENTICATED


def test_keycloak_foreign_realm_and_other_audience_are_refused(api, keycloak, kc_gateway):
    foreign = keycloak.user_token("alice", realm=kc.FOREIGN_REALM)
    assert kc.AUDIENCE in kc.audiences(foreign)  # refused for its issuer and keys only
    other_aud = keycloak.user_token("alice", client_id="unrelated-app")
    assert kc.audiences(other_aud) and kc.AUDIENCE not in kc.audiences(other_aud)
    dev = api.tokens.user(kc.claims(keycloak.user_token("alice"))["sub"])  # credex's dev issuer
    for token in (foreign, other_aud, dev):
        assert refused(lambda t=token: ui(api, kc_gateway, t).list()) == UNAUTHENTICATED, kc.claims(token)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_keycloak_tampered_tokens_are_refused(api, keycloak, kc_gateway):
    alice = keycloak.user_token("alice")
    bob_sub = kc.claims(keycloak.user_token("bob"))["sub"]
    header, _, signature = alice.split(".")
    forged_payload = _b64(json.dumps(kc.claims(alice) | {"sub": bob_sub}).encode())
    sig = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    sig[len(sig) // 2] ^= 0x01
    tampered = [f"{header}.{forged_payload}.{signature}",
                f"{header}.{alice.split('.')[1]}.{_b64(bytes(sig))}"]
    for token in tampered:
        assert refused(lambda t=token: ui(api, kc_gateway, t).list()) == UNAUTHENTICATED
    ui(api, kc_gateway, alice).list()  # the untouched token still works


def test_keycloak_authorization_code_user_token_works_at_the_gateway(api, keycloak, kc_gateway):
    """The UI's real flow: login page, code with PKCE S256, token; the token works at credex."""
    verifier, challenge = kc.pkce_pair()
    state = secrets.token_urlsafe(16)
    url = keycloak.authorization_url(kc.UI_CLIENT, REDIRECT, state=state, code_challenge=challenge,
                                     code_challenge_method="S256")
    q = redirect_query(keycloak.login(url, "alice"))
    assert q.get("state") == state and q.get("iss") == keycloak.issuer() and q.get("code"), q
    token = keycloak.token_response(grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT,
                                    client_id=kc.UI_CLIENT, code_verifier=verifier)["access_token"]
    assert kc.claims(token)["sub"] == kc.claims(keycloak.user_token("alice"))["sub"]
    caller = ui(api, kc_gateway, token)
    sid = caller.create(secret_value(), allowed_uses=[]).secret.secret_id
    assert sid in [m.secret_id for m in caller.list(page=api.pb.common.PageRequest(page_size=200)).secrets]


def test_keycloak_connector_client_requires_pkce_s256_and_consent(keycloak):
    """The realm's client for credex as a relying party (connections) behaves as
    docs/KEYCLOAK.md says: PKCE S256 required, consent asked, the code bound to the verifier,
    an id_token with the nonce."""
    verifier, challenge = kc.pkce_pair()
    for pkce in ({}, {"code_challenge": verifier, "code_challenge_method": "plain"}):
        q = redirect_query(keycloak.login(keycloak.authorization_url(CONNECTOR, REDIRECT, state="s", **pkce), "bob"))
        assert q.get("error") == "invalid_request" and "code" not in q, (pkce, q)

    def authorize(consent: bool, nonce: str = "n") -> dict[str, str]:
        url = keycloak.authorization_url(CONNECTOR, REDIRECT, scope="openid profile", state="st", nonce=nonce,
                                         code_challenge=challenge, code_challenge_method="S256")
        return redirect_query(keycloak.login(url, "bob", consent=consent))

    refused_q = authorize(consent=False)
    assert refused_q.get("error") == "access_denied" and "code" not in refused_q, refused_q

    q = authorize(consent=True)
    wrong = connector_token(keycloak, grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT,
                            code_verifier=kc.pkce_pair()[0])
    assert wrong.status_code == 400 and wrong.json().get("error") == "invalid_grant", wrong.text

    nonce = secrets.token_urlsafe(16)
    q = authorize(consent=True, nonce=nonce)
    assert q.get("iss") == keycloak.issuer(), q
    ok = connector_token(keycloak, grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT,
                         code_verifier=verifier)
    assert ok.status_code == 200, ok.text
    id_token = kc.claims(ok.json()["id_token"])
    assert id_token["nonce"] == nonce and id_token["iss"] == keycloak.issuer() and CONNECTOR in kc.audiences(
        ok.json()["id_token"]), id_token
    assert id_token["preferred_username"] == "bob"
