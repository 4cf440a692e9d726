"""What the chart and compose tests share: the deployment tools scripts/setup builds (helm,
kubecheck, composecheck), rendering the chart, and reading YAML documents. No container engine
or cluster is involved: everything here runs offline."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

import credex_harness as h

CHART = h.ROOT / "charts" / "credex"
PRODUCTION_VALUES = CHART / "examples" / "values-production.yaml"
COMPOSE_DIR = h.ROOT / "compose"
CRD_DIR = h.TOOLS / "share" / "kubecheck"


def tool(name: str) -> Path:
    """The path of a Go tool scripts/setup installs; a missing one is a set-up error, not a skip:
    the deployment checks must not pass by not running."""
    path = h.TOOLS / "bin" / name
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: run scripts/setup (it builds {name} once)")
    return path


def crd_args() -> list[str]:
    crds = sorted(CRD_DIR.glob("*.yaml"))
    if not crds:
        raise AssertionError(f"no CRDs in {CRD_DIR}: run scripts/setup (tools/go/kubecheck/crds.txt)")
    return [a for c in crds for a in ("--crd", str(c))]


def helm_env(home: Path) -> dict[str, str]:
    """helm with its cache, config and data in a test folder (nothing in the user's home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    return env


def helm(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("helm")), *args], capture_output=True, text=True,
                          env=helm_env(home), timeout=120)


def render(home: Path, *values: Path | str, extra: tuple[str, ...] = ()) -> str:
    """`helm template` of the chart (release credex in namespace credex) with the values files
    given; fails the test with helm's message when it refuses."""
    args = ["template", "credex", str(CHART), "--namespace", "credex"]
    for v in values:
        args += ["-f", str(v)]
    res = helm(home, *args, *extra)
    assert res.returncode == 0, f"helm template failed:\n{res.stderr}"
    return res.stdout


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def kubecheck(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool("kubecheck")), *crd_args()], input=text, capture_output=True,
                          text=True, timeout=120)


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
