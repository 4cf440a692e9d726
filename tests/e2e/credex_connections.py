"""Provider connections for the black-box tests that need them (test_connections_api,
test_exchange, test_mcp_impersonation): a world of users and teams, connectors on fresh tenants
of the generic provider test server, the audit and log probes, and the canary check that no
provider token appears in an answer, a log or an audit event.
"""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

import credex_api as x
import credex_edge as e

UI_CALLBACK = "https://ui.credex.test/oauth/callback"  # the UI's callback page (redirect_uri)


class World:
    """An admin, two users in a team the connector is enabled for, a stranger in no team; a
    connector on a fresh tenant of the generic provider; every edge answer and gRPC reply kept
    for the leak checks."""

    def __init__(self, api: x.Api, providers):
        self.api, self.providers = api, providers
        self.admin, self.alice, self.bob = x.uid("cadm"), x.uid("alice"), x.uid("bob")
        self.stranger = x.uid("stranger")
        self.team = x.uid("team")
        api.fga_write([(f"user:{self.admin}", "admin", "platform:credex")])
        api.add_team_member(self.team, self.alice)
        api.add_team_member(self.team, self.bob)
        self.replies: list[bytes] = []

    def keep(self, reply) -> None:
        self.replies.append(reply.SerializeToString() + str(reply).encode())

    def connector(self, teams: list[str] | None = None) -> tuple[str, str, str]:
        """A CUSTOM_OAUTH2 connector on a fresh tenant, enabled for `teams` (default: the
        world's team): (connector_id, provider_key, issuer)."""
        o, g = self.api.pb.oauth, self.providers.generic
        issuer = g.new_tenant()
        key = f"conn-{uuid.uuid4().hex[:10]}"
        client_id = f"cid-{key}"
        secret = e.canary("client")
        g.register_client(client_id, secret.decode(), (UI_CALLBACK,))
        conn = o.Connector(
            provider_key=key, type=o.CONNECTOR_TYPE_CUSTOM_OAUTH2, display_name=f"E2E {key}", client_id=client_id,
            redirect_uri=UI_CALLBACK, scopes=["profile"],
            endpoints=o.ConnectorEndpoints(authorization_url=f"{issuer}/authorize", token_url=f"{issuer}/token",
                                           userinfo_url=f"{issuer}/userinfo", revocation_url=f"{issuer}/revoke"),
            account_mapping=o.AccountMapping(account_id_field="sub", account_name_field="name"))
        admin = self.api.ui(self.admin)
        made = admin.call("Connectors", "CreateConnector",
                          o.CreateConnectorRequest(connector=conn, client_secret=secret), timeout=30)
        admin.call("Connectors", "EnableConnector", o.EnableConnectorRequest(
            connector_id=made.connector_id, team_ids=teams if teams is not None else [self.team]), timeout=30)
        return made.connector_id, key, issuer

    def issued_tokens(self) -> list[bytes]:
        """Every access and refresh token the generic provider has issued: the canaries."""
        book = self.providers.generic.book
        with book._lock:
            return [t.encode() for t in (*book.access, *book.refresh)]


def events_of(api: x.Api, correlation_id: str) -> list[dict]:
    client, db = api.mongo()
    with client:
        return list(db.credential_audit_events.find({"correlation_id": correlation_id}))


def one_denial(api: x.Api, cid: str, event_type: str, reason: str) -> dict:
    """The single audit event of a refused call, written by the gateway."""
    evs = x.wait_until(lambda: events_of(api, cid), 10, what=f"audit event {event_type}")
    assert len(evs) == 1, [(ev.get("event_type"), ev.get("outcome")) for ev in evs]
    ev = evs[0]
    assert (ev["event_type"], ev["outcome"], ev["resource_type"], ev["reason"]) == \
        (event_type, "denied", "provider_connection", reason), ev
    return ev


def oauth_saw(stack, cid: str) -> bool:
    """Did any call with this correlation id reach oauth (its access log line)?"""
    return bool(x.log_lines_with(stack.log_path("oauth"), cid))


def refused(caller: x.Caller, method: str, request, cid: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        caller.call("Connections", method, request, cid=cid, timeout=30)
    return info.value


def owns(api: x.Api, user: str, connection_id: str) -> bool:
    return api.fga_check(f"user:{user}", "owner", f"provider_connection:{connection_id}")


def assert_no_token_anywhere(stack, api: x.Api, world: World, clients: list[e.Edge], extra_logs=()) -> None:
    """No token the provider issued, in any encoding, in an edge answer (body or headers), a kept
    gRPC reply, a service log or an audit event."""
    tokens = world.issued_tokens()
    assert tokens, "the provider issued no token: the flow did not run"
    client, db = api.mongo()
    with client:
        audit = repr(list(db.credential_audit_events.find({}))).encode()
        docs = repr(list(db.provider_connections.find({}))).encode()
    logs = b"".join(p.read_bytes() for p in [*(stack.log_path(n) for n in x.h.SERVICES), *extra_logs]
                    if p.exists())
    answers = [a.content + json.dumps(dict(a.headers)).encode() for c in clients for a in c.answers]
    for token in tokens:
        for form in x.encodings(token):
            for where, blob in (("an audit event", audit), ("provider_connections", docs), ("a log", logs)):
                assert form not in blob, f"a provider token is in {where}"
            for blob in answers + world.replies:
                assert form not in blob, "an answer holds a provider token"


def consent(providers, authorization_url: str) -> dict[str, str]:
    """The browser at the provider: its redirect back to the UI's callback page, not followed."""
    back = providers.consent(authorization_url)
    assert "code" in back and "state" in back, back
    return back


def connect_over_grpc(world: World, providers, user: str, key: str):
    """`user` connects connector `key` through the gateway (as the UI does over gRPC): the
    ACTIVE Connection, whose owner in OpenFGA the user now is."""
    o = world.api.pb.oauth
    caller = world.api.ui(user)
    start = caller.call("Connections", "StartConnect", o.StartConnectRequest(provider_key=key), timeout=30)
    world.keep(start)
    back = consent(providers, start.authorization_url)
    done = caller.call("Connections", "CompleteConnect", o.CompleteConnectRequest(
        provider_key=key, code=back["code"], oauth_state=back["state"]), timeout=30)
    world.keep(done)
    assert done.connection.state == o.CONNECTION_STATE_ACTIVE
    return done.connection
