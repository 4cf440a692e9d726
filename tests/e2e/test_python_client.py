"""Issue 13, deliverable 4: the Python client of agent runtimes (clients/python), against the
real stack.

The package is installed the way a runtime installs it, `pip install <repo>/clients/python`,
into a fresh virtual environment of this session: a copy of clients/python and proto/ in the
repository's layout (so parallel sessions never share a build folder), no package index and no
build isolation; the e2e venv's site-packages are visible to the new venv through a .pth file
and provide grpcio, protobuf, grpcio-tools, setuptools and wheel. The client runs in its own
interpreter (a small driver, one process per call): this pytest process already imports the
tests' own generated `credex.v1` stubs (credex_api), which would shadow the package's `credex`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

import credex_api as x
import credex_harness as h

DRIVER = r"""
import json, sys
import credex

spec = json.load(sys.stdin)
try:
    with credex.Client(**spec["client"]) as client:
        res = getattr(client, spec["op"])(*spec["args"], **spec["kwargs"])
    out = {"ok": True, "type": type(res).__name__, "repr": repr(res), "str": str(res),
           "value": res.value.hex(), "secret_id": res.secret_id, "version": res.version, "kind": res.kind,
           "correlation_id": res.correlation_id}
except credex.CredexError as e:
    out = {"ok": False, "type": type(e).__name__, "reason": e.reason, "code": e.code.name,
           "correlation_id": e.correlation_id, "from_server": e.from_server, "str": str(e), "repr": repr(e),
           "classes": [c.__name__ for c in type(e).__mro__]}
out["module"] = credex.__file__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def client_python(tmp_path_factory) -> Path:
    """The python of a venv that has clients/python installed with pip."""
    base = tmp_path_factory.mktemp("pyclient")
    src = base / "repo"
    shutil.copytree(h.ROOT / "clients" / "python", src / "clients" / "python",
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    shutil.copytree(h.ROOT / "proto", src / "proto")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    Path(site, "e2e-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
                          "--disable-pip-version-check", str(src / "clients" / "python")],
                         capture_output=True, text=True, timeout=300, env=_clean_env())
    assert res.returncode == 0, f"pip install clients/python failed:\n{res.stdout}\n{res.stderr}"
    return py


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture
def runtime(api, client_python):
    """call(op, *args, peer=, addr=, user_token=..., **kwargs) -> the driver's JSON answer, with
    the client configured as the agent runtime (its certificate, its service token)."""
    tokens: list[str] = []

    def call(op: str, *args, peer: str = x.AGENT, addr: str | None = None, service_token: str | None = None,
             **kwargs) -> dict:
        cert, key = api.identity_pair(peer)
        service_token = service_token or api.tokens.service(peer)
        tokens.extend([service_token, kwargs.get("user_token") or ""])
        spec = {"client": {"target": addr or api.gateway_addr, "ca_file": str(api.stack.pki.ca),
                           "cert_file": str(cert), "key_file": str(key), "service_token": service_token,
                           "server_name": "localhost"},
                "op": op, "args": list(args), "kwargs": kwargs}
        res = subprocess.run([str(client_python), "-c", DRIVER], input=json.dumps(spec), capture_output=True,
                             text=True, timeout=60, env=_clean_env())
        assert res.returncode == 0, f"driver failed:\n{res.stderr}"
        out = json.loads(res.stdout)
        # The package under test, not the tests' generated stubs or the source folder.
        assert out["module"].startswith(str(client_python.parent.parent)), out["module"]
        for t in filter(None, tokens):
            assert t not in out.get("str", "") and t not in out.get("repr", ""), "a token leaked into str/repr"
        return out

    return call


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


def test_exchange_and_inject_before_they_are_built(api, stack, runtime):
    """Today's gateway: Exchange is feature_disabled while CREDENTIAL_EXCHANGE_ENABLED=false (the
    session stack) and unimplemented when it is on; Inject is not served at all. The credential
    exchange work of issue 13 replaces these expectations."""
    user = x.uid("eve")
    kw = {"user_token": api.tokens.on_behalf_of(user, x.AGENT), "resource_context": RESOURCE}
    api.grant_retriever(x.AGENT)
    out = runtime("exchange", "github", ["repo"], **kw)
    assert (out["ok"], out.get("type"), out.get("reason"), out.get("from_server")) == \
        (False, "FeatureDisabled", "feature_disabled", True), out
    gw = stack.spawn("gateway", CREDENTIAL_EXCHANGE_ENABLED="true")
    try:
        stack.wait_healthy(gw)
        out = runtime("exchange", "github", ["repo"], addr=gw.addr, **kw)
        assert (out["ok"], out.get("type"), out.get("reason"), out.get("code"), out.get("from_server")) == \
            (False, "Unimplemented", "unimplemented", "UNIMPLEMENTED", True), out
        out = runtime("inject", "github", ["repo"], addr=gw.addr, **kw)
        assert (out["ok"], out.get("type"), out.get("reason"), out.get("code")) == \
            (False, "Unimplemented", "unimplemented", "UNIMPLEMENTED"), out
    finally:
        assert gw.stop() == 0, h.tail(gw.log_path)
