// The script of the real-browser test page (tests/e2e/test_edge_browser.py): it calls the edge
// the ways a page can, and records in window.credexResult exactly what its JavaScript received
// (status, response type, the headers it may read, the body), or the error fetch() threw.
// Its settings come in the URL fragment, which never leaves the browser: a JSON object with
//   scenario  "foreign" (a page of an origin the edge does not allow) or "allowed"
//   edge      the edge's base URL
//   token     a valid user access token (the worst case: the page has one)
//   target    foreign only: an existing secret of that user to read, rotate and delete
//   create    {idempotencyKey, displayName, value (base64)} of the secret to create
//   rotate    {value (base64)} of the rotation
(() => {
  'use strict';

  const cfg = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const api = `${cfg.edge}/api/credentials`;
  const bearer = { Authorization: `Bearer ${cfg.token}` };
  const jsonType = { 'Content-Type': 'application/json' };
  const textType = { 'Content-Type': 'text/plain' };
  const createBody = JSON.stringify({
    idempotencyKey: cfg.create.idempotencyKey,
    kind: 'SECRET_KIND_API_KEY',
    displayName: cfg.create.displayName,
    value: cfg.create.value,
  });
  const rotateBody = JSON.stringify({ value: cfg.rotate.value });
  const retrieveBody = (ref) => JSON.stringify({
    secretRef: ref,
    intendedUse: 'mcp_server_env',
    resourceContext: { resourceType: 'mcp_server', resourceId: 'browser-test' },
  });

  // One fetch() and everything the page got from it.
  async function attempt(name, kind, url, init) {
    const rec = { name, kind, method: (init && init.method) || 'GET', path: new URL(url).pathname };
    try {
      // A redirect is never followed where that is allowed (no-cors requires 'follow').
      const redirect = init.mode === 'no-cors' ? 'follow' : 'manual';
      const r = await fetch(url, Object.assign({ cache: 'no-store', redirect }, init));
      rec.status = r.status;
      rec.type = r.type;
      rec.headers = Object.fromEntries(r.headers.entries());
      rec.body = await r.text();
    } catch (e) {
      rec.threw = `${e.name}: ${e.message}`;
    }
    return rec;
  }

  // A classic cross-site form post (a navigation, not fetch) into an iframe, then an attempt to
  // read what the frame shows.
  function formPost(name, url, enctype, fields) {
    return new Promise((resolve) => {
      const rec = { name, kind: 'form', method: 'POST', path: new URL(url).pathname };
      const frame = document.createElement('iframe');
      frame.name = `f${Math.random().toString(16).slice(2)}`;
      const form = document.createElement('form');
      Object.assign(form, { method: 'POST', action: url, enctype, target: frame.name });
      for (const [k, v] of Object.entries(fields)) {
        const input = document.createElement('input');
        Object.assign(input, { type: 'hidden', name: k, value: v });
        form.appendChild(input);
      }
      let done = false;
      const finish = (how) => {
        if (done) return;
        done = true;
        rec.loaded = how;
        try {
          const doc = frame.contentDocument;
          rec.body = doc ? doc.documentElement.outerHTML : null;
        } catch (e) {
          rec.threw = `${e.name}: ${e.message}`;
        }
        resolve(rec);
      };
      document.body.append(frame, form);
      // Listening only now skips the load of the frame's initial empty document.
      frame.addEventListener('load', () => finish('load'));
      setTimeout(() => finish('timeout'), 5000);
      form.submit();
    });
  }

  async function foreign() {
    const t = `${api}/secrets/${cfg.target}`;
    const out = [];
    const run = async (...a) => out.push(await attempt(...a));
    // With the token in a header: the browser must ask the edge first (a preflight).
    await run('list', 'preflighted', `${api}/secrets`, { headers: bearer });
    await run('get', 'preflighted', t, { headers: bearer });
    await run('versions', 'preflighted', `${t}/versions`, { headers: bearer });
    await run('create', 'preflighted', `${api}/secrets`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: createBody });
    await run('rotate', 'preflighted', `${t}/rotate`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: rotateBody });
    await run('delete', 'preflighted', t, { method: 'DELETE', headers: bearer });
    await run('retrieve', 'preflighted', `${api}/retrieve`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: retrieveBody(cfg.target) });
    // Simple requests (no preflight): the request reaches the edge, the token goes where a
    // simple request can carry it.
    await run('list, token in the query', 'simple', `${api}/secrets?access_token=${cfg.token}`, {});
    await run('get, token in the query', 'simple', `${t}?access_token=${cfg.token}`, {});
    await run('create, text/plain', 'simple', `${api}/secrets`,
      { method: 'POST', headers: textType, body: createBody });
    // no-cors: the response is opaque by design; Authorization is silently dropped by fetch.
    await run('create, no-cors text/plain', 'no-cors', `${api}/secrets`,
      { mode: 'no-cors', method: 'POST', headers: { ...bearer, ...textType }, body: createBody });
    await run('rotate, no-cors text/plain', 'no-cors', `${t}/rotate`,
      { mode: 'no-cors', method: 'POST', headers: { ...bearer, ...textType }, body: rotateBody });
    await run('retrieve, no-cors text/plain', 'no-cors', `${api}/retrieve`,
      { mode: 'no-cors', method: 'POST', headers: textType, body: retrieveBody(cfg.target) });
    const form = new URLSearchParams({ access_token: cfg.token, value: cfg.create.value });
    await run('create, no-cors form-urlencoded', 'no-cors', `${api}/secrets`,
      { mode: 'no-cors', method: 'POST', body: form });
    const multipart = new FormData();
    multipart.append('access_token', cfg.token);
    multipart.append('value', cfg.create.value);
    await run('create, no-cors multipart', 'no-cors', `${api}/secrets`,
      { mode: 'no-cors', method: 'POST', body: multipart });
    // The token as cookies (reach the edge only where the page shares its host).
    for (const name of ['access_token', 'token', 'id_token']) {
      document.cookie = `${name}=${cfg.token}; path=/; SameSite=Lax`;
    }
    await run('list, token in cookies', 'no-cors', `${api}/secrets`,
      { mode: 'no-cors', credentials: 'include' });
    await run('create, token in cookies, text/plain', 'simple', `${api}/secrets`,
      { method: 'POST', credentials: 'include', headers: textType, body: createBody });
    out.push(await formPost('create, form post (text/plain)', `${api}/secrets`, 'text/plain',
      { access_token: cfg.token, value: cfg.create.value }));
    out.push(await formPost('rotate, form post (urlencoded)', `${t}/rotate`,
      'application/x-www-form-urlencoded', { access_token: cfg.token, value: cfg.rotate.value }));
    return { attempts: out };
  }

  async function allowed() {
    const out = [];
    const run = async (...a) => {
      const rec = await attempt(...a);
      out.push(rec);
      return rec;
    };
    const created = await run('create', 'preflighted', `${api}/secrets`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: createBody });
    let secretId = null;
    try {
      secretId = JSON.parse(created.body).secret.secretId;
    } catch (e) {
      return { attempts: out, secret_id: null };
    }
    const t = `${api}/secrets/${secretId}`;
    await run('rotate', 'preflighted', `${t}/rotate`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: rotateBody });
    // Every way a page could hope to read the value back.
    await run('get', 'preflighted', t, { headers: bearer });
    await run('list', 'preflighted', `${api}/secrets`, { headers: bearer });
    await run('versions', 'preflighted', `${t}/versions`, { headers: bearer });
    await run('retrieve', 'preflighted', `${api}/retrieve`,
      { method: 'POST', headers: { ...bearer, ...jsonType }, body: retrieveBody(secretId) });
    await run('exchange', 'preflighted', `${api}/exchange`, {
      method: 'POST',
      headers: { ...bearer, ...jsonType },
      body: JSON.stringify({
        providerKey: 'github',
        intendedUse: 'mcp_impersonation',
        resourceContext: { resourceType: 'mcp_server', resourceId: 'browser-test' },
      }),
    });
    // Even an allowed origin cannot create with a body that is not JSON.
    await run('create, text/plain', 'preflighted', `${api}/secrets`, {
      method: 'POST',
      headers: { ...bearer, ...textType },
      body: JSON.stringify({ ...JSON.parse(createBody), idempotencyKey: cfg.create.textPlainKey,
        displayName: cfg.create.textPlainName }),
    });
    return { attempts: out, secret_id: secretId };
  }

  const scenarios = { foreign, allowed };
  scenarios[cfg.scenario]()
    .then((r) => { window.credexResult = { origin: location.origin, ...r }; })
    .catch((e) => { window.credexResult = { origin: location.origin, script_error: `${e.name}: ${e.message}` }; })
    .finally(() => { window.credexDone = true; });
})();
