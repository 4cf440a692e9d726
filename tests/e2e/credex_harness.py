"""Black-box harness for credex: starts the real stack with `scripts/run start` in a private
runtime folder on free ports, and talks to it the way a client does (mTLS gRPC, grpcurl, credexctl).

Nothing here knows the services' internals: requests are raw protobuf bytes and the gRPC methods
are addressed by path, so the tests need no generated stubs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("keywrap", "store", "oauth", "gateway", "edge")
CLI_IDENTITY = "credexctl"
TOOLS = Path(os.environ.get("CREDEX_TOOLS_DIR") or ROOT / ".tools")
# Which build the black-box tests run: build/test (ASan+UBSan) unless told otherwise.
BUILD_DIR = Path(os.environ.get("CREDEX_E2E_BUILD_DIR") or ROOT / "build" / "test")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error:")
SANITIZER_DEFAULTS = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    # OpenSSL's per-thread error state of gRPC threads alive at exit (see the file).
    "LSAN_OPTIONS": f"suppressions={ROOT / 'tests' / 'lsan.supp'}",
}

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
NOT_SERVING = b"\x08\x02"

START_TIMEOUT = 180  # seconds for `scripts/run start` (ASan start-up of 7 processes)
STOP_TIMEOUT = 120


def _listen_port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range (ip_local_port_range), from 10000: the kernel
    never hands these out as the source port of an outgoing connection."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return 10000, max(10000, min(low, 65536) - 1)


_PORT_RNG = random.SystemRandom()


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all bound at once, so no duplicates), for processes that
    bind them later. Chosen below the ephemeral range, not by binding port 0: a port from the
    ephemeral range can become the source port of any outgoing connection on the machine between
    this check and the child's bind, and the child then fails to start (EADDRINUSE), which a
    clean-clone CI run hit three times in one suite."""
    low, high = _listen_port_range()
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", _PORT_RNG.randint(low, high) if high > low else 0))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise RuntimeError(f"no {n} free loopback ports in {low}..{high}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ld_field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (tag, varint length, bytes)."""
    out, n = bytearray([number << 3 | 2]), len(data)
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + data


def health_request(service: str = "") -> bytes:
    """HealthCheckRequest{service} as protobuf bytes."""
    return ld_field(1, service.encode()) if service else b""


def sanitizer_findings(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no {path})"


def clean_base_env() -> dict[str, str]:
    """The caller's environment without credex settings a developer may have sourced."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CREDEX_", "CAIPE_", "CREDENTIAL_")) or k == "CREDEX_TOOLS_DIR"
    }
    for k, v in SANITIZER_DEFAULTS.items():
        env.setdefault(k, v)
    # libmongoc exports its counters in /dev/shm/mongoc-<pid> from a library constructor; a
    # killed process leaves its segment behind, and a later process with the same pid then warns
    # on stderr. credex reads no counters (scripts/run sets the same).
    env.setdefault("MONGOC_DISABLE_SHM", "1")
    return env


def parse_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines scripts/run writes (values quoted with printf %q)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = shlex.split(line[len("export "):])[0].partition("=")
            out[name] = value
    return out


def run_pki(run_dir: Path, *call: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Call a function of scripts/lib/pki.sh with CREDEX_RUN_DIR=run_dir."""
    script = 'set -euo pipefail; . "$0/scripts/lib/common.sh"; . "$0/scripts/lib/pki.sh"; "$@"'
    env = clean_base_env() | {"CREDEX_RUN_DIR": str(run_dir)}
    return subprocess.run(["bash", "-c", script, str(ROOT), *call], env=env, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def cert(self, identity: str) -> Path:
        return self.dir / f"{identity}.pem"

    def key(self, identity: str) -> Path:
        return self.dir / f"{identity}.key"

    @property
    def jwks(self) -> Path:
        return self.dir / "jwks.json"

    @property
    def jwt_key(self) -> Path:
        return self.dir / "jwt-signing.key"


def channel_credentials(ca: Path, cert: Path | None = None, key: Path | None = None):
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def secure_channel(addr: str, creds) -> grpc.Channel:
    # A local subchannel pool: a channel with other credentials never reuses a connection.
    return grpc.secure_channel(addr, creds, options=[
        ("grpc.ssl_target_name_override", "localhost"),
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.max_send_message_length", 16 << 20),
    ])


@dataclass
class Instance:
    """One more process of a service, started by a test (outside scripts/run) on its own port."""
    name: str
    addr: str
    proc: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{tail(self.log_path)}")

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.send_signal(sig)
        return self.wait_exit(timeout)


@dataclass
class Stack:
    run_dir: Path
    build_dir: Path
    ports: dict[str, int]
    addrs: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    instances: list[Instance] = field(default_factory=list)

    # ---- paths ------------------------------------------------------------------------
    @property
    def pki(self) -> Pki:
        return Pki(self.run_dir / "pki")

    @property
    def binaries(self) -> dict[str, Path]:
        return {s: self.build_dir / "services" / s / f"credex-{s}" for s in SERVICES}

    @property
    def credexctl(self) -> Path:
        return self.build_dir / "tools" / "credexctl" / "credexctl"

    @property
    def grpcurl_bin(self) -> Path:
        return TOOLS / "bin" / "grpcurl"

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def log_text(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def pid(self, name: str) -> int | None:
        try:
            return int((self.run_dir / "pids" / f"{name}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def exit_code(self, name: str) -> int | None:
        try:
            return int((self.run_dir / "pids" / f"{name}.exit").read_text())
        except (FileNotFoundError, ValueError):
            return None

    # ---- clients ----------------------------------------------------------------------
    def credentials(self, identity: str | None = CLI_IDENTITY, cert: Path | None = None,
                    key: Path | None = None, ca: Path | None = None):
        """mTLS credentials for one of our identities, or for an explicit cert/key pair;
        identity=None and no cert means no client certificate at all."""
        if cert is None and identity is not None:
            cert, key = self.pki.cert(identity), self.pki.key(identity)
        return channel_credentials(ca or self.pki.ca, cert, key)

    def channel(self, service: str, identity: str | None = CLI_IDENTITY, *, addr: str | None = None,
                cert: Path | None = None, key: Path | None = None) -> grpc.Channel:
        return secure_channel(addr or self.addrs[service], self.credentials(identity, cert, key))

    def unary(self, service: str, method: str, request: bytes = b"", *, identity: str | None = CLI_IDENTITY,
              timeout: float = 10, metadata=None, addr: str | None = None, cert: Path | None = None,
              key: Path | None = None):
        """Raw unary call; returns (reply bytes, call). Raises grpc.RpcError."""
        with self.channel(service, identity, addr=addr, cert=cert, key=key) as ch:
            return ch.unary_unary(method).with_call(request, timeout=timeout, metadata=metadata)

    def health(self, service: str, *, addr: str | None = None, name: str = "") -> bytes:
        reply, _ = self.unary(service, HEALTH_CHECK, health_request(name), addr=addr)
        return reply

    def grpcurl(self, service: str, *args: str, identity: str = CLI_IDENTITY, addr: str | None = None,
                timeout: float = 30) -> subprocess.CompletedProcess:
        """grpcurl with the CLI's certificate: grpcurl <tls flags> <addr of service> <args...>."""
        cmd = [str(self.grpcurl_bin), "-cacert", str(self.pki.ca), "-cert", str(self.pki.cert(identity)),
               "-key", str(self.pki.key(identity)), "-servername", "localhost", "-max-time", "10",
               addr or self.addrs[service], *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def credexctl_run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        env = clean_base_env() | self.env | {
            "CREDEX_TLS_CERT": str(self.pki.cert(CLI_IDENTITY)),
            "CREDEX_TLS_KEY": str(self.pki.key(CLI_IDENTITY)),
        }
        return subprocess.run([str(self.credexctl), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    # ---- extra processes --------------------------------------------------------------
    def service_env(self, service: str, addr: str, **extra: str) -> dict[str, str]:
        env = clean_base_env() | self.env | {
            "CREDEX_TLS_CERT": str(self.pki.cert(service)),
            "CREDEX_TLS_KEY": str(self.pki.key(service)),
            f"CREDEX_{service.upper()}_ADDR": addr,
            # Its own metrics port: the stack's process of the same service holds the other.
            f"CREDEX_{service.upper()}_OPS_ADDR": f"127.0.0.1:{free_ports(1)[0]}",
        }
        if service == "edge":
            env["CREDEX_EDGE_HTTP_ADDR"] = f"127.0.0.1:{free_ports(1)[0]}"
        return env | extra

    def spawn(self, service: str, **extra_env: str) -> Instance:
        """Start another process of `service` with the stack's settings on a fresh port."""
        addr = f"127.0.0.1:{free_ports(1)[0]}"
        log_path = self.run_dir / "logs" / f"{service}-extra-{len(self.instances)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([str(self.binaries[service])], env=self.service_env(service, addr, **extra_env),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        inst = Instance(service, addr, proc, log_path)
        self.instances.append(inst)
        return inst

    def spawn_pair(self, **store_env: str) -> tuple[Instance, Instance]:
        """Another store (with store_env) and a gateway in front of it, both healthy:
        (gateway, store). Stop them with stop_pair."""
        store = self.spawn("store", **store_env)
        self.wait_healthy(store)
        gateway = self.spawn("gateway", CREDEX_STORE_ADDR=store.addr)
        self.wait_healthy(gateway)
        return gateway, store

    @staticmethod
    def stop_pair(gateway: Instance, store: Instance) -> dict[str, int]:
        """Stop a pair of spawn_pair, gateway first; their exit codes by name."""
        return {"gateway": gateway.stop(), "store": store.stop()}

    def wait_healthy(self, inst: Instance, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if inst.proc.poll() is not None:
                raise AssertionError(f"{inst.name} exited with {inst.proc.returncode} during start-up:\n"
                                     f"{tail(inst.log_path)}")
            try:
                if self.health(inst.name, addr=inst.addr) == SERVING:
                    return
            except grpc.RpcError as e:
                last = e.code()
            time.sleep(0.1)
        raise AssertionError(f"{inst.name} not healthy within {timeout}s (last: {last}):\n{tail(inst.log_path)}")


def run_script(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "scripts" / "run"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# Every port a stack of scripts/run binds, by name (stack_env's keys).
PORT_NAMES = [*SERVICES, *(f"{s}-ops" for s in SERVICES), "edge-http", "ferretdb", "openfga-http",
              "openfga-grpc"]


def stack_env(run_dir: Path, ports: dict[str, int], build_dir: Path) -> dict[str, str]:
    env = clean_base_env() | {
        "CREDEX_RUN_DIR": str(run_dir),
        "CREDEX_BUILD_DIR": str(build_dir),
        "CREDEX_SKIP_BUILD": "1",
        "CREDEX_SKIP_SETUP": "1",
        "CREDEX_EDGE_HTTP_ADDR": f"127.0.0.1:{ports['edge-http']}",
        "CREDEX_FERRETDB_PORT": str(ports["ferretdb"]),
        "CREDEX_OPENFGA_HTTP_PORT": str(ports["openfga-http"]),
        "CREDEX_OPENFGA_GRPC_PORT": str(ports["openfga-grpc"]),
    }
    for s in SERVICES:
        env[f"CREDEX_{s.upper()}_ADDR"] = f"127.0.0.1:{ports[s]}"
        env[f"CREDEX_{s.upper()}_OPS_ADDR"] = f"127.0.0.1:{ports[s + '-ops']}"
    return env


def start_stack(run_dir: Path, build_dir: Path = BUILD_DIR, extra_env: dict[str, str] | None = None) -> Stack:
    """`scripts/run start` in run_dir on free ports; raises with the script's output on failure
    (after stopping whatever it started). extra_env reaches scripts/run and so every service
    (e.g. CREDEX_DEK_CACHE_MAX_ENTRIES=0 for a stack whose outages must be visible)."""
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES))))
    stack = Stack(run_dir=run_dir, build_dir=build_dir, ports=ports,
                  addrs={s: f"127.0.0.1:{ports[s]}" for s in SERVICES})
    env = stack_env(run_dir, ports, build_dir) | (extra_env or {})
    try:
        res = run_script(env, "start", timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        run_script(env, "stop", timeout=STOP_TIMEOUT)
        raise RuntimeError(f"scripts/run start took more than {START_TIMEOUT}s:\n{e.stderr}") from None
    if res.returncode != 0:
        run_script(env, "stop", timeout=STOP_TIMEOUT)
        raise RuntimeError(f"scripts/run start failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    stack.env = parse_env_file(run_dir / "env")
    return stack


def stop_stack(stack: Stack) -> list[str]:
    """Stop extra instances and `scripts/run stop`; return every problem found: a service that
    ended with a non-zero code, a sanitizer report in any credex log, a failing stop."""
    problems = []
    for inst in stack.instances:
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait(timeout=10)
            problems.append(f"{inst.name} extra instance was still running at the end (killed)")
    env = stack_env(stack.run_dir, stack.ports, stack.build_dir)
    res = run_script(env, "stop", timeout=STOP_TIMEOUT)
    if res.returncode != 0:
        problems.append(f"scripts/run stop failed ({res.returncode}): {res.stderr}")
    for s in SERVICES:
        code = stack.exit_code(s)
        if code != 0:
            problems.append(f"{s} ended with exit code {code}:\n{tail(stack.log_path(s))}")
    for log in sorted((stack.run_dir / "logs").glob("*.log")):
        if log.stem in ("ferretdb", "openfga", "openfga-migrate"):
            continue
        found = sanitizer_findings(log.read_text(errors="replace"))
        if found:
            problems.append(f"sanitizer report in {log}:\n" + "\n".join(found[:10]))
    return problems



@contextlib.contextmanager
def running_stack(run_dir: Path, what: str, extra_env: dict[str, str] | None = None,
                  spawn_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A stack of a test session or module: a failed start fails the test (with the script's
    output) instead of erroring it; at exit the stack is stopped and any problem stop_stack
    finds fails the test, named by `what`. spawn_env is added to extra_env and also reaches the
    processes spawned from the stack later (Stack.spawn)."""
    try:
        stack = start_stack(run_dir, extra_env=(extra_env or {}) | (spawn_env or {}))
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    stack.env |= spawn_env or {}
    try:
        yield stack
    finally:
        problems = stop_stack(stack)
        if problems:
            pytest.fail(f"{what} teardown:\n" + "\n\n".join(problems), pytrace=False)

def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(local address, port) of every TCP socket in LISTEN state that process pid holds."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:
                continue
            hexaddr, hexport = local.split(":")
            out.append((_proc_addr(hexaddr, v6), int(hexport, 16)))
    return out


def _proc_addr(hexaddr: str, v6: bool) -> str:
    raw = bytes.fromhex(hexaddr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores four host-order 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def non_json_lines(text: str) -> list[str]:
    """The lines of a log that are not JSON objects."""
    bad = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad
