"""scripts/bench rewrap: the CMK rotation's throughput, measured with the operator's command
itself. A stack of the release build of its own (scripts/run start on free ports, through the
black-box harness) with --keys secrets under its keywrap's CMK (alias/credex-local, local-cmk,
FerretDB); then a keywrap on another CMK id with a store in front of it, and
`credexctl keys rewrap --rate 0` (no pacing) once per --batch size, each run moving every key
to a fresh CMK id; its keys per second as the command reports them, and the database commands
per key (FerretDB's serverStatus counters). The stack is stopped at the end. A benchmark
driver, not a test.

Options: --keys N (default 2000), --batch N[,N...] (default 50,100), --runs N per batch size
(default 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import credex_api as x  # noqa: E402
import credex_harness as h  # noqa: E402

BUILD = ROOT / "build" / "release"


def db_commands(api: x.Api) -> dict[str, int]:
    client, db = api.mongo()
    with client:
        counts = client.admin.command("serverStatus").get("metrics", {}).get("commands", {})
    return {k: v.get("total", 0) for k, v in counts.items()}


def make_secrets(api: x.Api, n: int) -> None:
    users = [x.uid("bench-rw") for _ in range(16)]

    def one(i: int) -> None:
        api.ui(users[i % len(users)]).create(f"bench-rewrap-{i}-{x.uid('v')}", timeout=30)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench rewrap")
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--batch", default="50,100")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="credex-rewrap-bench-"))
    stack = h.start_stack(tmp / "run", build_dir=BUILD, extra_env={"CREDEX_LOG_LEVEL": "warn"})
    api = x.Api(stack, tmp / "certs")
    rc = 0
    try:
        make_secrets(api, args.keys)
        print(f"{args.keys} secrets (one key each) under local-cmk alias/credex-local; FerretDB")
        n = 0
        for batch in (int(b) for b in args.batch.split(",")):
            for run in range(args.runs):
                n += 1
                kw = stack.spawn("keywrap", CREDENTIAL_KMS_CMK_ID=f"alias/bench-{n}")
                stack.wait_healthy(kw)
                gateway, store = stack.spawn_pair(CREDEX_KEYWRAP_ADDR=kw.addr, CREDEX_LOG_LEVEL="warn")
                try:
                    env = h.clean_base_env() | stack.env | {
                        "CREDEX_TLS_CERT": str(stack.pki.cert(h.CLI_IDENTITY)),
                        "CREDEX_TLS_KEY": str(stack.pki.key(h.CLI_IDENTITY)),
                        "CREDEX_STORE_ADDR": store.addr,
                    }
                    before = db_commands(api)
                    res = subprocess.run([str(stack.credexctl), "keys", "rewrap", "--rate", "0", "--batch",
                                          str(batch), "--json"], env=env, capture_output=True, text=True,
                                         timeout=3600)
                    after = db_commands(api)
                    if res.returncode != 0:
                        print(res.stdout, res.stderr, file=sys.stderr)
                        rc = 1
                        continue
                    r = json.loads(res.stdout)
                    moved = max(r["rewrapped"], 1)
                    per = {k: (after.get(k, 0) - before.get(k, 0)) / moved for k in after}
                    cmds = " ".join(f"{k}={v:.1f}" for k, v in sorted(per.items())
                                    if v >= 0.05 and k != "serverStatus")
                    print(f"batch {batch:3d} run {run + 1}: {r['rewrapped']} keys in {r['duration_ms'] / 1000:.2f} s"
                          f" = {r['keys_per_second']:.0f} keys/s; database commands per key: {cmds}")
                finally:
                    stack.stop_pair(gateway, store)
                    kw.stop()
    finally:
        api.close()
        problems = h.stop_stack(stack)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
