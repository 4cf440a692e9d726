"""scripts/bench exchange: a stack of the release build of its own (scripts/run start on free
ports, through the black-box harness), the provider test servers, and one user with two
connections of the generic OAuth provider: one whose token is valid for an hour, and one whose
provider issues tokens valid for one second (below the exchange's 60 s default minimum lifetime),
so that every exchange of it refreshes. Then bench/exchange_bench with the rest of the command
line; then, for what dominates, the database commands per call of each operation (FerretDB's
serverStatus counters over 50 calls, one caller); and the stack stopped. A benchmark driver, not
a test.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import credex_api as x  # noqa: E402
import credex_harness as h  # noqa: E402
from credex_connections import World, connect_over_grpc  # noqa: E402
from providers import ProviderSims  # noqa: E402

BUILD = ROOT / "build" / "release"
TTL = 3600  # the tokens outlive the run
PROBE_CALLS = 50


def db_commands(api: x.Api) -> dict[str, int]:
    client, db = api.mongo()
    with client:
        counts = client.admin.command("serverStatus").get("metrics", {}).get("commands", {})
    return {k: v.get("total", 0) for k, v in counts.items()}


def commands_per_call(api: x.Api, call) -> str:
    """The database commands one call causes, on average over PROBE_CALLS (background included:
    the metadata cache's watcher and the prober add a little)."""
    before = db_commands(api)
    for _ in range(PROBE_CALLS):
        call()
    after = db_commands(api)
    per = {k: (after.get(k, 0) - before.get(k, 0)) / PROBE_CALLS for k in after}
    return " ".join(f"{k}={v:.1f}" for k, v in sorted(per.items()) if v >= 0.05 and k != "serverStatus")


def main(argv: list[str]) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="credex-exchange-bench-"))
    sims = ProviderSims(tmp / "providers").start()
    stack = h.start_stack(tmp / "run", build_dir=BUILD,
                          extra_env=sims.env() | {"CREDENTIAL_EXCHANGE_ENABLED": "true", "CREDEX_LOG_LEVEL": "warn"})
    api = x.Api(stack, tmp / "certs")
    try:
        w = World(api, sims)
        api.grant_exchanger(x.AGENT)
        user = w.alice
        _, valid_key, _ = w.connector()
        valid_conn = connect_over_grpc(w, sims, user, valid_key).connection_id
        _, refresh_key, _ = w.connector()
        sims.generic.access_expires_in = 1
        connect_over_grpc(w, sims, user, refresh_key)
        sid = api.ui(user).create(b"bench-value-0123456789abcdef", allowed_uses=["mcp_server_env"]).secret.secret_id
        (tmp / "service.jwt").write_text(api.tokens.service(x.AGENT, ttl=TTL))
        (tmp / "user.jwt").write_text(api.tokens.on_behalf_of(user, x.AGENT, ttl=TTL))
        cert, key = api.identity_pair(x.AGENT)
        refreshes0 = len(sims.generic.token_requests())
        rc = subprocess.run([str(BUILD / "bench" / "exchange_bench"), "--addr", api.gateway_addr,
                             "--ca", str(stack.pki.ca), "--cert", str(cert), "--key", str(key),
                             "--service-token", str(tmp / "service.jwt"), "--user-token", str(tmp / "user.jwt"),
                             "--secret-id", sid, "--valid-provider", valid_key, "--valid-connection", valid_conn,
                             "--refresh-provider", refresh_key,
                             "--cpu-of", str(stack.run_dir / "pids"), *argv]).returncode
        print(f"provider token requests during the run: {len(sims.generic.token_requests()) - refreshes0}")
        agent, g, c = api.agent(user), api.pb.gateway, api.pb.common
        ctx = c.ResourceContext(resource_type="mcp_server", resource_id="bench")
        probes = {
            "retrieve": lambda: agent.call("Retrieval", "Retrieve", g.RetrieveRequest(
                secret_ref=sid, intended_use="mcp_server_env", resource_context=ctx)),
            "exchange": lambda: agent.call("Retrieval", "Exchange", g.ExchangeRequest(
                provider_key=valid_key, intended_use="mcp_impersonation", resource_context=ctx)),
            "exch_id": lambda: agent.call("Retrieval", "Exchange", g.ExchangeRequest(
                connection_id=valid_conn, intended_use="mcp_impersonation", resource_context=ctx)),
            "refresh": lambda: agent.call("Retrieval", "Exchange", g.ExchangeRequest(
                provider_key=refresh_key, intended_use="mcp_impersonation", resource_context=ctx)),
        }
        for name, call in probes.items():
            print(f"op={name:<8} database_commands_per_call {commands_per_call(api, call)}")
        return rc
    finally:
        api.close()
        problems = h.stop_stack(stack)
        sims.stop()
        for p in problems:
            print(f"stack: {p}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
