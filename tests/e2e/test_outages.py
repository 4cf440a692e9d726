"""Issue 4, deliverable 6: outages fail closed, service resumes, and a canary value never leaks.

This module runs its own stack (a second `scripts/run start` on other free ports, data-key cache
disabled so that a keywrap outage is visible to every retrieval) because it stops dependencies:
FerretDB, OpenFGA and keywrap in turn, each by SIGTERM to the process scripts/run started (pid
from the run folder). While one is down, a retrieval answers `unavailable` within its deadline and
never a secret; the test then starts the process again with the same command line and environment
(read from /proc before stopping it) and waits, bounded, for retrieval to work again.

OpenFGA is the one dependency whose answers the gateway caches (docs/AUTHZ_CACHE.md): a cached
check answer is served only while the gateway's last successful poll of OpenFGA's changelog
started less than 3 * CREDEX_OPENFGA_WATCH_MS ago. So for up to that bound after OpenFGA is gone
a retrieval may still be answered from memory; the test waits out exactly that bound (set
explicitly for this stack) after the process is gone, and only then expects `unavailable` for
every call, within the same deadline as the other outages.

The last test measures the database down state (common/mdb): with FerretDB stopped, store-bound
calls (GetSecret, a Retrieve that store would deny) answer `unavailable` within 300 ms once
store knows the database is down, a Retrieve the gateway denies waits for nothing but its audit
write, and service resumes within 1 s of FerretDB listening again.

The secret retrieved throughout is a canary: a unique value that, after lifecycle calls, denials,
conflicts, invalid requests and the outages, must appear in no log file of the run folder, in no
database file on disk, and in no error message the tests saw.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

import credex_api as x
import credex_harness as h

C = grpc.StatusCode
DEADLINE = 8.0  # client deadline of every retrieval during an outage
RESUME_TIMEOUT = 60.0
WATCH_MS = 100  # CREDEX_OPENFGA_WATCH_MS of this stack (also the default)
# After OpenFGA is gone, the gateway may answer from its check cache for at most this long.
FGA_CACHE_BOUND = 3 * WATCH_MS / 1000
SEEN_ERRORS: list[str] = []
ALL_CANARIES: list[bytes] = []  # every canary value sent (created, rotated, or refused)
# Admin.GetHealth, taken while each dependency was down, and the component that must say so.
HEALTH_DURING_OUTAGE: dict = {}
COMPONENT = {"ferretdb": "credential_store", "openfga": "policy_service", "keywrap": "key_wrapper"}


class Process:
    """One process of a scripts/run stack that a test stops and starts again."""

    def __init__(self, stack: h.Stack, name: str):
        self.stack, self.name = stack, name
        pid = stack.pid(name)
        assert pid, f"no pid for {name}"
        proc = Path(f"/proc/{pid}")
        self.argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        self.env = dict(e.decode(errors="replace").split("=", 1)
                        for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        self.cwd = os.readlink(proc / "cwd")
        self.pid = pid
        self.popen: subprocess.Popen | None = None
        self.restarts = 0

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state != "Z"

    def stop(self, timeout: float = 20) -> None:
        if self.popen is not None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        x.wait_until(lambda: not self.alive(), 10, what=f"{self.name} gone")

    def start(self) -> None:
        self.restarts += 1
        log = self.stack.run_dir / "logs" / f"{self.name}-restart-{self.restarts}.log"
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def exit_code(self) -> int | None:
        return self.popen.returncode if self.popen is not None else self.stack.exit_code(self.name)


@pytest.fixture(scope="module")
def outage(tmp_path_factory):
    """(stack, api, processes) of a private stack."""
    run_dir = tmp_path_factory.mktemp("credex-outage-run")
    try:
        stack = h.start_stack(run_dir, extra_env={"CREDEX_DEK_CACHE_MAX_ENTRIES": "0",
                                                  "CREDEX_DEK_CACHE_TTL_MS": "0",
                                                  "CREDEX_OPENFGA_WATCH_MS": str(WATCH_MS)})
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    api = x.Api(stack, tmp_path_factory.mktemp("outage-certs"))
    procs: dict[str, Process] = {}
    yield stack, api, procs
    api.close()
    problems = []
    # Our own restarted credex processes first (scripts/run does not know them), then the rest.
    for name, p in procs.items():
        if p.popen is not None and name in h.SERVICES and p.popen.poll() is None:
            p.stop()
            if p.popen.returncode != 0:
                problems.append(f"restarted {name} exited with {p.popen.returncode}")
    problems += h.stop_stack(stack)
    for name, p in procs.items():
        if p.popen is not None and p.popen.poll() is None:
            p.stop()
    if problems:
        pytest.fail("outage stack teardown:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def canary(outage):
    """(owner, secret id, values) of the canary secret, retrievable before any outage."""
    stack, api, _ = outage
    api.grant_retriever(x.AGENT)
    owner = x.uid("canary-owner")
    first = canary_value()
    sid = api.ui(owner).create(first, name="canary").secret.secret_id
    assert api.agent(owner).retrieve(sid).value == first
    second = canary_value()
    api.ui(owner).rotate(sid, second, expected_version=1)
    assert api.agent(owner).retrieve(sid).value == second
    return owner, sid, [first, second]


WORDS = ("amber", "basil", "cedar", "delta", "ember", "fjord", "gecko", "harbor", "indigo", "juniper",
         "kettle", "lagoon", "meadow", "nectar", "orchid", "pepper", "quartz", "raven", "saffron", "tundra",
         "umber", "velvet", "willow", "xenon", "yonder", "zephyr", "anchor", "bramble", "citron", "dune",
         "falcon", "garnet")


def canary_value() -> bytes:
    """A unique canary made of words: the logger redacts random-looking runs, so a random canary
    that leaked into a log could show up as "[redacted]" and hide the leak; words are kept."""
    bits = uuid.uuid4().int
    words = [WORDS[(bits >> (5 * i)) & 31] for i in range(8)]
    value = ("canary-" + "-".join(words)).encode()
    ALL_CANARIES.append(value)
    return value


def remember(err: grpc.RpcError) -> grpc.RpcError:
    SEEN_ERRORS.append(f"{err.code()} {x.reason(err)} {err.details()}")
    for key, value in err.trailing_metadata() or ():
        SEEN_ERRORS.append(f"{key}={value}")
    return err


def retrieve_during_outage(api, owner: str, sid: str, values: list[bytes],
                           cid: str | None = None) -> grpc.RpcError:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        reply = api.agent(owner).retrieve(sid, timeout=DEADLINE, cid=cid)
        assert reply.value not in values, "a secret came back while a dependency was down"
    elapsed = time.monotonic() - started
    err = remember(info.value)
    assert (err.code(), x.reason(err)) == (C.UNAVAILABLE, "unavailable"), x.describe(err)
    assert elapsed < DEADLINE + 1, f"the answer took {elapsed:.2f}s"
    return err


def resumes(api, owner: str, sid: str, expected: bytes, what: str) -> None:
    def ok():
        return api.agent(owner).retrieve(sid, timeout=DEADLINE).value == expected
    x.wait_until(ok, RESUME_TIMEOUT, interval=0.5, what=f"retrieval after {what} is back")


@pytest.mark.parametrize("dependency", ["ferretdb", "openfga", "keywrap"])
def test_dependency_outage_fails_closed_and_recovers(outage, canary, dependency):
    stack, api, procs = outage
    owner, sid, values = canary
    proc = procs.setdefault(dependency, Process(stack, dependency))
    assert api.agent(owner).retrieve(sid).value == values[-1]
    proc.stop()
    if dependency == "openfga":
        # The bound of the gateway's check cache (module docstring), counted from the moment the
        # process is gone, which is after the last poll that could still succeed had started.
        time.sleep(FGA_CACHE_BOUND)
    cids = [x.cid(), x.cid()]
    try:
        for cid in cids:
            retrieve_during_outage(api, owner, sid, values, cid)
        # Credential health fails closed too, and says which component is down.
        health = api.ui(owner).call("Admin", "GetHealth", api.pb.gateway.GetHealthRequest(), timeout=DEADLINE)
        HEALTH_DURING_OUTAGE[dependency] = health  # judged by test_health_fails_closed_during_outages
        # Lifecycle calls fail closed too (never a half-done rotation that returns material).
        if dependency != "openfga":
            with pytest.raises(grpc.RpcError) as info:
                api.ui(owner).rotate(sid, canary_value(), expected_version=2,
                                     timeout=DEADLINE)
            remember(info.value)
            assert x.reason(info.value) == "unavailable", x.describe(info.value)
    finally:
        proc.start()
    resumes(api, owner, sid, values[-1], dependency)
    if dependency in h.SERVICES:
        assert proc.popen.poll() is None, f"restarted {dependency} ended"
    # One audit event per failed retrieval, written by whoever decided it: the gateway when
    # OpenFGA is down, store when keywrap is. With the database down nothing can be written
    # (the failure is only logged), and nothing is written late either.
    client, db = api.mongo()
    with client:
        for cid in cids:
            events = [(e["event_type"], e["outcome"], e["reason"])
                      for e in db.credential_audit_events.find({"correlation_id": cid})]
            want = [] if dependency == "ferretdb" else [("secret.retrieved", "failed", "unavailable")]
            assert events == want, (dependency, events)


@pytest.mark.parametrize("dependency", ["ferretdb", "openfga", "keywrap"])
def test_health_fails_closed_during_outages(outage, dependency):
    """An operational check of docs/REQUIREMENTS.md: health fails closed when MongoDB, KMS or OpenFGA is down."""
    stack, api, _ = outage
    health = HEALTH_DURING_OUTAGE.get(dependency)
    assert health is not None, f"no health reading was taken while {dependency} was down"
    component = {c.component: c for c in health.components}.get(COMPONENT[dependency])
    assert component is not None, health
    assert health.status == api.pb.gateway.HEALTH_STATUS_DOWN, health
    assert component.status == api.pb.gateway.HEALTH_STATUS_DOWN, health
    assert component.reason == "unavailable", health


def test_canary_errors(outage, canary):
    """Errors around the canary secret, whose messages are checked in the next test."""
    stack, api, _ = outage
    owner, sid, values = canary
    calls = [
        lambda: api.agent(x.uid("stranger")).retrieve(sid),             # not_found
        lambda: api.browser(owner).retrieve(sid),                        # browser_denied
        lambda: api.agent(owner, service=x.UNLISTED).retrieve(sid),      # permission_denied
        lambda: api.agent(owner).retrieve(sid, intended_use=None),       # invalid_argument
        lambda: api.ui(owner).rotate(sid, values[0], expected_version=1),  # conflict
        lambda: api.ui(owner).create(values[0], name="x" * 500),         # invalid_argument
        lambda: api.ui(owner).create(values[0] * 3000),                  # value over 64 KiB
        lambda: api.agent(owner, service_token=api.tokens.service(x.AGENT, ttl=-3600)).retrieve(sid),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        remember(info.value)


def test_canary_never_appears_in_logs_data_or_errors(outage, canary):
    stack, api, _ = outage
    owner, sid, values = canary
    # One more full round after everything, so the last calls are in the logs too.
    assert api.agent(owner).retrieve(sid).value == values[-1]
    assert set(values) <= set(ALL_CANARIES)
    forms = [f for v in ALL_CANARIES for f in x.encodings(v)]
    logs = sorted((stack.run_dir / "logs").glob("*.log"))
    assert {"store.log", "keywrap.log", "gateway.log"} <= {p.name for p in logs}
    for path in logs:
        data = path.read_bytes()
        leaked = [f for f in forms if f in data]
        assert not leaked, f"canary value in {path}"
    for path in (stack.run_dir / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [f for f in forms if f in data], f"canary value in plaintext in {path}"
    assert SEEN_ERRORS, "no errors were observed"
    for message in SEEN_ERRORS:
        assert not [f for f in forms if f.decode() in message], f"canary value in an error: {message}"


# The database down state of common/mdb, seen through the gateway: while FerretDB is gone every
# store-bound call answers at once (a denial included) instead of waiting out the database
# timeout, and service resumes within a second of FerretDB listening again.
FAST = 0.3    # seconds: a call with the database known to be down
RESUME = 1.0  # seconds: from FerretDB listening again to a call that works


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def timed_failure(call) -> tuple[float, grpc.RpcError]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call()
    return time.monotonic() - started, remember(info.value)


def test_database_down_answers_at_once_and_resumes_within_a_second(outage):
    stack, api, procs = outage
    api.grant_retriever(x.AGENT)
    owner = x.uid("swift-owner")
    value = b"database-down-value"
    sid = api.ui(owner).create(value, name="swift", allowed_uses=["ci.deploy"]).secret.secret_id
    assert api.agent(owner).retrieve(sid, intended_use="ci.deploy").value == value
    if "ferretdb" not in procs:  # (an earlier test may have restarted it already)
        procs["ferretdb"] = Process(stack, "ferretdb")
    proc = procs["ferretdb"]
    port = stack.ports["ferretdb"]
    calls = {
        "GetSecret by the owner": lambda: api.ui(owner).get(sid, timeout=DEADLINE),
        # denied by store (a use outside allowed_uses), had it been able to read the secret
        "Retrieve for a use not allowed": lambda: api.agent(owner).retrieve(sid, timeout=DEADLINE),
    }
    proc.stop()
    try:
        # Store learns of the outage from a failed call (which may wait out the database
        # timeout) or its prober (250 ms), whichever comes first.
        x.wait_until(lambda: x.reason(timed_failure(calls["GetSecret by the owner"])[1]) == "unavailable",
                     10, interval=0.05, what="store to know the database is down")
        slowest = {}
        for name, call in calls.items():
            for _ in range(3):
                elapsed, err = timed_failure(call)
                assert (err.code(), x.reason(err)) == (C.UNAVAILABLE, "unavailable"), (name, x.describe(err))
                assert elapsed < FAST, f"{name} took {elapsed:.3f}s with the database down"
                slowest[name] = max(slowest.get(name, 0.0), elapsed)
        # Denied by the gateway (no use on the secret): the denial waits for nothing but its
        # own audit write, which store refuses at once; the gateway's answer is its own rule.
        for _ in range(3):
            elapsed, err = timed_failure(lambda: api.agent(x.uid("stranger")).retrieve(sid, timeout=DEADLINE))
            assert x.reason(err) in ("not_found", "unavailable"), x.describe(err)
            assert elapsed < FAST, f"a denied Retrieve took {elapsed:.3f}s with the database down"
            slowest["Retrieve denied by the gateway"] = max(slowest.get("Retrieve denied by the gateway", 0.0),
                                                            elapsed)
    finally:
        proc.start()
    deadline = time.monotonic() + 30
    while not port_open(port):
        assert time.monotonic() < deadline, "FerretDB did not listen again"
        time.sleep(0.005)
    listening = time.monotonic()

    def works():
        try:
            return api.ui(owner).get(sid, timeout=DEADLINE).secret_id == sid
        except grpc.RpcError:
            time.sleep(0.02)
            return False
    x.wait_until(works, 30, interval=0.0, what="GetSecret after FerretDB is back")
    resumed = time.monotonic() - listening
    print(f"database down: slowest answers {slowest}; resumed {resumed:.3f}s after FerretDB listened")
    assert resumed < RESUME, f"service resumed {resumed:.3f}s after FerretDB listened again"
    assert api.agent(owner).retrieve(sid, intended_use="ci.deploy").value == value


# The store's metadata cache (docs/DOCUMENT_CACHE.md) fails closed: it answers Resolve from memory
# only while its watcher can read the database, and stops at once when a read fails or the store
# knows the database is down, at the latest its bound after its last successful read.
METADATA_BOUND = 0.3  # CREDEX_STORE_METADATA_CACHE_BOUND_MS of this stack (the default)


def test_metadata_cache_stops_answering_when_the_database_is_gone(outage):
    """A secret is served (its metadata cached and in use), then FerretDB stops. No retrieval
    gets the value, and a retrieval for a use the secret does not allow, which store can refuse
    only from the metadata, answers `unavailable` (the metadata cannot be read) from the bound
    on, never `permission_denied` from memory; store logs that its cache stopped answering, and
    that it answers again once FerretDB is back."""
    stack, api, procs = outage
    api.grant_retriever(x.AGENT)
    owner = x.uid("cached-owner")
    value = b"metadata-cache-outage-value"
    sid = api.ui(owner).create(value, name="cached", allowed_uses=["ci.deploy"]).secret.secret_id
    for _ in range(5):
        assert api.agent(owner).retrieve(sid, intended_use="ci.deploy").value == value
        time.sleep(0.03)
    if "ferretdb" not in procs:  # (an earlier test may have restarted it already)
        procs["ferretdb"] = Process(stack, "ferretdb")
    proc = procs["ferretdb"]
    log_from = len(stack.log_text("store"))
    proc.stop()
    gone = time.monotonic()
    last_from_memory = None
    try:
        while time.monotonic() - gone < 3 * METADATA_BOUND:
            retrieve_during_outage(api, owner, sid, [value])  # never the value
            started = time.monotonic()
            elapsed, err = timed_failure(lambda: api.agent(owner).retrieve(sid, timeout=DEADLINE))
            assert value not in (err.details() or "").encode()
            if x.reason(err) == "permission_denied":
                last_from_memory = started - gone
            else:
                assert (err.code(), x.reason(err)) == (C.UNAVAILABLE, "unavailable"), x.describe(err)
        print(f"database gone: last refusal decided from cached metadata {last_from_memory} s after "
              f"FerretDB had stopped (bound {METADATA_BOUND} s)")
        assert last_from_memory is None or last_from_memory < METADATA_BOUND
        log = stack.log_text("store")[log_from:]
        assert "store.metadata_cache_disabled" in log, "store did not say its cache stopped answering"
    finally:
        proc.start()
    x.wait_until(lambda: "store.metadata_cache_enabled" in stack.log_text("store")[log_from:], RESUME_TIMEOUT,
                 what="the metadata cache to answer again")

    def served():
        try:
            return api.agent(owner).retrieve(sid, intended_use="ci.deploy", timeout=DEADLINE).value == value
        except grpc.RpcError:
            return False
    x.wait_until(served, RESUME_TIMEOUT, interval=0.2, what="retrieval after FerretDB is back")
