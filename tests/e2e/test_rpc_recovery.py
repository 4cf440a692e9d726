"""gRPC channels recover fast: after keywrap restarts, a retrieval through the gateway works
again within 1 s of keywrap listening again (common/rpc's reconnect backoff, rpc_identity.c).

Runs on a private keywrap + store + gateway chain spawned on the session stack (so the stack's
own processes are never stopped): the store has no data-key cache and no payload cache, so every
retrieval unwraps through this keywrap and an outage cannot hide behind a cached key.
"""

from __future__ import annotations

import socket
import subprocess
import time

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
DOWN_FOR = 3.0    # seconds keywrap stays down, with retrievals failing meanwhile
RESUME_BOUND = 1.0  # the requirement
MARGIN = 0.5        # for a loaded machine


def listening(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def restart(stack: h.Stack, inst: h.Instance) -> h.Instance:
    """Start `inst`'s service again on the same address, with the same settings."""
    log_path = inst.log_path.with_name(inst.log_path.stem + "-again.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(stack.binaries[inst.name])], env=stack.service_env(inst.name, inst.addr),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    again = h.Instance(inst.name, inst.addr, proc, log_path)
    stack.instances.append(again)
    return again


def test_retrieval_resumes_within_1s_of_keywrap_restart(stack, api):
    keywrap = stack.spawn("keywrap")
    stack.wait_healthy(keywrap)
    store = stack.spawn("store", CREDEX_KEYWRAP_ADDR=keywrap.addr, CREDEX_DEK_CACHE_MAX_ENTRIES="0",
                        CREDEX_DEK_CACHE_TTL_MS="0", CREDEX_PAYLOAD_CACHE_MAX_ENTRIES="0")
    stack.wait_healthy(store)
    gateway = stack.spawn("gateway", CREDEX_STORE_ADDR=store.addr, CREDEX_KEYWRAP_ADDR=keywrap.addr)
    stack.wait_healthy(gateway)
    api.grant_retriever(x.AGENT)
    owner = x.uid("recovery")
    value = f"recovery-{x.uid('v')}".encode()
    sid = api.ui(owner).create(value).secret.secret_id
    agent = api.agent(owner, addr=gateway.addr)
    assert agent.retrieve(sid).value == value

    again = None
    try:
        assert keywrap.stop() == 0
        down = time.monotonic()
        while time.monotonic() - down < DOWN_FOR:
            started = time.monotonic()
            try:
                agent.retrieve(sid, timeout=5)
                raise AssertionError("a retrieval succeeded while keywrap was down")
            except grpc.RpcError as e:
                assert (e.code(), x.reason(e)) == (C.UNAVAILABLE, "unavailable"), x.describe(e)
            assert time.monotonic() - started < 2, "a call to a down peer must fail fast"
            time.sleep(0.1)

        again = restart(stack, keywrap)
        x.wait_until(lambda: listening(keywrap.addr) or again.proc.poll() is not None, 60, interval=0.01,
                     what="keywrap listening again")
        assert again.proc.poll() is None, h.tail(again.log_path)
        up = time.monotonic()
        while True:
            try:
                if agent.retrieve(sid, timeout=2).value == value:
                    break
            except grpc.RpcError as e:
                assert x.reason(e) == "unavailable", x.describe(e)
            assert time.monotonic() - up < 10, "retrieval did not resume"
            time.sleep(0.02)
        took = time.monotonic() - up
        assert took < RESUME_BOUND + MARGIN, f"retrieval resumed {took:.2f}s after keywrap listened again"
    finally:
        codes = {"gateway": gateway.stop(), "store": store.stop()}
        if again is not None:
            codes["keywrap"] = again.stop()
        assert set(codes.values()) == {0}, codes


def test_compressed_requests_are_refused(stack):
    """A compressed request would be inflated into gRPC core buffers credex cannot wipe
    (docs/THREAT_MODEL.md, "Memory"): the servers accept identity encoding only."""
    ch = h.secure_channel(stack.addrs["gateway"], stack.credentials())
    gz = grpc.secure_channel(stack.addrs["gateway"], stack.credentials(),
                             options=[("grpc.ssl_target_name_override", "localhost"),
                                      ("grpc.use_local_subchannel_pool", 1)],
                             compression=grpc.Compression.Gzip)
    try:
        plain = ch.unary_unary(h.HEALTH_CHECK)(h.health_request(), timeout=10)
        assert plain  # the same call uncompressed is served
        with pytest.raises(grpc.RpcError) as info:
            gz.unary_unary(h.HEALTH_CHECK)(h.health_request(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, info.value
    finally:
        ch.close()
        gz.close()
