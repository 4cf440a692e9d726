"""`scripts/run cert NAME`: the documented way to give a new server-side caller (an MCP server,
an agent runtime) a dev certificate from the run folder's CA, with which it calls the gateway
over mTLS."""

from __future__ import annotations

import stat
import subprocess

from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import credex_api as x
import credex_harness as h


def run_cert(stack: h.Stack, *args: str) -> subprocess.CompletedProcess:
    env = h.stack_env(stack.run_dir, stack.ports, stack.build_dir)
    return h.run_script(env, "cert", *args, timeout=60)


def test_cert_for_a_new_caller_calls_the_gateway(stack, tmp_path):
    name = x.uid("mcp").lower().replace("_", "-")[:63]
    out = tmp_path / "certs"
    res = run_cert(stack, name, "--out", str(out))
    assert res.returncode == 0, res.stderr
    cert, key = out / f"{name}.pem", out / f"{name}.key"
    assert str(cert) in res.stdout and str(key) in res.stdout
    assert f"spiffe://credex.local/{name}" in res.stdout
    for f in (cert, key):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    reply, _ = stack.unary("gateway", h.HEALTH_CHECK, h.health_request(), cert=cert, key=key)
    assert reply == h.SERVING
    # Reflection over the same connection kind: the gateway lists its services to the caller.
    with stack.channel("gateway", cert=cert, key=key) as ch:
        assert "credex.v1.Retrieval" in ProtoReflectionDescriptorDatabase(ch).get_services()
    # An existing certificate is not replaced without --force.
    again = run_cert(stack, name, "--out", str(out))
    assert again.returncode != 0 and "--force" in again.stderr
    assert run_cert(stack, name, "--out", str(out), "--force").returncode == 0


def test_cert_refuses_a_bad_name(stack, tmp_path):
    for bad in ("Upper", "has_underscore", "a" * 64, "sp ace", ""):
        res = run_cert(stack, bad, "--out", str(tmp_path))
        assert res.returncode != 0, bad
        assert "NAME must be 1 to 63 characters" in res.stderr or "usage: scripts/run cert" in res.stderr, res.stderr
    assert not list(tmp_path.glob("*.pem"))
