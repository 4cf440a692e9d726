"""The Python client of agent runtimes (clients/python) as a runtime installs it, for the
black-box tests that use it (test_python_client, test_exchange, test_mcp_impersonation).

`pip install <repo>/clients/python` into a fresh virtual environment of this session: a copy of
clients/python and proto/ in the repository's layout (so parallel sessions never share a build
folder), no package index and no build isolation; the e2e venv's site-packages are visible to the
new venv through a .pth file and provide grpcio, protobuf, grpcio-tools, setuptools and wheel.
The client runs in its own interpreter (a small driver, one process per call): the pytest process
already imports the tests' own generated `credex.v1` stubs (credex_api), which would shadow the
package's `credex`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
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
    out = {"ok": True, "type": type(res).__name__, "repr": repr(res), "str": str(res)}
    # Every field of the result, bytes as hex (a Secret's value, a ProviderToken's material).
    for name in type(res).__slots__:
        v = getattr(res, name)
        out[name] = v.hex() if isinstance(v, bytes) else list(v) if isinstance(v, tuple) else v
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
                         capture_output=True, text=True, timeout=300, env=clean_env())
    assert res.returncode == 0, f"pip install clients/python failed:\n{res.stdout}\n{res.stderr}"
    return py


def clean_env() -> dict[str, str]:
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
                             text=True, timeout=60, env=clean_env())
        assert res.returncode == 0, f"driver failed:\n{res.stderr}"
        out = json.loads(res.stdout)
        # The package under test, not the tests' generated stubs or the source folder.
        assert out["module"].startswith(str(client_python.parent.parent)), out["module"]
        for t in filter(None, tokens):
            assert t not in out.get("str", "") and t not in out.get("repr", ""), "a token leaked into str/repr"
        return out

    return call
