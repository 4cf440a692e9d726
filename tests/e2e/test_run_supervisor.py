"""`scripts/run` in the foreground supervises its processes: a process that is merely stopped
(SIGSTOP, as fault tests freeze a peer) is not an exit, so the stack stays up; SIGTERM to the
script stops everything cleanly.

Runs its own stack: `scripts/run` (no subcommand) in a private run folder on free ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import credex_api as x
import credex_harness as h

FROZEN_FOR = 2.0


def test_sigstop_of_a_service_is_not_an_exit(tmp_path):
    run_dir = tmp_path / "run"
    ports = dict(zip(h.PORT_NAMES, h.free_ports(len(h.PORT_NAMES))))
    stack = h.Stack(run_dir=run_dir, build_dir=h.BUILD_DIR, ports=ports,
                    addrs={s: f"127.0.0.1:{ports[s]}" for s in h.SERVICES})
    env = h.stack_env(run_dir, ports, h.BUILD_DIR)
    out_path = tmp_path / "run.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([str(h.ROOT / "scripts" / "run")], env=env, cwd=h.ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        x.wait_until(lambda: b"Press Ctrl-C to stop." in out_path.read_bytes() or proc.poll() is not None,
                     h.START_TIMEOUT, interval=0.2, what="scripts/run up")
        assert proc.poll() is None, out_path.read_text(errors="replace")
        victim = stack.pid("store")
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(FROZEN_FOR)
        finally:
            os.kill(victim, signal.SIGCONT)
        time.sleep(1.0)  # the old supervisor had recorded an exit and was stopping the stack by now
        assert proc.poll() is None, "scripts/run ended after a SIGSTOP:\n" + out_path.read_text(errors="replace")
        assert not list((run_dir / "pids").glob("*.exit")), "an exit was recorded for a stopped process"
        for name in ("ferretdb", "openfga", *h.SERVICES):
            pid = stack.pid(name)
            assert pid and os.path.exists(f"/proc/{pid}"), f"{name} is gone"
        assert stack.health("store") == h.SERVING
        assert stack.health("gateway", name="credex.v1.Secrets") == h.SERVING
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(h.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run([str(h.ROOT / "scripts" / "run"), "stop"], env=env, cwd=h.ROOT, timeout=h.STOP_TIMEOUT)
            raise
    text = out_path.read_text(errors="replace")
    assert code == 0, text
    for name in h.SERVICES:
        assert stack.exit_code(name) == 0, f"{name}: {stack.exit_code(name)}\n{text}"
        assert not h.sanitizer_findings(stack.log_text(name)), name
    assert not list((run_dir / "pids").glob("*.pid")), "pid files left after a clean stop"
