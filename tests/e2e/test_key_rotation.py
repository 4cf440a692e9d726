"""Issue 14, deliverable 2: online CMK rotation (docs/KEY_ROTATION.md).

A private stack (the rotation moves every data key of its database, which the session stack's
other tests must not see). Each case reconfigures keywrap the way an operator does: a keywrap
process on the new CMK and a store + gateway pair in front of it (the stack's own keywrap keeps
the old CMK, like a replica not yet rolled), then `credexctl keys rewrap` against that store.
With local-cmk, any CMK id under the same root unwraps, so keys under the old CMK stay readable
throughout, which is what the retrievals running during the rotation check.

Cases: a CMK id change under continuous traffic (retrievals, creates and rotations: no call
fails, every value is intact, every key moves, one audit event per key with the run id, a second
run moves nothing); a run killed with SIGKILL and run again (the sum of both runs is every key
exactly once); a tampered payload (another payload's wrapped key copied into it) reported as
integrity_error and audited while the rest move; keywrap killed during a run (unavailable, and
every payload either fully moved and audited or untouched); the RPC's peers and inputs; and,
with the retired local-cmk root (CREDEX_LOCAL_CMK_RETIRED_KEY_FILE), a new root file and then
local-cmk to aws-kms (the local-kms emulator of test_kms.py), each followed by a keywrap
without the retired root that still reads every secret of the module.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import signal
import subprocess
import threading
import time

import grpc
import pytest

import credex_api as x
import credex_harness as h

# Every secret made in this module and its current value (the cases run in file order on one
# stack; the last one moves everything to aws-kms and reads all of them back).
KNOWN: dict[str, tuple[str, bytes]] = {}
PAYLOADS = "credential_encrypted_payloads"
EVENTS = "credential_audit_events"
CMK_A = "alias/credex-local"  # scripts/run's CREDENTIAL_KMS_CMK_ID


@pytest.fixture(scope="module")
def rot(tmp_path_factory, providers):
    with h.running_stack(tmp_path_factory.mktemp("rotation"), "rotation stack",
                         spawn_env=providers.env()) as stack:
        api = x.Api(stack, tmp_path_factory.mktemp("rotation-certs"))
        try:
            api.grant_retriever(x.AGENT)
            yield stack, api
        finally:
            api.close()


@contextlib.contextmanager
def keywrap_on(stack, cmk: str, **kw_env):
    """keywrap on CMK `cmk` and a store + gateway pair using it: (keywrap, gateway, store)."""
    kw = stack.spawn("keywrap", CREDENTIAL_KMS_CMK_ID=cmk, **kw_env)
    try:
        stack.wait_healthy(kw)
        gateway, store = stack.spawn_pair(CREDEX_KEYWRAP_ADDR=kw.addr)
        try:
            yield kw, gateway, store
        finally:
            codes = stack.stop_pair(gateway, store)
            assert codes == {"gateway": 0, "store": 0}, (codes, h.tail(store.log_path))
    finally:
        if kw.proc.poll() is None:
            assert kw.stop() == 0, h.tail(kw.log_path)


def ctl_env(stack, store_addr: str) -> dict[str, str]:
    return h.clean_base_env() | stack.env | {
        "CREDEX_TLS_CERT": str(stack.pki.cert(h.CLI_IDENTITY)),
        "CREDEX_TLS_KEY": str(stack.pki.key(h.CLI_IDENTITY)),
        "CREDEX_STORE_ADDR": store_addr,
    }


def rewrap(stack, store_addr: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(stack.credexctl), "keys", "rewrap", *args], env=ctl_env(stack, store_addr),
                          capture_output=True, text=True, timeout=timeout)


def rewrap_on_terminal(stack, store_addr: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """rewrap with stderr on a pseudo-terminal: (result, what the terminal showed)."""
    import os
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(stack.credexctl), "keys", "rewrap", *args], env=ctl_env(stack, store_addr),
                                stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other side is gone: the process ended
                break
            if not chunk:
                break
            shown += chunk
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), shown.decode(errors="replace")


def report(res: subprocess.CompletedProcess) -> dict:
    """The --json report of a run."""
    try:
        return json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {res.returncode}):\n{res.stdout}\n{res.stderr}") from None


def payloads(api) -> list[dict]:
    client, db = api.mongo()
    try:
        return list(db[PAYLOADS].find({}, {"ciphertext": 0, "nonce": 0, "tag": 0}))
    finally:
        client.close()


def events(api, event_type: str, run_id: str) -> list[dict]:
    client, db = api.mongo()
    try:
        return list(db[EVENTS].find({"event_type": event_type, "attributes.run_id": run_id}))
    finally:
        client.close()


def under(api, cmk: str) -> tuple[int, int]:
    """(payloads under local-cmk `cmk`, all payloads)."""
    docs = payloads(api)
    return sum(d["key_provider"] == "local-cmk" and d["key_id"] == cmk for d in docs), len(docs)


def make_secrets(api, n: int, tag: str) -> dict[str, tuple[str, bytes]]:
    """n secrets of fresh users (every third one rotated once): {secret id: (user, current value)},
    also kept in KNOWN."""
    out = {}
    for i in range(n):
        user = x.uid(f"rot{tag}")
        value = f"rot-{tag}-{i}-{secrets.token_hex(8)}".encode()
        sid = api.ui(user).create(value).secret.secret_id
        if i % 3 == 0:
            value = f"rot-{tag}-{i}-v2-{secrets.token_hex(8)}".encode()
            api.ui(user).rotate(sid, value)
        out[sid] = (user, value)
    KNOWN.update(out)
    return out


def retrieves_all(api, known: dict[str, tuple[str, bytes]], addr: str | None = None) -> None:
    for sid, (user, value) in known.items():
        got = api.agent(user, addr=addr).retrieve(sid)
        assert got.value == value, sid


class Traffic(threading.Thread):
    """Retrievals of known secrets through one gateway, with a create or a rotation every tenth
    call, until stopped; every failed call is kept."""

    def __init__(self, api, known: dict[str, tuple[str, bytes]], addr: str):
        super().__init__(daemon=True)
        self.api, self.known, self.addr = api, known, addr
        self.stop_flag = threading.Event()
        self.calls = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self):
        rnd = random.Random(14)
        while not self.stop_flag.is_set():
            with self.lock:
                sid = rnd.choice(sorted(self.known))
                user, value = self.known[sid]
            try:
                if self.calls % 10 == 5:
                    new = f"rot-live-{secrets.token_hex(8)}".encode()
                    self.api.ui(user, addr=self.addr).rotate(sid, new)
                    with self.lock:
                        self.known[sid] = (user, new)
                elif self.calls % 10 == 9:
                    u2 = x.uid("rotlive")
                    v2 = f"rot-new-{secrets.token_hex(8)}".encode()
                    s2 = self.api.ui(u2, addr=self.addr).create(v2).secret.secret_id
                    with self.lock:
                        self.known[s2] = (u2, v2)
                else:
                    got = self.api.agent(user, addr=self.addr).retrieve(sid, timeout=15)
                    if got.value != value:
                        self.failures.append(f"{sid}: another value")
            except Exception as e:  # noqa: BLE001 - every failure is the finding
                self.failures.append(f"{sid}: {e!r}"[:300])
            self.calls += 1

    def stop(self):
        self.stop_flag.set()
        self.join(timeout=60)


def test_cmk_change_under_continuous_traffic(rot):
    stack, api = rot
    known = make_secrets(api, 60, "a")
    moving, total = under(api, CMK_A)
    assert moving == total >= 80
    old_keys = [bytes(d["wrapped_key"]) for d in payloads(api)]
    with keywrap_on(stack, "alias/credex-b") as (_, gateway, store):
        traffic = Traffic(api, known, gateway.addr)
        traffic.start()
        try:
            x.wait_until(lambda: traffic.calls >= 5, 60, what="traffic flowing before the run starts")
            before_run = traffic.calls
            res = rewrap(stack, store.addr, "--batch", "10", "--rate", "40", "--run-id", "rot-case1", "--json")
            during_run = traffic.calls - before_run
            time.sleep(1)
        finally:
            traffic.stop()
            KNOWN.update(traffic.known)
        assert res.returncode == 0, res.stdout + res.stderr
        r = report(res)
        assert r["target"] == {"key_provider": "local-cmk", "key_id": "alias/credex-b"}
        assert (r["rewrapped"], r["failed"], r["remaining"]) == (moving, 0, 0), r
        # Paced at 40 keys/s: a call starts only once the keys before it took 1/40 s each, so
        # over the run at most 40 * moving / (moving - one batch).
        assert r["keys_per_second"] <= 40 * moving / (moving - 10) + 1, r
        # Not a terminal: plain progress lines on stderr, never key material.
        assert re.search(r"rewrap: \d+/\d+ keys", res.stderr), res.stderr
        # Calls ran all along the rotation (about 2 s at 40 keys/s), and none failed.
        assert during_run >= 5 and traffic.failures == [], (during_run, traffic.failures[:5])
        # Every key is under B, each moved key has exactly one event with the run id.
        docs = payloads(api)
        assert all((d["key_provider"], d["key_id"]) == ("local-cmk", "alias/credex-b") for d in docs)
        evs = events(api, "secret.key_rewrapped", "rot-case1")
        assert len(evs) == moving
        assert len({e["attributes"]["payload_id"] for e in evs}) == moving
        e = evs[0]
        assert e["outcome"] == "success" and e["peer"] == "credexctl" and e["owner_id"]
        assert (e["attributes"]["from_key_id"], e["attributes"]["to_key_id"]) == (CMK_A, "alias/credex-b")
        assert {d["_id"] for d in docs if "rewrapped_at" in d} == {e["attributes"]["payload_id"] for e in evs}
        secret_of = {d["_id"]: d["secret_id"] for d in docs}
        assert all(e["resource_id"] == secret_of[e["attributes"]["payload_id"]] for e in evs)
        # Every value intact, through the new keywrap and through the stack's (old CMK id).
        retrieves_all(api, traffic.known, gateway.addr)
        retrieves_all(api, traffic.known)
        # Idempotent: a second run finds nothing.
        again = rewrap(stack, store.addr, "--run-id", "rot-case1b")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "rewrapped: 0" in again.stdout and "remaining: 0" in again.stdout, again.stdout
        dry = rewrap(stack, store.addr, "--dry-run")
        assert dry.returncode == 0 and "remaining: 0" in dry.stdout, dry.stdout + dry.stderr
        store_log = store.log_text()
        assert "store.data_keys_rewrapped" in store_log
    # The report, store's log and the events name ids, never a value or key bytes (old or new).
    import base64

    seen = res.stdout + res.stderr + store_log + repr(evs)
    for value in {v for _, v in traffic.known.values()}:
        assert value.decode() not in seen
    for wk in old_keys + [bytes(d["wrapped_key"]) for d in docs]:
        for form in (wk.hex(), wk.hex().upper(), base64.b64encode(wk).decode(), base64.b64encode(wk[:24]).decode()):
            assert form not in seen


def test_killed_run_resumes_and_moves_each_key_once(rot):
    stack, api = rot
    make_secrets(api, 30, "k")
    with keywrap_on(stack, "alias/credex-c") as (_, _gw, store):
        moving = len(payloads(api)) - under(api, "alias/credex-c")[0]
        dry = rewrap(stack, store.addr, "--dry-run")
        assert dry.returncode == 1 and f"remaining: {moving}" in dry.stdout, dry.stdout + dry.stderr
        proc = subprocess.Popen([str(stack.credexctl), "keys", "rewrap", "--batch", "5", "--rate", "20",
                                 "--run-id", "rot-case2a"], env=ctl_env(stack, store.addr),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            x.wait_until(lambda: len(events(api, "secret.key_rewrapped", "rot-case2a")) >= 10, 60,
                         what="the first run to move 10 keys")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        # store may still be working through the batch the kill cut short: one run at a time on
        # FerretDB (docs/KEY_ROTATION.md), so the second starts once the first's events stop.
        seen = [-1]

        def settled() -> bool:
            n = len(events(api, "secret.key_rewrapped", "rot-case2a"))
            done, seen[0] = n == seen[0], n
            return done
        x.wait_until(settled, 30, interval=1.0, what="the killed run's last call to end")
        res = rewrap(stack, store.addr, "--run-id", "rot-case2b", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        second = report(res)["rewrapped"]
        first = len(events(api, "secret.key_rewrapped", "rot-case2a"))
        assert 10 <= first < moving
        assert first + second == moving
        assert len(events(api, "secret.key_rewrapped", "rot-case2b")) == second
        assert under(api, "alias/credex-c")[0] == len(payloads(api))
        # No payload moved twice: one event per payload over both runs.
        ids = [e["attributes"]["payload_id"] for r in ("rot-case2a", "rot-case2b")
               for e in events(api, "secret.key_rewrapped", r)]
        assert len(ids) == len(set(ids)) == moving


def test_tampered_payload_is_reported_and_the_rest_move(rot):
    stack, api = rot
    known = make_secrets(api, 4, "t")
    victim, donor = sorted(known)[:2]
    client, db = api.mongo()
    try:
        vdoc = db[PAYLOADS].find_one({"secret_id": victim, "version": 1})
        ddoc = db[PAYLOADS].find_one({"secret_id": donor, "version": 1})
        db[PAYLOADS].update_one({"_id": vdoc["_id"]}, {"$set": {"wrapped_key": ddoc["wrapped_key"]}})
        with keywrap_on(stack, "alias/credex-d") as (_, _gw, store):
            res = rewrap(stack, store.addr, "--run-id", "rot-case3", "--batch", "7")
            assert res.returncode == 1, res.stdout + res.stderr
            assert "failures: 1" in res.stdout and "remaining: 1" in res.stdout, res.stdout
            assert f"payload {vdoc['_id']} secret {victim} version 1: integrity_error" in res.stdout, res.stdout
            failed = events(api, "secret.key_rewrap_failed", "rot-case3")
            assert [(e["resource_id"], e["outcome"], e["reason"]) for e in failed] == [
                (victim, "failed", "integrity_error")]
            assert under(api, "alias/credex-d") == (len(payloads(api)) - 1, len(payloads(api)))
            left = db[PAYLOADS].find_one({"_id": vdoc["_id"]})
            assert left["wrapped_key"] == ddoc["wrapped_key"] and left["key_id"] != "alias/credex-d"
            # Put the key back: the next run moves it, and nothing is left.
            db[PAYLOADS].update_one({"_id": vdoc["_id"]}, {"$set": {"wrapped_key": vdoc["wrapped_key"]}})
            res = rewrap(stack, store.addr, "--run-id", "rot-case3b")
            assert res.returncode == 0 and "rewrapped: 1" in res.stdout, res.stdout + res.stderr
    finally:
        client.close()


def test_keywrap_down_is_unavailable_and_nothing_is_half_written(rot):
    stack, api = rot
    make_secrets(api, 20, "d")
    total = len(payloads(api))
    with keywrap_on(stack, "alias/credex-e") as (kw, _gw, store):
        proc = subprocess.Popen([str(stack.credexctl), "keys", "rewrap", "--batch", "5", "--rate", "10",
                                 "--run-id", "rot-case4"], env=ctl_env(stack, store.addr),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        x.wait_until(lambda: len(events(api, "secret.key_rewrapped", "rot-case4")) >= 5, 60,
                     what="the run to move 5 keys")
        assert kw.stop(signal.SIGKILL) == -signal.SIGKILL
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
        assert "credexctl: unavailable: keywrap: " in err and "run the command again" in err, err
        # Every payload is either moved (key fields and its event) or untouched.
        moved = {e["attributes"]["payload_id"] for e in events(api, "secret.key_rewrapped", "rot-case4")}
        for d in payloads(api):
            assert (d["key_id"] == "alias/credex-e") == (d["_id"] in moved), d["_id"]
        assert 5 <= len(moved) < total
        # The report counts the calls that answered; keys the failing call moved before keywrap
        # died (at most a batch less one) are moved and audited, but not in it.
        reported = int(re.search(r"^rewrapped: (\d+)$", out, re.M)[1])
        assert reported <= len(moved) < reported + 5, out
        assert f"remaining: {total - reported}" in out, out
    # A fresh keywrap on the same CMK finishes the rotation; on a terminal, with a progress bar.
    with keywrap_on(stack, "alias/credex-e") as (_, gateway, store):
        res, bar = rewrap_on_terminal(stack, store.addr, "--run-id", "rot-case4b", "--rate", "50")
        assert res.returncode == 0, res.stdout + bar
        assert re.search(r"\r\x1b\[Krewrap \[[#.]{30}\] \d+/\d+ keys +[\d.]+ keys/s +ETA \d+ s", bar), bar
        assert f"rewrap [{'#' * 30}] {total - len(moved)}/{total - len(moved)} keys" in bar, bar
        assert under(api, "alias/credex-e") == (total, total)
        dry = rewrap(stack, store.addr, "--dry-run", "--json")
        assert dry.returncode == 0 and report(dry)["remaining"] == 0


def test_rewrap_rpc_is_for_the_operator_only_and_checks_its_input(rot):
    """store.RewrapDataKeys answers only the operator's identity (credexctl) and refuses a
    request outside its contract with invalid_argument, before it rewraps anything."""
    stack, api = rot
    p = api.pb
    C = grpc.StatusCode

    def call(identity, **fields):
        with stack.channel("store", identity) as ch:
            stub = p.store_grpc.CredentialStoreStub(ch)
            return stub.RewrapDataKeys(p.store.StoreRewrapDataKeysRequest(**fields), timeout=10)

    before = payloads(api)
    for peer in ("gateway", "oauth"):
        with pytest.raises(grpc.RpcError) as info:
            call(peer, run_id="rot-peer", limit=10)
        assert info.value.code() == C.PERMISSION_DENIED, x.describe(info.value)
    bad = [{"limit": 10},  # no run id
           {"run_id": "rot bad", "limit": 10},  # not an id
           {"run_id": "rot-in", "limit": 0},
           {"run_id": "rot-in", "limit": 101},
           {"run_id": "rot-in", "limit": 10, "after_payload_id": "sec_" + "0" * 26},
           {"run_id": "rot-in", "limit": 10, "after_payload_id": "pay_0"},
           {"run_id": "rot-in", "limit": 101, "count_only": True}]
    for fields in bad:
        with pytest.raises(grpc.RpcError) as info:
            call(h.CLI_IDENTITY, **fields)
        assert (info.value.code(), x.reason(info.value)) == (C.INVALID_ARGUMENT, "invalid_argument"), fields
        assert "rot bad" not in (info.value.details() or "")
    # The stack's keywrap (CMK A): a count, then nothing to do after the last payload id.
    got = call(h.CLI_IDENTITY, run_id="rot-in", count_only=True)
    assert (got.target_key_id, got.rewrapped) == (CMK_A, 0)
    assert got.remaining == len(before) - under(api, CMK_A)[0]
    assert payloads(api) == before
    # credexctl refuses bad options itself (exit 2), naming the option, never sending them.
    for args in (["--batch", "0"], ["--batch", "101"], ["--rate", "-1"], ["--run-id", "no spaces"],
                 ["--bogus"]):
        res = rewrap(stack, stack.addrs["store"], *args)
        assert res.returncode == 2 and "credexctl: usage: keys rewrap:" in res.stderr, (args, res.stderr)
    res = rewrap(stack, "127.0.0.1:1")
    assert res.returncode == 1 and res.stderr.startswith("credexctl: unavailable:"), res.stderr


def new_root(path) -> str:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return str(path)


def test_new_root_file_then_local_cmk_to_aws_kms_with_the_retired_root(rot, tmp_path_factory):
    """The two moves that need the retired root (CREDEX_LOCAL_CMK_RETIRED_KEY_FILE): a new local
    root file (with a new CMK id: store tells keys apart by provider and CMK id only), then
    local-cmk to aws-kms (the local-kms emulator). After each, a keywrap WITHOUT the retired file
    reads every secret of the module with its value: nothing is left on the old key."""
    from test_kms import KEY_ARN, LocalKms, kms_env

    stack, api = rot
    make_secrets(api, 6, "r")
    old_root = str(stack.run_dir / "pki" / "local-cmk.key")
    root = new_root(tmp_path_factory.mktemp("rotation-root") / "local-cmk-2.key")
    with keywrap_on(stack, "alias/credex-root2", CREDEX_LOCAL_CMK_KEY_FILE=root,
                    CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=old_root) as (_, gateway, store):
        res = rewrap(stack, store.addr, "--run-id", "rot-case5-root", "--rate", "0", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert report(res)["target"] == {"key_provider": "local-cmk", "key_id": "alias/credex-root2"}
        retrieves_all(api, KNOWN, gateway.addr)
    with keywrap_on(stack, "alias/credex-root2", CREDEX_LOCAL_CMK_KEY_FILE=root) as (_, gateway, _store):
        retrieves_all(api, KNOWN, gateway.addr)
    # A keywrap of the old root alone cannot read them any more: the move was real.
    with keywrap_on(stack, "alias/credex-root2") as (_, gateway, _store):
        sid, (user, _) = next(iter(KNOWN.items()))
        with pytest.raises(grpc.RpcError) as info:
            api.agent(user, addr=gateway.addr).retrieve(sid)
        assert x.reason(info.value) == "integrity_error", x.describe(info.value)

    kms = LocalKms(tmp_path_factory.mktemp("rotation-kms"))
    kms.start()
    try:
        aws = kms_env(kms.url, CREDEX_LOCAL_CMK_RETIRED_KEY_FILE=root)
        with keywrap_on(stack, aws.pop("CREDENTIAL_KMS_CMK_ID"), **aws) as (_, gateway, store):
            res = rewrap(stack, store.addr, "--run-id", "rot-case5-kms", "--batch", "100", "--rate", "0",
                         "--json")
            assert res.returncode == 0, res.stdout + res.stderr
            r = report(res)
            assert r["target"] == {"key_provider": "aws-kms", "key_id": KEY_ARN}, r
            assert r["rewrapped"] == len(payloads(api)) and r["remaining"] == 0, r
            assert all((d["key_provider"], d["key_id"], d["key_version"]) == ("aws-kms", KEY_ARN, "")
                       for d in payloads(api))
            evs = events(api, "secret.key_rewrapped", "rot-case5-kms")
            assert {(e["attributes"]["from_key_provider"], e["attributes"]["to_key_provider"]) for e in evs} == {
                ("local-cmk", "aws-kms")}
            retrieves_all(api, KNOWN, gateway.addr)
        aws = kms_env(kms.url)
        with keywrap_on(stack, aws.pop("CREDENTIAL_KMS_CMK_ID"), **aws) as (_, gateway, store):
            retrieves_all(api, KNOWN, gateway.addr)
            dry = rewrap(stack, store.addr, "--dry-run")
            assert dry.returncode == 0 and "remaining: 0" in dry.stdout, dry.stdout + dry.stderr
    finally:
        kms.stop()
