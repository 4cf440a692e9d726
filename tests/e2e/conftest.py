"""Fixtures of the credex black-box tests.

`stack`: the whole stack, started once per session by `scripts/run start` from build/test (the
ASan+UBSan build that scripts/test has just built) in a fresh runtime folder on free ports. At the
end it is stopped with `scripts/run stop`, and the session FAILS if any credex service ended with a
non-zero code or wrote a sanitizer report (AddressSanitizer, LeakSanitizer, UBSan) to its log.

`test_certs`: test-only certificates made by scripts/lib/pki.sh (foreign CA, two URI SANs, no
URI SAN, an unknown identity) for the stack's CA.

`api`: credex_api.Api on the session stack: generated stubs, dev JWTs, the UI / browser /
agent-runtime callers, OpenFGA tuple writes and a MongoDB client (issue 4 tests).

`providers`: the provider test servers (tests/e2e/providers: GitHub, Atlassian, Webex, PagerDuty,
GitLab, a generic OAuth 2.0 / OIDC provider, a canary) on loopback with a test CA made in the
session's temp dir, started once per session before the stack. The stack's services get
CREDEX_OAUTH_TEST_CONNECT_TO (provider host:443 -> the servers' ports) and CREDEX_OAUTH_CA_FILE;
so do processes spawned from it (stack.env). A test that starts a service with
CREDEX_PRODUCTION=true must pass CREDEX_OAUTH_TEST_CONNECT_TO="" (production refuses it).

`keycloak`: a real Keycloak (tests/e2e/keycloak.py), started once per session only when a test asks
for it, https on a free loopback port with a certificate from the provider servers' CA, realms from
deploy/keycloak/ (docs/KEYCLOAK.md).

`nocache`: a private gateway + store pair on the session stack whose store has no data-key cache,
no payload cache and no metadata cache (every retrieval reads the metadata and the payload and
unwraps through keywrap): (gateway Instance, store Instance).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import credex_harness as h  # noqa: E402


@pytest.fixture(scope="session")
def providers(tmp_path_factory):
    from providers import ProviderSims

    sims = ProviderSims(tmp_path_factory.mktemp("providers")).start()
    yield sims
    sims.stop()


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory, providers):
    import keycloak as kc

    try:
        server = kc.start(tmp_path_factory.mktemp("keycloak"), providers.ca)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    kc.stop(server)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, providers):
    # spawn_env: processes spawned from the stack reach the providers too
    with h.running_stack(tmp_path_factory.mktemp("credex-run"), "credex stack",
                         spawn_env=providers.env()) as s:
        yield s


@pytest.fixture(autouse=True)
def _stack_survives_each_test(request):
    """A stack service that dies during a test fails that very test, with its log (later
    tests that need the service then fail with UNAVAILABLE)."""
    if "stack" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("stack")
    dead_before = {name for name in h.SERVICES if s.exit_code(name) is not None}
    yield
    dead = [name for name in h.SERVICES if s.exit_code(name) is not None and name not in dead_before]
    if dead:
        pytest.fail("stack service(s) ended during this test: " + ", ".join(
            f"{n} (exit {s.exit_code(n)}):\n{h.tail(s.log_path(n))}" for n in dead), pytrace=False)


class CertSet:
    """Paths of the test-only certificates; `pair(name)` is (cert, key)."""

    def __init__(self, directory: Path):
        self.dir = directory

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def identity(self, name: str, run_dir: Path) -> tuple[Path, Path]:
        """A certificate from our CA for spiffe://credex.local/<name>."""
        res = h.run_pki(run_dir, "pki_make_identity_cert", str(self.dir), name)
        assert res.returncode == 0, res.stderr
        return self.pair(name)


@pytest.fixture(scope="session")
def test_certs(stack, tmp_path_factory) -> CertSet:
    directory = tmp_path_factory.mktemp("test-certs")
    res = h.run_pki(stack.run_dir, "pki_make_test_certs", str(directory))
    assert res.returncode == 0, f"pki_make_test_certs failed:\n{res.stderr}"
    return CertSet(directory)


@pytest.fixture(scope="session")
def api(stack, tmp_path_factory):
    import credex_api

    a = credex_api.Api(stack, tmp_path_factory.mktemp("api-certs"))
    yield a
    a.close()


@pytest.fixture(scope="session")
def nocache(stack):
    """A private gateway + store pair whose store caches neither data keys
    (CREDEX_DEK_CACHE_MAX_ENTRIES=0) nor payload documents (CREDEX_PAYLOAD_CACHE_MAX_ENTRIES=0)
    nor secret metadata (CREDEX_STORE_METADATA_CACHE_ENTRIES=0): every retrieval reads the
    metadata and the stored payload, unwraps its wrapped key through keywrap and opens its
    ciphertext, so tampering with the database shows at the very next retrieval (a cached key,
    payload or metadata document, sound when it was cached, would serve the original value
    instead, for its bound). Yields (gateway Instance, store Instance)."""
    gateway, store = stack.spawn_pair(CREDEX_DEK_CACHE_MAX_ENTRIES="0", CREDEX_DEK_CACHE_TTL_MS="0",
                                      CREDEX_PAYLOAD_CACHE_MAX_ENTRIES="0",
                                      CREDEX_STORE_METADATA_CACHE_ENTRIES="0")
    yield gateway, store
    codes = stack.stop_pair(gateway, store)
    if codes != {"gateway": 0, "store": 0}:
        pytest.fail(f"nocache pair exit codes {codes}:\n{h.tail(gateway.log_path)}\n{h.tail(store.log_path)}",
                    pytrace=False)
