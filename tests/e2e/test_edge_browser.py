"""Issue 9: the edge seen from a real browser. Headless Chromium (Debian's `chromium`, driven by
playwright-core with `executablePath`; scripts/setup installs both, no test tool downloads a
browser) loads pages from two loopback web servers and lets their JavaScript call an edge that
allows exactly one origin:

- a foreign origin, reached as http://localhost:F (cross-site to the edge on 127.0.0.1) and as
  http://127.0.0.1:F (same site, which the edge is configured to accept, but not an allowed
  origin), with a valid user token: preflighted fetches
  (Authorization header), simple requests (token in the query, text/plain bodies), no-cors posts,
  the token as cookies and classic form posts into an iframe. The page's JavaScript receives no
  status and no body from any of them, no request that needs a preflight gets past it, the edge
  answers every request that does reach it with a refusal and no CORS grant, and afterwards the
  database holds no new secret, the user's secret is unchanged and the audit trail holds nothing
  for the user but the secret's creation;
- the allowed origin (http://127.0.0.1:A) creates and rotates a secret (the page sees success),
  then reads it every way it can: get, list, versions (metadata, masked), retrieve (403
  browser_denied, audited) and exchange (403 browser_denied); it cannot create with a text/plain
  body (415). Neither value ever appears in anything the browser received, headers and
  preflights included, while a server-side caller retrieves the rotated value over gRPC (so it
  is really stored).

tests/e2e/browser/driver.mjs runs the browser (one for the module, a fresh context per page) and
prints for each page what its JavaScript received and what the browser saw on the network
(DevTools protocol: preflights, statuses, response headers, CORS errors); page.js is the pages'
script. A missing browser fails these tests; they skip only when set-up was skipped on purpose
(CREDEX_SKIP_SETUP=1) and chromium or playwright-core is absent.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest

import credex_api as x
import credex_edge as ce
import credex_harness as h

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (scripts/setup)
NODE_MODULES = h.TOOLS / "node" / "node_modules"
PAGE_TIMEOUT_S = 60
CORS_GRANTS = ("access-control-allow-origin", "access-control-allow-credentials",
               "access-control-allow-headers", "access-control-allow-methods")
REFUSALS = {401, 403, 415}


# ---- the browser ----------------------------------------------------------------------------------

def _missing_browser_parts() -> list[str]:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if not (NODE_MODULES / "playwright-core" / "package.json").exists():
        missing.append(f"playwright-core in {NODE_MODULES} (tools/node)")
    if shutil.which("node") is None:
        missing.append("node")
    return missing


class Browser:
    """tests/e2e/browser/driver.mjs: one Chromium; visit(url) -> what the driver printed."""

    def __init__(self, log_path: Path):
        env = os.environ | {"CREDEX_NODE_MODULES": str(NODE_MODULES), "CREDEX_CHROMIUM": str(CHROMIUM)}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(["node", str(BROWSER_DIR / "driver.mjs")], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._next(PAGE_TIMEOUT_S)
        if not first.get("ready"):
            raise AssertionError(f"the browser driver did not start: {first}\n{h.tail(log_path)}")
        self.version = first.get("version")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the browser driver within {timeout}s:\n{h.tail(self.log_path)}") \
                from None
        if line is None:
            raise AssertionError(f"the browser driver ended ({self.proc.wait(10)}):\n{h.tail(self.log_path)}")
        return json.loads(line)

    def visit(self, url: str) -> dict:
        ident = uuid.uuid4().hex
        self.proc.stdin.write(json.dumps({"id": ident, "url": url, "timeout_ms": PAGE_TIMEOUT_S * 1000}) + "\n")
        self.proc.stdin.flush()
        out = self._next(PAGE_TIMEOUT_S + 30)
        assert out.get("id") == ident, out
        assert out["error"] is None, f"page {url.split('#')[0]}: {out['error']}\nconsole: {out['console']}"
        assert out["page"] and "script_error" not in out["page"], out
        return out

    def close(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9
        finally:
            self._log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = _missing_browser_parts()
    if missing:
        why = "not installed: " + ", ".join(missing)
        if os.environ.get("CREDEX_SKIP_SETUP") == "1":
            pytest.skip(f"real-browser tests: {why}; set-up was skipped (CREDEX_SKIP_SETUP=1), scripts/setup "
                        "installs them")
        pytest.fail(f"real-browser tests: {why} (scripts/setup installs them)", pytrace=False)
    b = Browser(tmp_path_factory.mktemp("browser") / "driver.log")
    yield b
    code = b.close()
    assert code == 0, f"browser driver exit code {code}:\n{h.tail(b.log_path)}"


# ---- the pages' web servers -----------------------------------------------------------------------

class _PageHandler(http.server.BaseHTTPRequestHandler):
    FILES = {"/page.html": "text/html; charset=utf-8", "/page.js": "text/javascript; charset=utf-8"}

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = urllib.parse.urlsplit(self.path).path
        if path not in self.FILES:
            self.send_error(404)
            return
        body = (BROWSER_DIR / path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.FILES[path])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_ports():
    """(allowed port, foreign port): two web servers on loopback serving the test page."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield tuple(s.server_address[1] for s in servers)
    for s in servers:
        s.shutdown()
        s.server_close()


# ---- an edge that allows exactly one origin ---------------------------------------------------------

@pytest.fixture(scope="module")
def edge(stack, page_ports):
    """(edge base URL, its one allowed origin): an edge on the session stack's gateway. Pages on
    127.0.0.1 are the same site as the edge on 127.0.0.1 (ports do not count), as a UI on
    ui.example.com is to an edge on credex.example.com; that deployment needs
    CREDEX_EDGE_ALLOW_SAME_SITE, and the origin allow-list is then what tells pages apart."""
    allowed = f"http://127.0.0.1:{page_ports[0]}"
    inst, port = ce.spawn_edge(stack, CREDEX_EDGE_ALLOWED_ORIGINS=allowed, CREDEX_EDGE_ALLOW_SAME_SITE="true")
    yield f"http://127.0.0.1:{port}", allowed
    code = inst.stop()
    assert code == 0, f"edge exit code {code}:\n{h.tail(inst.log_path)}"


# ---- helpers --------------------------------------------------------------------------------------

def page_url(origin: str, config: dict) -> str:
    return f"{origin}/page.html#" + urllib.parse.quote(json.dumps(config))


def assert_never_received(out: dict, *values: bytes) -> None:
    """No form of any value appears in anything the driver reported (page, network, console)."""
    text = json.dumps(out)
    for value in values:
        for form in x.encodings(value):
            assert form.decode() not in text, f"a form of a secret value reached the browser: {form[:12]!r}..."


def assert_loopback_only(out: dict) -> None:
    """The browser fetched nothing beyond loopback (data: URLs are Chromium's own error page)."""
    far = [e.get("url") for e in out["network"]
           if urllib.parse.urlsplit(e.get("url", "")).scheme != "data"
           and urllib.parse.urlsplit(e.get("url", "")).hostname not in ("127.0.0.1", "localhost")]
    assert not far, far


def edge_entries(out: dict, base: str) -> list[dict]:
    return [e for e in out["network"] if e.get("url", "").startswith(base)]


def lower_headers(entry: dict) -> dict:
    return {k.lower(): v for k, v in (entry.get("headers") or {}).items()}


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def keys_named(doc, name: str) -> list:
    """Every value of a key `name` anywhere in a JSON document."""
    found = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == name:
                found.append(v)
            found += keys_named(v, name)
    elif isinstance(doc, list):
        for v in doc:
            found += keys_named(v, name)
    return found


# ---- a foreign origin -----------------------------------------------------------------------------

FOREIGN_ATTEMPTS = 19


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"], ids=["cross-site", "same-site-other-origin"])
def test_foreign_origin_gets_nothing_and_changes_nothing(api, browser, edge, page_ports, host):
    base, allowed = edge
    origin = f"http://{host}:{page_ports[1]}"
    assert origin != allowed
    user = x.uid("browser-victim")
    original = ce.canary("original")
    target = api.ui(user).create(original).secret
    created_name = f"foreign {uuid.uuid4().hex[:8]}"
    attempts_values = (ce.canary("foreign-create"), ce.canary("foreign-rotate"))
    config = {"scenario": "foreign", "edge": base, "token": api.tokens.user(user), "target": target.secret_id,
              "create": {"idempotencyKey": str(uuid.uuid4()), "displayName": created_name,
                         "value": ce.b64(attempts_values[0])},
              "rotate": {"value": ce.b64(attempts_values[1])}}

    out = browser.visit(page_url(origin, config))
    attempts = out["page"]["attempts"]
    assert out["page"]["origin"] == origin
    assert len(attempts) == FOREIGN_ATTEMPTS, [a["name"] for a in attempts]

    # The page's JavaScript got nothing: fetch() threw, or an opaque response (status 0, no
    # headers, empty body), or a frame it cannot look into.
    for a in attempts:
        if a["kind"] == "form":
            assert a.get("body") is None, a
        elif "threw" not in a:
            assert (a["type"], a["status"], a["headers"], a["body"]) == ("opaque", 0, {}, ""), a
    for a in attempts:
        if a["kind"] in ("preflighted", "simple"):
            assert a.get("threw", "").startswith("TypeError"), a

    entries = edge_entries(out, base)
    preflights = [e for e in entries if e.get("method") == "OPTIONS"]
    requests_seen = [e for e in entries if e.get("method") != "OPTIONS" and "status" in e]
    # No response of the edge grants this origin anything, preflights included.
    for e in entries:
        granted = [k for k in lower_headers(e) if k in CORS_GRANTS]
        assert not granted, f"the edge granted {granted} to {origin}: {e}"
    # Each preflighted fetch asked first and went no further.
    assert len(preflights) == sum(a["kind"] == "preflighted" for a in attempts), preflights
    assert all(e.get("status", 0) >= 400 for e in preflights), preflights
    # Every request that did reach the edge was refused: exactly the non-preflighted attempts.
    sent = sorted((a["method"], a["path"]) for a in attempts if a["kind"] != "preflighted")
    assert sorted((e["method"], path_of(e["url"])) for e in requests_seen) == sent, requests_seen
    statuses = {(e["method"], path_of(e["url"]), e["status"]) for e in requests_seen}
    assert all(s in REFUSALS for _, _, s in statuses), statuses

    # Nothing was created or changed, and the audit trail holds nothing for the user but the
    # creation of the secret.
    assert ce.secrets_named(api, created_name) == []
    meta = api.ui(user).get(target.secret_id)
    assert (meta.current_version, meta.status) == (1, target.status)
    client, db = api.mongo()
    with client:
        assert db.credential_secret_refs.count_documents({"owner_id": user}) == 1
        events = [(e["event_type"], e["outcome"])
                  for e in db.credential_audit_events.find({"subject_user_id": user})]
    assert events == [("secret.created", "success")], events
    assert_never_received(out, original, *attempts_values)
    assert_loopback_only(out)


# ---- the allowed origin ---------------------------------------------------------------------------

def by_name(attempts: list[dict]) -> dict[str, dict]:
    named = {a["name"]: a for a in attempts}
    assert len(named) == len(attempts), [a["name"] for a in attempts]
    return named


def test_allowed_origin_creates_and_rotates_but_never_reads_a_value(api, stack, browser, edge):
    base, allowed = edge
    user = x.uid("browser-owner")
    first, second = ce.canary("created"), ce.canary("rotated")
    text_plain_name = f"text-plain {uuid.uuid4().hex[:8]}"
    config = {"scenario": "allowed", "edge": base, "token": api.tokens.user(user),
              "create": {"idempotencyKey": str(uuid.uuid4()), "displayName": f"browser {uuid.uuid4().hex[:8]}",
                         "value": ce.b64(first), "textPlainKey": str(uuid.uuid4()),
                         "textPlainName": text_plain_name},
              "rotate": {"value": ce.b64(second)}}

    out = browser.visit(page_url(allowed, config))
    page = out["page"]
    assert page["origin"] == allowed
    a = by_name(page["attempts"])
    assert 200 <= a["create"].get("status", 0) < 300, f"the allowed origin could not create: {a['create']}"
    assert set(a) == {"create", "rotate", "get", "list", "versions", "retrieve", "exchange", "create, text/plain"}
    for rec in a.values():
        assert "threw" not in rec, f"the allowed origin could not read the edge's answer: {rec}\n{out['console']}"
        assert "no-store" in rec["headers"].get("cache-control", ""), rec

    # Success, visible to the page.
    secret = json.loads(a["create"]["body"])["secret"]
    sid = page["secret_id"]
    assert sid == secret["secretId"] and sid.startswith("sec_")
    assert 200 <= a["rotate"]["status"] < 300, a["rotate"]
    assert json.loads(a["rotate"]["body"])["secret"]["currentVersion"] == 2

    # Metadata only, masked, however the page asks.
    for name in ("create", "rotate", "get", "list", "versions"):
        assert 200 <= a[name]["status"] < 300, a[name]
        body = json.loads(a[name]["body"])
        assert keys_named(body, "value") == [], (name, body)
        assert set(keys_named(body, "maskedValue")) <= {"********"}, (name, body)
    got = json.loads(a["get"]["body"])  # GetSecret answers SecretMetadata itself
    assert (got["secretId"], got["currentVersion"], got["valueSet"], got["maskedValue"]) == (sid, 2, True, "********")
    assert sid in [s["secretId"] for s in json.loads(a["list"]["body"])["secrets"]]
    assert len(json.loads(a["versions"]["body"])["versions"]) == 2

    # The value itself: refused to the browser, readably.
    for name in ("retrieve", "exchange"):
        assert a[name]["status"] == 403, a[name]
        assert json.loads(a[name]["body"])["error"]["code"] == "browser_denied", a[name]
    assert a["create, text/plain"]["status"] == 415, a["create, text/plain"]

    # CORS for this one origin, exactly, never with credentials; preflights answered.
    entries = edge_entries(out, base)
    preflights = [e for e in entries if e.get("method") == "OPTIONS"]
    assert preflights and all(200 <= e.get("status", 0) < 300 for e in preflights), preflights
    for e in entries:
        hdrs = lower_headers(e)
        assert hdrs.get("access-control-allow-origin") == allowed, e
        assert "access-control-allow-credentials" not in hdrs, e

    assert_never_received(out, first, second)
    assert_loopback_only(out)

    # Server side: the rotated value is stored and a server-side caller gets it; the page's
    # retrieve was refused by the gateway and audited.
    meta = api.ui(user).get(sid)
    assert (meta.current_version, meta.owner.owner_id) == (2, user)
    api.grant_retriever(x.AGENT)
    assert api.agent(user).retrieve(sid).value == second
    client, db = api.mongo()
    with client:
        denied = list(db.credential_audit_events.find({"resource_id": sid, "outcome": "denied"}))
    assert [e["reason"] for e in denied] == ["browser_denied"], denied
    assert ce.secrets_named(api, text_plain_name) == []
