"""The compose stack (compose/), offline: this machine has no container engine, so nothing here
builds an image or starts a container. What is checked: compose.yaml loads as Docker Compose
loads it (compose-go: the compose specification's schema, interpolation, the model's
consistency; tools/go/composecheck), the credex services are wired and hardened as in the chart,
and compose/Dockerfile mirrors the project's own build (scripts/setup's packages, the release
build's CMake line, the libraries the release binaries load) with Debian bookworm bases and a
non-root user in every final stage. docs/OPERATIONS.md lists what stays unverified."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest
import requests
import yaml

import credex_deploy as d
import credex_harness as h

COMPOSE = d.COMPOSE_DIR / "compose.yaml"
DOCKERFILE = d.COMPOSE_DIR / "Dockerfile"
PORTS = {"keywrap": 7101, "store": 7102, "oauth": 7103, "gateway": 7104, "edge": 7105}
DIALS = {  # who dials whom (docs/ARCHITECTURE.md)
    "store": ("keywrap",),
    "oauth": ("store",),
    "gateway": ("store", "oauth"),
    "edge": ("gateway",),
}
# scripts/setup's packages that only tests and development use; the image build leaves them out.
DEV_ONLY = {
    "libcmocka-dev": "unit tests (CREDEX_TESTS=OFF in the image)",
    "clang": "fuzzing and the sanitizer runtime",
    "clang-format": "formatting",
    "libclang-rt-14-dev": "libFuzzer",
    "python3-venv": "the black-box tests' virtualenv",
    "patch": "patches of the Go test tools",
    "gdb": "debugging",
    "maven": "Keycloak's installer (tests)",
    "curl": "the run script's OpenFGA calls (the tools image installs its own)",
    "chromium": "the real-browser test",
    "wrk": "benchmarks",
    "valgrind": "profiling",
}
# Libraries every bookworm-slim image has (essential packages).
BASE_LIBRARY_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def composecheck(path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # A clean environment: the check must not depend on the caller's CREDEX_* variables.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd or path.parent)}
    return subprocess.run([str(d.tool("composecheck")), str(path)], capture_output=True, text=True,
                          env=env, cwd=str(cwd or path.parent), timeout=60)


@pytest.fixture(scope="module")
def project():
    res = composecheck(COMPOSE)
    assert res.returncode == 0, res.stderr
    return {s["name"]: s for s in json.loads(res.stdout)["services"]}


@pytest.fixture(scope="module")
def compose_doc():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_loads_against_the_compose_specification(project):
    assert set(project) == {"mongodb", "postgres", "openfga-migrate", "openfga", "keycloak",
                            "bootstrap", *h.SERVICES}
    for svc in h.SERVICES:
        s = project[svc]
        assert Path(s["build_context"]) == h.ROOT
        assert (Path(s["build_context"]) / s["dockerfile"]).resolve() == DOCKERFILE
        assert s["target"] == "service" and s["build_args"] == [f"SERVICE={svc}"]
    assert project["bootstrap"]["target"] == "tools"


@pytest.mark.parametrize("mutation, named", [
    (lambda doc: doc["services"]["store"].update(enviroment={"X": "1"}), "enviroment"),
    (lambda doc: doc["services"]["edge"]["depends_on"].update(gatewy={"condition": "service_started"}), "gatewy"),
    (lambda doc: doc["services"]["keywrap"].update(read_only="sometimes"), "read_only"),
    (lambda doc: doc["services"]["gateway"].update(ports=["127.0.0.1:7104:notaport"]), "notaport"),
])
def test_composecheck_refuses_a_broken_file(tmp_path, compose_doc, mutation, named):
    doc = yaml.safe_load(COMPOSE.read_text())
    mutation(doc)
    broken = d.COMPOSE_DIR / f".broken-{tmp_path.name}.yaml"  # beside the real one: same relative paths
    broken.write_text(yaml.safe_dump(doc))
    try:
        res = composecheck(broken)
    finally:
        broken.unlink()
    assert res.returncode == 1, res.stdout
    assert named in res.stderr


def addr_port(value: str) -> tuple[str, int]:
    host, port = value.rsplit(":", 1)
    return host, int(port)


def test_credex_services_are_wired_and_hardened(compose_doc, project):
    services = compose_doc["services"]
    for svc in h.SERVICES:
        s = services[svc]
        env = s["environment"]
        assert s["user"] == "10001:10001" and s["read_only"] is True
        assert s["cap_drop"] == ["ALL"] and "no-new-privileges:true" in s["security_opt"]
        assert addr_port(env[f"CREDEX_{svc.upper()}_ADDR"]) == ("0.0.0.0", PORTS[svc])
        assert env[f"CREDEX_{svc.upper()}_OPS_ADDR"] == "0.0.0.0:9090"
        # each container mounts its own directory of the pki volume, nobody else's
        (tls,) = [v for v in s["volumes"] if isinstance(v, dict) and v["source"] == "pki"]
        assert tls["volume"]["subpath"] == svc and tls["read_only"] is True
        assert tls["target"] == str(Path(env["CREDEX_TLS_CERT"]).parent)
        for peer in DIALS.get(svc, ()):
            assert addr_port(env[f"CREDEX_{peer.upper()}_ADDR"]) == (peer, PORTS[peer]), svc
            assert peer in project[svc]["depends_on"]
        assert "bootstrap" in project[svc]["depends_on"]
    # only loopback publishing
    for name, s in project.items():
        for p in s.get("ports", []):
            assert p.startswith("127.0.0.1:"), (name, p)


def test_no_credential_material_in_compose(compose_doc):
    text = COMPOSE.read_text()
    assert not re.search(r"mongodb(\+srv)?://[^\s/@]+:[^\s/@]+@", text)
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY", text)
    for name, s in compose_doc["services"].items():
        env = s.get("environment") or {}
        for var, value in env.items():
            assert not re.search(r"SECRET|PASSWORD|TOKEN$", var), f"{name}: {var} is set inline"
            if re.search(r"_KEY(_FILE)?$", var):  # key material only by path
                assert str(value).startswith("/var/run/credex/"), (name, var)
    oauth = compose_doc["services"]["oauth"]
    assert oauth["env_file"] == [{"path": "oauth.env", "required": False}]
    ignored = (d.COMPOSE_DIR / ".gitignore").read_text().split()
    assert "/oauth.env" in ignored


# ---- the Dockerfile -----------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions with their continuation lines joined, comments dropped, grouped by stage."""
    stages: list[Stage] = []
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "a continuation line ends the file"
    for inst in logical:
        op, _, arg = inst.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arg.strip(), re.IGNORECASE)
            assert m, inst
            stages.append(Stage(m.group(2) or str(len(stages)), m.group(1)))
        else:
            assert stages, f"{op} before FROM"
            stages[-1].instructions.append((op, arg.strip()))
    return stages


def apt_installs(stage: Stage) -> set[str]:
    pkgs = set()
    for run in stage.all("RUN"):
        for cmd in run.split("&&"):
            words = shlex.split(cmd)
            if "apt-get" in words and "install" in words:
                pkgs |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return pkgs


def setup_packages() -> set[str]:
    text = (h.ROOT / "scripts" / "setup").read_text()
    m = re.search(r"^apt_packages=\((.*?)^\)", text, re.S | re.M)
    assert m, "scripts/setup has no apt_packages array"
    return set(m.group(1).split())


@pytest.fixture(scope="module")
def stages():
    return {s.name: s for s in parse_dockerfile(DOCKERFILE.read_text())}


def test_dockerfile_is_multi_stage_on_debian_bookworm(stages):
    assert set(stages) == {"build", "runtime", "service", "tools"}
    for s in stages.values():
        assert s.base in stages or re.fullmatch(r"debian:bookworm(-slim)?", s.base), (s.name, s.base)
    assert stages["build"].base == "debian:bookworm"
    assert stages["runtime"].base == "debian:bookworm-slim"


def test_every_final_stage_runs_as_a_non_root_user(stages, project):
    targets = {s["target"] for s in project.values() if s.get("target")}
    assert targets == {"service", "tools"}
    for name in targets | {"runtime"}:
        users = stages[name].all("USER")
        assert users, name
        user = users[-1].split(":")[0]
        assert user not in ("0", "root") and user.isdigit() and int(user) >= 1000, (name, users)
    st = stages["service"]
    assert st.base == "runtime" and st.all("ARG") == ["SERVICE"]
    # the one service's binary, nothing else from the build
    assert st.all("COPY") == ["--from=build /out/credex-${SERVICE} /usr/local/bin/credex-service"]
    assert st.all("ENTRYPOINT") == ['["/usr/local/bin/credex-service"]']
    build = " ".join(stages["build"].all("RUN"))
    assert all(s in build for s in h.SERVICES)  # every SERVICE value has its binary in /out


def test_build_stage_installs_scripts_setups_packages(stages):
    setup = setup_packages()
    assert set(DEV_ONLY) <= setup, "DEV_ONLY names a package scripts/setup no longer installs"
    assert apt_installs(stages["build"]) == setup - set(DEV_ONLY)


def test_build_stage_configures_and_builds_like_scripts_test(stages):
    text = (h.ROOT / "scripts" / "test").read_text()
    m = re.search(r'cmake -S "\$root" -B "\$rel" (.*?) \\?\n', text)
    assert m, "scripts/test has no release configure line"
    release_flags = m.group(1).split()
    runs = " ".join(stages["build"].all("RUN"))
    m = re.search(r"cmake -S \. -B build/release (.*?) &&", runs)
    assert m, runs
    assert m.group(1).split() == release_flags
    assert "cmake --build build/release" in runs


def needed_libraries(binary: Path) -> set[str]:
    out = subprocess.run(["objdump", "-p", str(binary)], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"NEEDED\s+(\S+)", out))


def packages_of(libs: set[str]) -> dict[str, str]:
    """library file name -> the Debian package that ships it (one dpkg query for all)."""
    res = subprocess.run(["dpkg", "-S", *(f"*/{lib}" for lib in sorted(libs))], capture_output=True, text=True)
    owners = {}
    for line in res.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        owners.setdefault(Path(path).name, pkg.split(":")[0])
    missing = libs - set(owners)
    assert not missing, f"no Debian package ships {sorted(missing)}"
    return owners


def test_runtime_stage_has_the_libraries_the_release_binaries_load(stages):
    release = h.ROOT / "build" / "release"
    binaries = [release / "services" / s / f"credex-{s}" for s in h.SERVICES]
    binaries.append(release / "tools" / "credexctl" / "credexctl")
    missing = [str(b) for b in binaries if not b.exists()]
    assert not missing, f"build the release build first (scripts/test does): {missing}"
    runtime = apt_installs(stages["runtime"])
    needed = {b.name: needed_libraries(b) for b in binaries}
    owners = packages_of(set().union(*needed.values()))
    for name, libs in needed.items():
        assert {owners[lib] for lib in libs} - BASE_LIBRARY_PACKAGES <= runtime, name
    # and nothing the build stage compiles against is missing at run time
    assert "ca-certificates" in runtime


def test_tools_stage_carries_what_bootstrap_runs(stages):
    tools = stages["tools"]
    assert {"bash", "curl", "openssl", "python3"} <= apt_installs(tools)
    for copy in tools.all("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _dest = copy.split()
        for src in sources:
            assert (h.ROOT / src).exists(), src
    assert tools.all("USER")[-1] == "10001:10001"


# ---- the bootstrap, outside its container -------------------------------------------------

def bootstrap_env(stack, tmp_path: Path, **over: str) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if not (bindir / "credexctl").exists():
        (bindir / "credexctl").symlink_to(stack.build_dir / "tools" / "credexctl" / "credexctl")
    env = h.clean_base_env() | {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "CREDEX_BOOTSTRAP_ROOT": str(h.ROOT),  # the repository has the image's layout
        "CREDEX_BOOTSTRAP_PKI_DIR": str(tmp_path / "pki"),
        "CREDEX_BOOTSTRAP_STATE_DIR": str(tmp_path / "state"),
        "CREDEX_MONGO_URI": stack.env["CREDEX_MONGO_URI"],
        "CREDEX_MONGO_DB": "credex_compose_bootstrap",
        "CREDEX_OPENFGA_URL": stack.env["CREDEX_OPENFGA_URL"],
    }
    (tmp_path / "pki").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    return env | over


def run_bootstrap(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(d.COMPOSE_DIR / "bootstrap.sh")], env=env, capture_output=True,
                          text=True, timeout=180)


def san_of(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout


def index_names(mongo_uri: str, db: str) -> dict[str, set[str]]:
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        database = client[db]
        return {c: set(database[c].index_information()) for c in database.list_collection_names()}


def test_bootstrap_prepares_pki_openfga_and_indexes_idempotently(stack, tmp_path):
    """compose/bootstrap.sh run as the compose stack runs it, but on this machine: against the
    test stack's FerretDB and OpenFGA, with the test build's credexctl."""
    env = bootstrap_env(stack, tmp_path)
    first = run_bootstrap(env)
    assert first.returncode == 0, first.stdout + first.stderr
    pki = tmp_path / "pki"
    for name in (*h.SERVICES, "keycloak", "credexctl"):
        files = {p.name for p in (pki / name).iterdir()}
        assert {"ca.pem", "tls.pem", "tls.key"} <= files, name
        assert files - {"ca.pem", "tls.pem", "tls.key"} == ({"local-cmk.key"} if name == "keywrap" else set())
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(pki / name / "ca.pem"),
                                 str(pki / name / "tls.pem")], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        mode = (pki / name / "tls.key").stat().st_mode & 0o777
        assert mode == (0o644 if name == "keycloak" else 0o600), (name, oct(mode))
        if name in h.SERVICES:
            san = san_of(pki / name / "tls.pem")
            # the identity, and the compose host name peers dial (gRPC checks it)
            assert f"URI:spiffe://credex.local/{name}" in san and f"DNS:{name}" in san, san
    assert re.fullmatch(r"[0-9a-f]{64}\n?", (pki / "keywrap" / "local-cmk.key").read_text())
    assert (pki / "keywrap" / "local-cmk.key").stat().st_mode & 0o777 == 0o600
    # the CA's key stays in its own directory, which no container mounts
    assert [p.parent.name for p in pki.glob("*/*.key") if p.name == "ca.key"] == [".ca"]

    state = (tmp_path / "state" / "openfga.env").read_text()
    store = re.search(r"^export CREDEX_OPENFGA_STORE_ID=(\w+)$", state, re.M).group(1)
    model = re.search(r"^export CREDEX_OPENFGA_MODEL_ID=(\w+)$", state, re.M).group(1)
    fga = stack.env["CREDEX_OPENFGA_URL"]
    assert requests.get(f"{fga}/stores/{store}/authorization-models/{model}", timeout=10).status_code == 200

    # the same indexes as scripts/run's bootstrap of the stack's own database
    assert index_names(env["CREDEX_MONGO_URI"], "credex_compose_bootstrap") == \
        index_names(env["CREDEX_MONGO_URI"], stack.env["CREDEX_MONGO_DB"])

    certs = {n: (pki / n / "tls.pem").read_bytes() for n in h.SERVICES}
    second = run_bootstrap(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "state" / "openfga.env").read_text() == state  # same store, same model
    assert {n: (pki / n / "tls.pem").read_bytes() for n in h.SERVICES} == certs


def test_bootstrap_fails_when_openfga_is_unreachable(stack, tmp_path):
    (port,) = h.free_ports(1)
    res = run_bootstrap(bootstrap_env(stack, tmp_path, CREDEX_OPENFGA_URL=f"http://127.0.0.1:{port}"))
    assert res.returncode != 0
    assert "OpenFGA" in res.stderr
    assert not (tmp_path / "state" / "openfga.env").exists()
