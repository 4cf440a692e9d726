"""CAIPE_CREDENTIALS_ENABLED=false closes every credex.v1 method with feature_disabled, in every
process and whether or not the method has a handler yet (common/svc's gate), while the health
report (Admin/GetHealth, and the KeyWrap/Describe it reads), grpc health and reflection answer.

Runs its own stack (a second `scripts/run start` on free ports) with the toggle off.
"""

from __future__ import annotations

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode


@pytest.fixture(scope="module")
def disabled(tmp_path_factory):
    with h.running_stack(tmp_path_factory.mktemp("credex-disabled-run"), "disabled stack",
                         extra_env={"CAIPE_CREDENTIALS_ENABLED": "false"}) as stack:
        yield stack


def feature_disabled(stack: h.Stack, service: str, method: str, identity: str = h.CLI_IDENTITY) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stack.unary(service, method, b"", identity=identity)
    err = info.value
    # common/error maps feature_disabled to gRPC 9 FAILED_PRECONDITION.
    assert (err.code(), x.reason(err)) == (C.FAILED_PRECONDITION, "feature_disabled"), x.describe(err)


@pytest.mark.parametrize("method", [
    "/credex.v1.Retrieval/Exchange",         # refuses browsers only, the rest is a later issue
    "/credex.v1.Audit/QueryAuditEvents",     # no handler yet
    "/credex.v1.Connectors/ListConnectors",  # implemented (forwarded to oauth)
    "/credex.v1.Retrieval/Retrieve",         # implemented
    "/credex.v1.Secrets/ListSecrets",        # implemented
])
def test_gateway_methods_answer_feature_disabled(disabled, method):
    feature_disabled(disabled, "gateway", method)


def test_internal_services_are_gated_too(disabled):
    feature_disabled(disabled, "keywrap", "/credex.v1.KeyWrap/Unwrap", identity="store")
    feature_disabled(disabled, "store", "/credex.v1.CredentialStore/Resolve", identity="gateway")


def test_health_still_answers(disabled, tmp_path):
    for svc in h.SERVICES:
        assert disabled.health(svc) == h.SERVING, svc
    reply, _ = disabled.unary("keywrap", "/credex.v1.KeyWrap/Describe", b"", identity="gateway")
    assert reply  # configured name and key id
    api = x.Api(disabled, tmp_path)
    try:
        health = api.ui(x.uid("admin")).call("Admin", "GetHealth", api.pb.gateway.GetHealthRequest())
        assert health.credentials_enabled is False
    finally:
        api.close()
    listed = disabled.grpcurl("gateway", "list")
    assert listed.returncode == 0 and "credex.v1.Retrieval" in listed.stdout, listed.stderr
