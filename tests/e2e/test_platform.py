"""Issue 3, "Done means": the platform every credex service stands on, tested from outside.

The stack runs from the ASan+UBSan build; the `stack` fixture fails the session if any service
ends with a non-zero code or a sanitizer report. Requests are raw protobuf bytes on method paths.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import credex_harness as h

SERVICES = h.SERVICES
C = grpc.StatusCode
# What reflection must list per process (credex.v1 part exactly; edge has none of its own).
CREDEX_SERVICES = {
    "keywrap": {"credex.v1.KeyWrap"},
    "store": {"credex.v1.CredentialStore"},
    "oauth": {"credex.v1.Connectors", "credex.v1.Connections", "credex.v1.ProviderTokens"},
    "gateway": {"credex.v1.Secrets", "credex.v1.Retrieval", "credex.v1.Audit", "credex.v1.Admin",
                "credex.v1.Connectors", "credex.v1.Connections"},
    "edge": set(),
}
STANDARD_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}
RESOLVE = "/credex.v1.CredentialStore/Resolve"
# A failed handshake surfaces as UNAVAILABLE; a handshake accepted but an identity rejected per
# call as UNAUTHENTICATED. Either is a refusal; anything else (OK, PERMISSION_DENIED...) is not.
REFUSED = {C.UNAVAILABLE, C.UNAUTHENTICATED}
CORRELATION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- dev PKI (scripts/lib/pki.sh), no stack needed ---------------------------------------------

@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pki-run")
    res = h.run_pki(run_dir, "pki_ensure")
    assert res.returncode == 0, res.stderr
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    return run_dir / "pki"


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def ekus(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def validity_days(cert: x509.Certificate) -> float:
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400


def test_pki_files_and_modes(pki_dir):
    assert pki_dir.stat().st_mode & 0o777 == 0o700
    expected = {"ca.pem", "ca.key", "credexctl.pem", "credexctl.key", "jwt-signing.key", "jwks.json",
                "jwt-issuer.txt", "local-cmk.key"}
    expected |= {f"{s}.{ext}" for s in SERVICES for ext in ("pem", "key")}
    assert {p.name for p in pki_dir.iterdir()} == expected
    for p in pki_dir.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600, p
    assert (pki_dir / "jwt-issuer.txt").read_text().strip() == "https://credex.local/dev-issuer"
    assert re.fullmatch(r"[0-9a-f]{64}\n?", (pki_dir / "local-cmk.key").read_text())


def test_pki_is_idempotent(pki_dir):
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in pki_dir.iterdir()}
    res = h.run_pki(pki_dir.parent, "pki_ensure")
    assert res.returncode == 0, res.stderr
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in pki_dir.iterdir()} == before


def test_pki_ca(pki_dir):
    ca = load_cert(pki_dir / "ca.pem")
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "credex dev CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"
    assert 3640 <= validity_days(ca) <= 3660


@pytest.mark.parametrize("service", SERVICES)
def test_pki_service_certificate(pki_dir, service):
    ca, cert = load_cert(pki_dir / "ca.pem"), load_cert(pki_dir / f"{service}.pem")
    cert.verify_directly_issued_by(ca)
    assert uri_sans(cert) == [f"spiffe://credex.local/{service}"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ekus(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.public_key().curve.name == "secp256r1"
    assert 360 <= validity_days(cert) <= 370
    key = serialization.load_pem_private_key((pki_dir / f"{service}.key").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_pki_cli_certificate(pki_dir):
    cert = load_cert(pki_dir / "credexctl.pem")
    cert.verify_directly_issued_by(load_cert(pki_dir / "ca.pem"))
    assert uri_sans(cert) == ["spiffe://credex.local/credexctl"]
    assert ekus(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_pki_jwks_matches_signing_key(pki_dir):
    jwks = json.loads((pki_dir / "jwks.json").read_text())
    assert len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert "d" not in jwk, "the JWKS must hold the public key only"
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                         sort_keys=True)
    assert jwk["kid"] == b64url(hashlib.sha256(members.encode()).digest())  # RFC 7638
    key = serialization.load_pem_private_key((pki_dir / "jwt-signing.key").read_bytes(), None)
    nums = key.public_key().public_numbers()
    assert jwk["x"] == b64url(nums.x.to_bytes(32, "big"))
    assert jwk["y"] == b64url(nums.y.to_bytes(32, "big"))
    token = jwt.encode({"iss": "https://credex.local/dev-issuer", "aud": "credex", "sub": "u1"}, key,
                       algorithm="ES256", headers={"kid": jwk["kid"]})
    verifier = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, verifier.key, algorithms=["ES256"], audience="credex",
                        issuer="https://credex.local/dev-issuer")
    assert claims["sub"] == "u1"


def test_pki_reissues_a_missing_certificate(tmp_path):
    assert h.run_pki(tmp_path, "pki_ensure").returncode == 0
    ca_before = (tmp_path / "pki" / "ca.pem").read_bytes()
    (tmp_path / "pki" / "store.pem").unlink()
    res = h.run_pki(tmp_path, "pki_ensure")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pki" / "ca.pem").read_bytes() == ca_before
    load_cert(tmp_path / "pki" / "store.pem").verify_directly_issued_by(load_cert(tmp_path / "pki" / "ca.pem"))


def test_pki_test_certificates(pki_dir, tmp_path):
    res = h.run_pki(pki_dir.parent, "pki_make_test_certs", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "PRIVATE KEY" not in res.stdout + res.stderr
    ca = load_cert(pki_dir / "ca.pem")
    other = load_cert(tmp_path / "other.pem")
    with pytest.raises(Exception):
        other.verify_directly_issued_by(ca)
    other.verify_directly_issued_by(load_cert(tmp_path / "other-ca.pem"))
    two = load_cert(tmp_path / "two-uris.pem")
    two.verify_directly_issued_by(ca)
    assert len(uri_sans(two)) == 2
    none = load_cert(tmp_path / "no-uri.pem")
    none.verify_directly_issued_by(ca)
    assert uri_sans(none) == []
    intruder = load_cert(tmp_path / "intruder.pem")
    intruder.verify_directly_issued_by(ca)
    assert uri_sans(intruder) == ["spiffe://credex.local/intruder"]
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600, p


# ---- scripts/run without a stack ----------------------------------------------------------------

def test_run_refuses_a_taken_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = dict(zip(h.PORT_NAMES, h.free_ports(len(h.PORT_NAMES))))
        ports["oauth"] = port
        env = h.stack_env(tmp_path, ports, h.BUILD_DIR)
        res = h.run_script(env, "start", timeout=60)
    assert res.returncode != 0
    assert f"port {port} (oauth)" in res.stderr
    assert not list((tmp_path / "pids").glob("*.pid")), "nothing may be started"


def test_run_rejects_a_non_loopback_address(tmp_path):
    ports = dict(zip(h.PORT_NAMES, h.free_ports(len(h.PORT_NAMES))))
    env = h.stack_env(tmp_path, ports, h.BUILD_DIR) | {"CREDEX_GATEWAY_ADDR": f"0.0.0.0:{ports['gateway']}"}
    res = h.run_script(env, "start", timeout=60)
    assert res.returncode != 0
    assert "CREDEX_GATEWAY_ADDR" in res.stderr


# ---- the running stack --------------------------------------------------------------------------

def test_run_status_and_env_file(stack):
    res = h.run_script(h.stack_env(stack.run_dir, stack.ports, stack.build_dir), "status", timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("ferretdb", "openfga", *SERVICES):
        assert re.search(rf"^{name}\s+running", res.stdout, re.M), res.stdout
    env_file = stack.run_dir / "env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    sourced = subprocess.run(["bash", "-c", 'set -eu; . "$1"; printf "%s\\n" "$CREDEX_KEYWRAP_ADDR" '
                              '"$CREDEX_TLS_CERT" "$CREDEX_OPENFGA_STORE_ID"', "_", str(env_file)],
                             capture_output=True, text=True, timeout=10)
    assert sourced.returncode == 0, sourced.stderr
    addr, cert, store_id = sourced.stdout.split()
    assert addr == stack.addrs["keywrap"]
    assert Path(cert) == stack.pki.cert("credexctl")
    assert store_id == (stack.run_dir / "openfga-store-id").read_text().strip()
    text = env_file.read_text()
    assert "PRIVATE KEY" not in text
    assert (stack.pki.dir / "local-cmk.key").read_text().strip() not in text
    for s in SERVICES:
        assert stack.env[f"CREDEX_{s.upper()}_ADDR"] == stack.addrs[s]


def test_everything_listens_on_loopback_only(stack):
    expected = {"ferretdb": {stack.ports["ferretdb"]},
                "openfga": {stack.ports["openfga-http"], stack.ports["openfga-grpc"]},
                **{s: {stack.ports[s], stack.ports[f"{s}-ops"]} for s in SERVICES}}
    for name, ports in expected.items():
        pid = stack.pid(name)
        assert pid, f"no pid for {name}"
        listening = h.listening_sockets(pid)
        assert ports <= {p for _, p in listening}, f"{name} listens on {listening}, expected {ports}"
        for addr, port in listening:
            assert addr in ("127.0.0.1", "::ffff:127.0.0.1"), f"{name} listens on {addr}:{port}"


@pytest.mark.parametrize("service", SERVICES)
def test_reflection_lists_services(stack, service):
    res = stack.grpcurl(service, "list")
    assert res.returncode == 0, res.stderr
    listed = set(res.stdout.split())
    assert STANDARD_SERVICES <= listed, listed
    assert {s for s in listed if s.startswith("credex.")} == CREDEX_SERVICES[service]


def test_reflection_describes_keywrap(stack):
    res = stack.grpcurl("keywrap", "describe", "credex.v1.KeyWrap")
    assert res.returncode == 0, res.stderr
    for method in ("GenerateDataKey", "Unwrap", "Rewrap", "Describe"):
        assert re.search(rf"\brpc {method}\b", res.stdout), res.stdout


@pytest.mark.parametrize("service,name", [(p, s) for p in SERVICES for s in sorted(CREDEX_SERVICES[p])])
def test_reflection_describes_every_credex_service(stack, service, name):
    res = stack.grpcurl(service, "describe", name)
    assert res.returncode == 0, res.stderr
    assert f"service {name.rsplit('.', 1)[1]} " in res.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_health_serving(stack, service):
    assert stack.health(service) == h.SERVING
    for name in CREDEX_SERVICES[service]:
        assert stack.health(service, name=name) == h.SERVING, name
    err = rpc_error(lambda: stack.health(service, name="no.such.Service"))
    assert err.code() == C.NOT_FOUND


@pytest.mark.parametrize("service", SERVICES)
def test_health_with_grpcurl(stack, service):
    res = stack.grpcurl(service, "grpc.health.v1.Health/Check")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("service", SERVICES)
def test_credexctl_health(stack, service):
    if not stack.credexctl.exists():
        pytest.fail(f"{stack.credexctl} was not built")
    res = stack.credexctl_run("health", "--addr", stack.addrs[service], "--peer", service)
    assert res.returncode == 0, res.stdout + res.stderr
    wrong = "gateway" if service != "gateway" else "store"
    res = stack.credexctl_run("health", "--addr", stack.addrs[service], "--peer", wrong)
    assert res.returncode != 0, f"credexctl accepted {service} as {wrong}"


# ---- who may connect ----------------------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_no_client_certificate_is_refused(stack, service):
    err = rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, identity=None))
    assert err.code() in REFUSED, err


@pytest.mark.parametrize("service", SERVICES)
def test_certificate_from_another_ca_is_refused(stack, test_certs, service):
    cert, key = test_certs.pair("other")
    err = rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, cert=cert, key=key))
    assert err.code() in REFUSED, err


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("which", ["two-uris", "no-uri"])
def test_certificate_without_exactly_one_uri_san_is_refused(stack, test_certs, service, which):
    cert, key = test_certs.pair(which)
    err = rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, cert=cert, key=key))
    assert err.code() in REFUSED, err


@pytest.mark.parametrize("identity", ["credexctl", "intruder", "keywrap", "edge"])
def test_peer_not_on_allow_list_is_permission_denied(stack, test_certs, identity):
    if identity == "intruder":
        cert, key = test_certs.pair("intruder")
    else:
        cert, key = stack.pki.cert(identity), stack.pki.key(identity)
    err = rpc_error(lambda: stack.unary("store", RESOLVE, cert=cert, key=key))
    assert err.code() == C.PERMISSION_DENIED, err


@pytest.mark.parametrize("identity", ["gateway", "oauth"])
def test_allowed_peer_passes_the_allow_list(stack, identity):
    # Resolve with an empty request: past the allow-list, the store's own validation answers.
    err = rpc_error(lambda: stack.unary("store", RESOLVE, identity=identity))
    assert err.code() == C.INVALID_ARGUMENT, err


@pytest.mark.parametrize("identity", ["gateway", "oauth"])
def test_allowed_peer_reaches_an_unimplemented_method(stack, identity):
    method = "/credex.v1.CredentialStore/ListMigrationPreviews"
    err = rpc_error(lambda: stack.unary("store", method, identity=identity))
    assert err.code() == C.UNIMPLEMENTED, err
    assert re.search(r"(issue\s*#?\d+|later issue)", err.details() or "", re.I), \
        f"UNIMPLEMENTED should name the issue that implements it: {err.details()!r}"


def test_an_identity_unknown_to_every_allow_list_can_still_check_health(stack, test_certs):
    cert, key = test_certs.identity("observer", stack.run_dir)
    reply, _ = stack.unary("gateway", h.HEALTH_CHECK, cert=cert, key=key)
    assert reply == h.SERVING


# ---- limits -------------------------------------------------------------------------------------

@pytest.mark.parametrize("service,method", [("keywrap", "/credex.v1.KeyWrap/Nope")] +
                         [(s, "/credex.v1.NoSuchService/Nope") for s in SERVICES])
def test_unknown_method_is_unimplemented_at_once(stack, service, method):
    with stack.channel(service) as ch:
        ch.unary_unary(h.HEALTH_CHECK)(b"", timeout=10)  # connected: only the call itself is timed
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(method)(b"", timeout=10)
        elapsed = time.monotonic() - started
    assert info.value.code() == C.UNIMPLEMENTED, info.value
    assert elapsed < 1.0, f"UNIMPLEMENTED took {elapsed:.3f}s"


@pytest.mark.parametrize("service", SERVICES)
def test_message_over_the_limit_is_resource_exhausted(stack, service):
    # Health/Check is implemented everywhere, so the server must read the request: a
    # HealthCheckRequest whose service name makes it 5 MiB, over the 4 MiB default limit.
    # (An unimplemented method such as KeyWrap/Unwrap may answer UNIMPLEMENTED unread.)
    payload = h.ld_field(1, b"x" * (5 << 20))
    err = rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, payload))
    assert err.code() == C.RESOURCE_EXHAUSTED, err
    assert stack.health(service) == h.SERVING


@pytest.mark.parametrize("service", ["keywrap", "gateway"])
def test_metadata_over_the_limit_is_refused(stack, service):
    # CREDEX_RPC_MAX_METADATA_BYTES defaults to 16 KiB: a 64 KiB header never reaches a handler,
    # and the server keeps serving.
    err = rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK,
                                        metadata=[("x-padding", "p" * (64 << 10))]))
    assert err.code() == C.RESOURCE_EXHAUSTED, err
    assert stack.health(service) == h.SERVING


# ---- correlation id -----------------------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_correlation_id_is_echoed(stack, service):
    cid = f"e2e-{service}-0123456789"
    _, call = stack.unary(service, h.HEALTH_CHECK, metadata=[("x-correlation-id", cid)])
    assert dict(call.initial_metadata()).get("x-correlation-id") == cid


def test_correlation_id_is_created_when_absent_or_invalid(stack):
    for metadata in (None, [("x-correlation-id", "not valid!" * 10)]):
        _, call = stack.unary("gateway", h.HEALTH_CHECK, metadata=metadata)
        cid = dict(call.initial_metadata()).get("x-correlation-id")
        assert cid and CORRELATION_RE.match(cid), cid
        assert "not valid" not in cid


# ---- logs and shutdown --------------------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_logs_are_json_lines(stack, service):
    stack.health(service)
    text = stack.log_text(service)
    assert text.strip(), f"{service} logged nothing"
    bad = h.non_json_lines(text)
    if bad:
        pytest.fail(f"{len(bad)} line(s) of the {service} log are not JSON objects, e.g.:\n"
                    + "\n".join(bad[:5]), pytrace=False)


@pytest.mark.parametrize("service", SERVICES)
def test_sigterm_after_calls_is_clean(stack, test_certs, service):
    inst = stack.spawn(service)
    stack.wait_healthy(inst)
    assert stack.grpcurl(service, "list", addr=inst.addr).returncode == 0
    rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, identity=None, addr=inst.addr))
    cert, key = test_certs.pair("two-uris")
    rpc_error(lambda: stack.unary(service, h.HEALTH_CHECK, cert=cert, key=key, addr=inst.addr))
    rpc_error(lambda: stack.unary(service, "/credex.v1.NoSuchService/Nope", addr=inst.addr))
    for _ in range(20):
        assert stack.health(service, addr=inst.addr) == h.SERVING
    code = inst.stop(signal.SIGTERM)
    log = inst.log_text()
    assert not h.sanitizer_findings(log), log[-4000:]
    assert code == 0, f"{service} exited with {code} after SIGTERM:\n{log[-4000:]}"


def test_sigint_is_clean_too(stack):
    inst = stack.spawn("keywrap")
    stack.wait_healthy(inst)
    code = inst.stop(signal.SIGINT)
    assert not h.sanitizer_findings(inst.log_text())
    assert code == 0, inst.log_text()[-4000:]


@pytest.mark.parametrize("service", SERVICES)
def test_health_watch_streams_and_ends_on_sigterm(stack, service):
    inst = stack.spawn(service)
    stack.wait_healthy(inst)
    with stack.channel(service, addr=inst.addr) as ch:
        stream = ch.unary_stream(h.HEALTH_WATCH)(b"", timeout=30)
        assert next(stream) == h.SERVING
        inst.send_signal(signal.SIGTERM)
        ending = "closed"
        try:
            for update in stream:
                if update == h.NOT_SERVING:
                    ending = "NOT_SERVING"
                    break
                assert update == h.SERVING, update
        except grpc.RpcError as e:
            assert e.code() != C.DEADLINE_EXCEEDED, "Watch did not end when the service stopped"
            ending = f"closed with {e.code()}"
    code = inst.wait_exit()
    assert not h.sanitizer_findings(inst.log_text())
    assert code == 0, f"{service} exited with {code} ({ending}):\n{inst.log_text()[-4000:]}"


@pytest.mark.parametrize("service", SERVICES)
def test_bad_config_value_fails_start_naming_the_variable(stack, service):
    inst = stack.spawn(service, CREDEX_RPC_THREADS="zero")
    code = inst.wait_exit(30)
    log = inst.log_text()
    assert code != 0, f"{service} started with CREDEX_RPC_THREADS=zero"
    assert "CREDEX_RPC_THREADS" in log, log
    assert not h.sanitizer_findings(log), log


def test_run_stop_leaves_no_process_behind(tmp_path):
    try:
        other = h.start_stack(tmp_path / "run")
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    names = ("ferretdb", "openfga", *SERVICES)
    pids = {n: other.pid(n) for n in names}
    assert all(pids.values()), pids
    stack_ports = list(other.ports.values())
    problems = h.stop_stack(other)
    assert not problems, "\n\n".join(problems)
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"{name} (pid {pid}) still runs"
    assert not list((tmp_path / "run" / "pids").glob("*.pid"))
    for port in stack_ports:
        assert h.port_is_free(port), f"port {port} still taken after stop"
    res = h.run_script(h.stack_env(other.run_dir, other.ports, other.build_dir), "status", timeout=30)
    assert res.returncode != 0


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"



def test_openfga_logs_at_warn_by_default(stack):
    """scripts/run starts OpenFGA at warn (CREDEX_OPENFGA_LOG_LEVEL): at info it logs every
    request, tens of MB an hour on an idle stack. Its start-up lines are info, so none may be
    in its log; and the process was told so."""
    pid = stack.pid("openfga")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--log-level") + 1] == b"warn"
    levels = {json.loads(line).get("level") for line in stack.log_text("openfga").splitlines()
              if line.startswith("{")}
    assert "info" not in levels, levels
