// Drives Debian's chromium (never a downloaded browser) through playwright-core for the
// real-browser tests (tests/e2e/test_edge_browser.py). One browser serves many pages, so a test
// module pays for one start.
//
// Protocol, one JSON object per line:
//   stdout first: {"ready": true, "version": "<chromium version>"} (or {"fatal": "..."} and exit 1)
//   stdin:  {"id": <any>, "url": "<page to load>", "timeout_ms": <bound for the page's script>}
//   stdout: {"id", "page", "network", "console", "error"}
//     page:    window.credexResult, what the page's own JavaScript received (fetch() results)
//     network: every request the browser made for the page, preflights included, as the browser
//              saw it below JavaScript: type, method, url, status and response headers as they
//              came off the wire (also for responses CORS withholds from the page), CORS error.
//              Request headers and bodies are left out on purpose (they hold what the page sent,
//              and the tests look for values the page must never have received).
//     console: the page's console lines (Chromium explains each CORS refusal there)
//     error:   null, or why the page could not be judged (load failure, timeout)
//   stdin closed: the browser is closed and the driver exits 0.
// Each page gets a fresh browser context (no cookies or cache shared between pages); Playwright
// starts the browser with a fresh temporary --user-data-dir of its own and removes it on close.
//
// Environment: CREDEX_NODE_MODULES, the folder holding playwright-core (scripts/setup installs it
// under the tools folder); CREDEX_CHROMIUM, the browser (default /usr/bin/chromium).
// Network: nothing but loopback. The host resolver maps every name except localhost and
// 127.0.0.1 to "not found", and the background-networking flags keep Chromium from calling home
// (on a closed network those calls are refused and slow every start).
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
];
const DEFAULT_TIMEOUT_MS = 20000;
const MAX_TIMEOUT_MS = 120000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function loadPlaywright() {
  const dir = process.env.CREDEX_NODE_MODULES;
  if (!dir) throw new Error('CREDEX_NODE_MODULES is not set (the folder holding playwright-core)');
  // createRequire resolves from a file inside the folder, so point it at one.
  return createRequire(join(dir, 'noop.js'))('playwright-core');
}

// Records the browser's own view of the network for one page through the DevTools protocol,
// which, unlike Playwright's request events, also reports CORS preflights and CORS failures.
async function recordNetwork(context, page) {
  const entries = new Map();
  const entry = (id) => {
    if (!entries.has(id)) entries.set(id, { request_id: id });
    return entries.get(id);
  };
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.requestWillBeSent', (e) => {
    const en = entry(e.requestId);
    // A redirect reuses the request id: keep the hop that came before.
    if (e.redirectResponse) {
      en.redirects = (en.redirects || []).concat([{
        url: en.url, status: e.redirectResponse.status, headers: e.redirectResponse.headers,
      }]);
    }
    Object.assign(en, { type: e.type, method: e.request.method, url: e.request.url });
  });
  // The headers as they came off the wire; reported even for a response CORS keeps from the page
  // (whose responseReceived never comes), so the status of every refusal is known.
  cdp.on('Network.responseReceivedExtraInfo', (e) => {
    Object.assign(entry(e.requestId), { status: e.statusCode, headers: e.headers });
  });
  cdp.on('Network.responseReceived', (e) => {
    const en = entry(e.requestId);
    en.response_type = e.type;
    if (en.status === undefined) Object.assign(en, { status: e.response.status, headers: e.response.headers });
  });
  cdp.on('Network.loadingFailed', (e) => {
    Object.assign(entry(e.requestId), {
      failed_type: e.type,
      failure: e.errorText,
      cors_error: e.corsErrorStatus ? e.corsErrorStatus.corsError : null,
      blocked_reason: e.blockedReason || null,
    });
  });
  await cdp.send('Network.enable');
  return () => [...entries.values()];
}

async function runPage(browser, request) {
  const timeout = Math.min(Number(request.timeout_ms) || DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS);
  const context = await browser.newContext({ serviceWorkers: 'block' });
  const out = { id: request.id, page: null, network: [], console: [], error: null };
  let network = () => [];
  try {
    const page = await context.newPage();
    page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
    network = await recordNetwork(context, page);
    await page.goto(request.url, { timeout, waitUntil: 'load' });
    await page.waitForFunction(() => window.credexDone === true, null, { timeout });
    out.page = await page.evaluate(() => window.credexResult);
  } catch (e) {
    out.error = `${e.name}: ${e.message}`;
  } finally {
    out.network = network();
    await context.close().catch(() => {});
  }
  return out;
}

async function main() {
  let browser;
  try {
    const { chromium } = loadPlaywright();
    browser = await chromium.launch({
      executablePath: process.env.CREDEX_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      // Chromium's sandbox cannot start as root; the pages are the tests' own.
      chromiumSandbox: !(process.getuid && process.getuid() === 0),
      args: CHROMIUM_ARGS,
      timeout: 60000,
    });
  } catch (e) {
    emit({ fatal: `cannot start chromium: ${e.message}` });
    process.exit(1);
  }
  emit({ ready: true, version: browser.version() });
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let request;
    try {
      request = JSON.parse(line);
    } catch (e) {
      emit({ id: null, error: `bad request line: ${e.message}` });
      continue;
    }
    emit(await runPage(browser, request));
  }
  await browser.close();
}

await main();
