/*
 * oauth connections: the provider_connections collection and the credex.v1.Connections
 * handlers (see oauth_internal.h, docs/OAUTH_CONNECTORS.md "Connections" and
 * docs/DATA_MODEL.md).
 *
 * A connection is created PENDING by StartConnect and becomes ACTIVE in CompleteConnect, once
 * its flow (flows.c) was claimed, the code exchanged and the provider account identified. One
 * live connection per (user, connector, provider account) is the plain unique index on
 * live_key: "<user>/<connector>/<account>" while ACTIVE or RECONSENT_REQUIRED, "pending/<id>"
 * before and "gone/<id>" after. A consent that identifies an account the user has already
 * connected through the connector refreshes that connection (its token set rotated, the new
 * PENDING one retired), so a second StartConnect never yields a duplicate.
 *
 * The tokens live in store only (kind provider_token_set, owner the user); the document keeps
 * the secret's id. Messages, logs and audit events name codes and ids, never a token, a code
 * or a state; the provider's error_description is never used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/log/cx_log.h"
#include "common/mdb/mdb_cache.h"
#include "credex/v1/store.pb-c.h"
#include "services/oauth/oauth_internal.h"

#define CONN_STATE_BYTES    32 /* OAuth state: 256 bits, base64url (43 characters) */
#define CONN_VERIFIER_BYTES 48 /* PKCE verifier: 64 base64url characters (RFC 7636: 43-128) */
#define CONN_NONCE_BYTES    24
#define CONN_PAGE_DEFAULT   50
#define CONN_PAGE_MAX       200
#define CONN_UNKNOWN_STATE  "the OAuth state is unknown, expired or already used"

static const char *const conn_state_names[] = {NULL,      "pending", "active",
                                               "expired", "revoked", "reconsent_required"};

const char *oauth_conn_state_name(Credex__V1__ConnectionState s)
{
    return (unsigned)s < 6 ? conn_state_names[s] : NULL;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static void conn_b64url(const unsigned char *in, size_t n, char *out, size_t cap)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = '\0';
}

static bool conn_random(size_t n, char *out, size_t cap, cx_error_t *err)
{
    unsigned char buf[64];
    if (n > sizeof(buf) || !cx_crypto_random(buf, n, err))
        return cx_error_set(err, CX_ERR_INTERNAL, "no randomness");
    conn_b64url(buf, n, out, cap);
    cx_crypto_wipe(buf, n);
    return true;
}

static bool conn_new_id(char out[32], cx_error_t *err)
{
    static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    unsigned char rnd[26];
    if (!cx_crypto_random(rnd, sizeof(rnd), err))
        return cx_error_set(err, CX_ERR_INTERNAL, "random id");
    memcpy(out, "pcn_", 4);
    for (size_t i = 0; i < sizeof(rnd); i++)
        out[4 + i] = crockford[rnd[i] & 31];
    out[30] = '\0';
    return true;
}

/* A relative path of the UI: "/..." but not "//..." (another host), printable ASCII, no
 * backslash (browsers read it as a slash). */
static bool conn_return_to_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return true;
    if (n > OAUTH_RETURN_TO_MAX || s[0] != '/' || s[1] == '/')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == '\\')
            return false;
    return true;
}

static bool conn_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static bool conn_need_user(oauth_ctx_t *x, cx_error_t *err)
{
    if (!x->actor[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "x-credex-subject-user-id is required");
    return true;
}

/* What StartConnect and Reconnect check first: a user, and a return_to of the UI. */
static bool conn_start_ok(oauth_ctx_t *x, const char *return_to, cx_error_t *err)
{
    if (!conn_need_user(x, err))
        return false;
    if (!conn_return_to_ok(return_to))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "return_to must be a relative path starting with a single \"/\", at "
                            "most 512 characters");
    return true;
}

/* ---- documents --------------------------------------------------------------------------------
 */

static const char *conn_live_key(oauth_ctx_t *x, const Credex__V1__Connection *c)
{
    char key[1024];
    if (c->state == CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_PENDING &&
        !c->provider_account_id[0])
        snprintf(key, sizeof(key), "pending/%s", c->connection_id);
    else if (c->state == CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED)
        snprintf(key, sizeof(key), "gone/%s", c->connection_id);
    else
        snprintf(key, sizeof(key), "%s/%s/%s", c->subject_user_id, c->connector_id,
                 c->provider_account_id);
    return oauth_str(x, key);
}

static void conn_doc_fields(oauth_ctx_t *x, const oauth_conn_t *k, bson_t *doc)
{
    const Credex__V1__Connection *c = k->pb;
    BSON_APPEND_UTF8(doc, "connection_id", c->connection_id);
    BSON_APPEND_UTF8(doc, "connector_id", c->connector_id);
    BSON_APPEND_UTF8(doc, "provider_key", c->provider_key);
    BSON_APPEND_UTF8(doc, "subject_user_id", c->subject_user_id);
    BSON_APPEND_UTF8(doc, "state", oauth_conn_state_name(c->state));
    BSON_APPEND_UTF8(doc, "state_reason", c->state_reason);
    BSON_APPEND_UTF8(doc, "provider_account_id", c->provider_account_id);
    BSON_APPEND_UTF8(doc, "provider_account_name", c->provider_account_name);
    BSON_APPEND_UTF8(doc, "provider_resource_id", c->provider_resource_id);
    oauth_bson_strs(doc, "provider_resource_ids", k->resources, k->nresources);
    oauth_bson_strs(doc, "granted_scopes", c->granted_scopes, c->n_granted_scopes);
    oauth_bson_strs(doc, "missing_scopes", c->missing_scopes, c->n_missing_scopes);
    BSON_APPEND_INT64(doc, "scopes_version", c->scopes_version);
    BSON_APPEND_INT64(doc, "token_expires_at_ms", c->token_expires_at_ms);
    BSON_APPEND_INT64(doc, "connected_at_ms", c->connected_at_ms);
    BSON_APPEND_INT64(doc, "last_refreshed_at_ms", c->last_refreshed_at_ms);
    BSON_APPEND_UTF8(doc, "last_refresh_error", c->last_refresh_error ? c->last_refresh_error : "");
    BSON_APPEND_INT64(doc, "refresh_retry_after_ms", c->refresh_retry_after_ms);
    BSON_APPEND_DATE_TIME(doc, "created_at", c->created_at_ms);
    BSON_APPEND_DATE_TIME(doc, "updated_at", c->updated_at_ms);
    BSON_APPEND_UTF8(doc, "token_set_secret_id", k->secret_id);
    BSON_APPEND_UTF8(doc, "live_key", conn_live_key(x, c));
}

static bool conn_decode(oauth_ctx_t *x, const bson_t *doc, oauth_conn_t *out, cx_error_t *err)
{
    oauth_reader_t r = {.x = x, .doc = doc};
    Credex__V1__Connection *c = rpc_arena_alloc(x->arena, sizeof(*c));
    credex__v1__connection__init(c);
    c->connection_id = oauth_rd_str(&r, "connection_id");
    c->connector_id = oauth_rd_str(&r, "connector_id");
    c->provider_key = oauth_rd_str(&r, "provider_key");
    c->subject_user_id = oauth_rd_str(&r, "subject_user_id");
    const char *st = oauth_rd_str(&r, "state");
    for (unsigned i = 1; i < 6; i++)
        if (strcmp(st, conn_state_names[i]) == 0)
            c->state = (Credex__V1__ConnectionState)i;
    if (!c->state)
        oauth_rd_fail(&r, "state");
    c->state_reason = oauth_rd_str(&r, "state_reason");
    c->provider_account_id = oauth_rd_str(&r, "provider_account_id");
    c->provider_account_name = oauth_rd_str(&r, "provider_account_name");
    c->provider_resource_id = oauth_rd_str(&r, "provider_resource_id");
    out->resources =
        oauth_rd_strs(&r, "provider_resource_ids", OAUTH_RESOURCES_MAX, &out->nresources);
    c->granted_scopes = oauth_rd_strs(&r, "granted_scopes", OAUTH_SCOPES_MAX, &c->n_granted_scopes);
    c->missing_scopes = oauth_rd_strs(&r, "missing_scopes", OAUTH_SCOPES_MAX, &c->n_missing_scopes);
    c->scopes_version = (uint32_t)oauth_rd_int(&r, "scopes_version");
    c->token_expires_at_ms = oauth_rd_int(&r, "token_expires_at_ms");
    c->connected_at_ms = oauth_rd_int(&r, "connected_at_ms");
    c->last_refreshed_at_ms = oauth_rd_int(&r, "last_refreshed_at_ms");
    c->created_at_ms = oauth_rd_date(&r, "created_at");
    c->updated_at_ms = oauth_rd_date(&r, "updated_at");
    out->secret_id = oauth_rd_str(&r, "token_set_secret_id");
    /* Written since refresh exists (tokens.c): a document from before has neither. */
    bson_iter_t it;
    c->last_refresh_error = bson_iter_init_find(&it, doc, "last_refresh_error")
                                ? oauth_rd_str(&r, "last_refresh_error")
                                : oauth_str(x, "");
    if (bson_iter_init_find(&it, doc, "refresh_retry_after_ms"))
        c->refresh_retry_after_ms = oauth_rd_int(&r, "refresh_retry_after_ms");
    if (r.bad) {
        cx_log_error(x->correlation_id, "oauth.integrity_error", CX_LOG_STR("field", r.bad));
        return cx_error_set(err, CX_ERR_INTEGRITY, "stored connection is malformed (%s)", r.bad);
    }
    out->pb = c;
    return true;
}

bool oauth_conn_find(oauth_ctx_t *x, const char *field, const char *value, oauth_conn_t *out,
                     bool *found, cx_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&filter, field, value);
    *found = false;
    bool ok = oauth_connect(x, err) &&
              mdb_find_one(x->o->db, x->c, MDB_COLL_CONNECTIONS, &filter, &doc, found, err);
    bson_destroy(&filter);
    if (!ok || !*found)
        return ok;
    ok = conn_decode(x, &doc, out, err);
    bson_destroy(&doc);
    return ok;
}

bool oauth_conn_find_cached(oauth_ctx_t *x, const char *id, oauth_conn_t *out, bool *found,
                            cx_error_t *err)
{
    bson_t doc;
    if (!x->o->connections_cache)
        return oauth_conn_find(x, "_id", id, out, found, err);
    *found = false;
    if (!oauth_connect(x, err) ||
        !mdb_cache_find(x->o->connections_cache, x->c, id, &doc, found, NULL, err))
        return false;
    if (!*found)
        return true;
    bool ok = conn_decode(x, &doc, out, err);
    bson_destroy(&doc);
    if (!ok) /* what the database holds may be put right: never answer it from memory */
        mdb_cache_evict(x->o->connections_cache, id);
    return ok;
}

/* The caller's connection id (someone else's looks missing; admins too when admin_ok). */
static bool conn_load_owned(oauth_ctx_t *x, const char *id, bool admin_ok, oauth_conn_t *out,
                            cx_error_t *err)
{
    bool found = false;
    if (!id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connection_id is required");
    if (!oauth_conn_find(x, "_id", id, out, &found, err))
        return false;
    if (!found || (strcmp(out->pb->subject_user_id, x->actor) != 0 && !(admin_ok && x->admin)))
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    return true;
}

static bool conn_insert(oauth_ctx_t *x, const oauth_conn_t *k, cx_error_t *err)
{
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", k->pb->connection_id);
    conn_doc_fields(x, k, &doc);
    oauth_picks_user_changed(x->o->picks, k->pb->subject_user_id);
    bool ok =
        oauth_connect(x, err) && mdb_insert_one(x->o->db, x->c, MDB_COLL_CONNECTIONS, &doc, err);
    mdb_cache_evict(x->o->connections_cache, k->pb->connection_id);
    oauth_picks_user_changed(x->o->picks, k->pb->subject_user_id);
    bson_destroy(&doc);
    return ok;
}

bool oauth_conn_save(oauth_ctx_t *x, oauth_conn_t *k, cx_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool matched = false;
    k->pb->updated_at_ms = mdb_now_ms();
    BSON_APPEND_UTF8(&sel, "_id", k->pb->connection_id);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    conn_doc_fields(x, k, &set);
    bson_append_document_end(&upd, &set);
    mdb_cache_evict(x->o->connections_cache, k->pb->connection_id);
    oauth_picks_user_changed(x->o->picks, k->pb->subject_user_id);
    bool ok = oauth_connect(x, err) &&
              mdb_update_one(x->o->db, x->c, MDB_COLL_CONNECTIONS, &sel, &upd, &matched, err);
    mdb_cache_evict(x->o->connections_cache, k->pb->connection_id);
    oauth_picks_user_changed(x->o->picks, k->pb->subject_user_id);
    bson_destroy(&sel);
    bson_destroy(&upd);
    if (ok && !matched)
        ok = cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    return ok;
}

bool oauth_conn_audit(oauth_ctx_t *x, const char *event, const Credex__V1__Connection *c,
                      const char *extra_key, const char *extra_value, cx_error_t *err)
{
    oauth_attr_t a[4] = {{"provider_key", c->provider_key},
                         {"connector_id", c->connector_id},
                         {"state", oauth_conn_state_name(c->state)}};
    size_t n = 3;
    if (extra_key)
        a[n++] = (oauth_attr_t){extra_key, extra_value};
    return oauth_audit_on(x, "provider_connection", event, c->connection_id, CX_OK, a, n, err);
}

/* ---- StartConnect / Reconnect ----------------------------------------------------------- */

/* The connector a StartConnect names: by id, or the live one of provider_key. */
static bool conn_connector(oauth_ctx_t *x, const char *id, const char *key, oauth_stored_t *out,
                           cx_error_t *err)
{
    if (id[0])
        return oauth_connector_load(x, id, out, err);
    if (!key[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "provider_key or connector_id is required");
    static const Credex__V1__ConnectorType types[] = {
        CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN,
        CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC,
        CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2};
    for (size_t i = 0; i < 3; i++) {
        bool found = false;
        if (!oauth_connector_find_live(x, key, types[i], out, &found, err))
            return false;
        if (found)
            return true;
    }
    return cx_error_set(err, CX_ERR_NOT_FOUND, "connector not found");
}

static bool conn_connector_active(const oauth_stored_t *s, cx_error_t *err)
{
    if (s->pb->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED, "the connector is not active");
    return true;
}

/* The authorization URL: the endpoint's own query kept, our parameters form-encoded, then the
 * connector's extra parameters (validation keeps them off the reserved names). Nothing is cut:
 * the text grows with the connector's scopes and parameters. The URL lands in x's arena. */
static bool conn_auth_url(oauth_ctx_t *x, const Credex__V1__Connector *c,
                          const oauth_endpoints_t *e, const char *state, const char *challenge,
                          const char *nonce, char **out, cx_error_t *err)
{
    oauth_text_t scope = {0}, q = {0};
    const char *scopes = "", *query = "";
    bool ok = false;
    for (size_t i = 0; i < c->n_scopes; i++) {
        if (i)
            oauth_text_raw(&scope, e->scope_separator);
        oauth_text_raw(&scope, c->scopes[i]);
    }
    if (!oauth_text_done(&scope, &scopes, err))
        goto out;
    oauth_text_field(&q, "response_type", "code");
    oauth_text_field(&q, "client_id", c->client_id);
    oauth_text_field(&q, "redirect_uri", c->redirect_uri);
    oauth_text_field(&q, "scope", scopes);
    oauth_text_field(&q, "state", state);
    if (challenge[0]) {
        oauth_text_field(&q, "code_challenge", challenge);
        oauth_text_field(&q, "code_challenge_method", "S256");
    }
    if (nonce[0])
        oauth_text_field(&q, "nonce", nonce);
    for (size_t i = 0; i < c->n_authorization_params; i++)
        oauth_text_field(&q, c->authorization_params[i]->key, c->authorization_params[i]->value);
    if (!oauth_text_done(&q, &query, err))
        goto out;
    size_t n = strlen(e->authorization_url) + q.len + 2;
    *out = rpc_arena_alloc(x->arena, n);
    snprintf(*out, n, "%s%c%s", e->authorization_url, strchr(e->authorization_url, '?') ? '&' : '?',
             query);
    ok = true;
out:
    oauth_text_free(&scope);
    oauth_text_free(&q);
    return ok;
}

/* A new flow for connection k through connector s: state, PKCE, nonce, the flow document, the
 * event connection.started, the reply. */
static bool conn_begin(oauth_ctx_t *x, const oauth_stored_t *s, const oauth_conn_t *k,
                       const char *return_to, ProtobufCMessage **reply, cx_error_t *err)
{
    oauth_endpoints_t e;
    char state[64], verifier[80] = "", challenge[64] = "", nonce[48] = "";
    if (!oauth_endpoints_of(x, s->pb, &e, err))
        return false;
    if (!e.authorization_url[0])
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the connector has no authorization endpoint");
    if (!conn_random(CONN_STATE_BYTES, state, sizeof(state), err) ||
        (e.pkce && !conn_random(CONN_VERIFIER_BYTES, verifier, sizeof(verifier), err)) ||
        (e.oidc && !conn_random(CONN_NONCE_BYTES, nonce, sizeof(nonce), err)))
        return false;
    if (e.pkce) {
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)verifier, strlen(verifier), d);
        conn_b64url(d, sizeof(d), challenge, sizeof(challenge));
    }
    oauth_flow_t f = {.user = (char *)x->actor,
                      .connector_id = s->pb->connector_id,
                      .connection_id = k->pb->connection_id,
                      .provider_key = s->pb->provider_key,
                      .redirect_uri = s->pb->redirect_uri,
                      .verifier = verifier,
                      .nonce = nonce,
                      .return_to = (char *)return_to,
                      .expires_at_ms = mdb_now_ms() + OAUTH_FLOW_TTL_MS};
    oauth_flows_sweep(x);
    if (!oauth_flow_put(x, state, &f, err))
        return false;
    char *url = NULL;
    bool built = conn_auth_url(x, s->pb, &e, state, challenge, nonce, &url, err);
    cx_crypto_wipe(verifier, sizeof(verifier));
    if (!built || !oauth_conn_audit(x, "connection.started", k->pb, NULL, NULL, err))
        return false;
    Credex__V1__StartConnectResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__start_connect_response__init(resp);
    resp->authorization_url = url;
    resp->oauth_state = oauth_str(x, state);
    resp->connection_id = k->pb->connection_id;
    resp->expires_at_ms = f.expires_at_ms;
    *reply = &resp->base;
    return true;
}

static bool conn_start(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__StartConnectRequest *r = (const Credex__V1__StartConnectRequest *)request;
    oauth_stored_t s;
    char id[32];
    if (!conn_start_ok(x, r->return_to, err))
        return false;
    if (!conn_connector(x, r->connector_id, r->provider_key, &s, err) ||
        !conn_connector_active(&s, err) || !conn_new_id(id, err))
        return false;
    Credex__V1__Connection *c = rpc_arena_alloc(x->arena, sizeof(*c));
    credex__v1__connection__init(c);
    c->connection_id = oauth_str(x, id);
    c->connector_id = s.pb->connector_id;
    c->provider_key = s.pb->provider_key;
    c->subject_user_id = oauth_str(x, x->actor);
    c->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_PENDING;
    c->scopes_version = s.pb->scopes_version;
    c->created_at_ms = c->updated_at_ms = mdb_now_ms();
    oauth_conn_t k = {.pb = c, .secret_id = oauth_str(x, ""), .resources = oauth_strv(x, 1)};
    rpc_call_log_field(x->call, CX_LOG_STR("connection_id", id));
    return conn_insert(x, &k, err) && conn_begin(x, &s, &k, r->return_to, reply, err);
}

static bool conn_reconnect(oauth_ctx_t *x, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__ReconnectRequest *r = (const Credex__V1__ReconnectRequest *)request;
    oauth_stored_t s;
    oauth_conn_t k;
    if (!conn_start_ok(x, r->return_to, err))
        return false;
    return conn_load_owned(x, r->connection_id, false, &k, err) &&
           oauth_connector_load(x, k.pb->connector_id, &s, err) && conn_connector_active(&s, err) &&
           conn_begin(x, &s, &k, r->return_to, reply, err);
}

/* ---- CompleteConnect ----------------------------------------------------------------------- */

void oauth_conn_scopes(oauth_ctx_t *x, const Credex__V1__Connector *c, const char *granted,
                       Credex__V1__Connection *out)
{
    out->granted_scopes = oauth_strv(x, OAUTH_SCOPES_MAX);
    out->n_granted_scopes = 0;
    if (granted[0]) {
        char *copy = oauth_str(x, granted), *save = NULL;
        for (char *t = strtok_r(copy, " ,", &save); t && out->n_granted_scopes < OAUTH_SCOPES_MAX;
             t = strtok_r(NULL, " ,", &save))
            if (!conn_has(out->granted_scopes, out->n_granted_scopes, t))
                out->granted_scopes[out->n_granted_scopes++] = t;
    } else {
        for (size_t i = 0; i < c->n_scopes; i++)
            out->granted_scopes[out->n_granted_scopes++] = c->scopes[i];
    }
    out->missing_scopes = oauth_strv(x, OAUTH_SCOPES_MAX);
    out->n_missing_scopes = 0;
    for (size_t i = 0; i < c->n_scopes; i++)
        if (!conn_has(out->granted_scopes, out->n_granted_scopes, c->scopes[i]))
            out->missing_scopes[out->n_missing_scopes++] = c->scopes[i];
}

bool oauth_conn_token_set(const oauth_tokens_t *t, const Credex__V1__Connection *c, int64_t now,
                          uint8_t **buf, size_t *len, cx_error_t *err)
{
    Credex__V1__ProviderTokenSet ts = CREDEX__V1__PROVIDER_TOKEN_SET__INIT;
    ts.access_token.data = (uint8_t *)t->access_token;
    ts.access_token.len = strlen(t->access_token);
    if (t->refresh_token) {
        ts.refresh_token.data = (uint8_t *)t->refresh_token;
        ts.refresh_token.len = strlen(t->refresh_token);
    }
    ts.token_type = (char *)t->token_type;
    ts.expires_at_ms = t->expires_in_s > 0 ? now + t->expires_in_s * 1000 : 0;
    ts.refresh_expires_at_ms =
        t->refresh_expires_in_s > 0 ? now + t->refresh_expires_in_s * 1000 : 0;
    ts.scopes = c->granted_scopes;
    ts.n_scopes = c->n_granted_scopes;
    ts.obtained_at_ms = now;
    *len = protobuf_c_message_get_packed_size(&ts.base);
    *buf = malloc(*len ? *len : 1);
    if (!*buf)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    protobuf_c_message_pack(&ts.base, *buf);
    return true;
}

/* Write the token set of k: a new version of its secret (same id) when it has a live one,
 * else a new secret owned by the user. */
static bool conn_store_tokens(oauth_ctx_t *x, oauth_conn_t *k, const uint8_t *v, size_t len,
                              bool *rotated, cx_error_t *err)
{
    *rotated = false;
    if (k->secret_id[0]) {
        uint32_t version = 0;
        cx_error_t ge;
        cx_error_clear(&ge);
        if (oauth_secret_version(x, k->secret_id, &version, &ge)) {
            if (!oauth_secret_rotate(x, k->secret_id, version, v, len, err))
                return false;
            *rotated = true;
            return true;
        }
        if (ge.code != CX_ERR_NOT_FOUND) {
            cx_error_copy(err, &ge);
            return false;
        }
    }
    char key[128], name[160], nowbuf[24];
    snprintf(nowbuf, sizeof(nowbuf), "%lld", (long long)mdb_now_ms());
    snprintf(key, sizeof(key), "connection/%s/token_set/%s", k->pb->connection_id, nowbuf);
    snprintf(name, sizeof(name), "Provider tokens of connection %s", k->pb->connection_id);
    Credex__V1__Owner owner = CREDEX__V1__OWNER__INIT;
    owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    owner.owner_id = k->pb->subject_user_id;
    Credex__V1__StoreCreateSecretRequest req = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    req.caller = oauth_caller(x, "");
    req.idempotency_key = key;
    req.owner = &owner;
    req.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    req.display_name = name;
    req.provider = k->pb->provider_key;
    req.connector_id = k->pb->connector_id;
    req.value.data = (uint8_t *)v;
    req.value.len = len;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "CreateSecret", &req.base, &reply, err))
        return false;
    const Credex__V1__StoreCreateSecretResponse *r =
        (const Credex__V1__StoreCreateSecretResponse *)reply;
    if (!r->secret || !r->secret->secret_id[0])
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "store answered without a secret id");
    k->secret_id = r->secret->secret_id;
    return true;
}

/* What the provider said, before anything is written: tokens, the verified id_token, the
 * account. */
typedef struct conn_outcome {
    oauth_tokens_t tokens;
    char *account_id, *account_name;
    char *resources[OAUTH_RESOURCES_MAX];
    size_t nresources;
} conn_outcome_t;

static bool conn_exchange(oauth_ctx_t *x, const oauth_stored_t *s, const oauth_endpoints_t *e,
                          const oauth_flow_t *f, const char *code, conn_outcome_t *o,
                          cx_error_t *err)
{
    cx_secret_t *secret = NULL;
    char *sub = NULL;
    if (!oauth_client_secret(x, s->pb, &secret, err))
        return false;
    bool ok = oauth_token_exchange(x, s->pb, s->client_auth, e, cx_secret_bytes(secret),
                                   cx_secret_len(secret), f->redirect_uri, code, f->verifier,
                                   &o->tokens, err);
    cx_secret_free(secret);
    if (!ok)
        return false;
    if (e->oidc &&
        !oauth_id_token_verify(x, e, s->pb->client_id, f->nonce, o->tokens.id_token, &sub, err))
        return false;
    if (!oauth_identify(x, s->pb, e, o->tokens.access_token, &o->account_id, &o->account_name,
                        o->resources, &o->nresources, err))
        return false;
    if (!o->account_id)
        o->account_id = sub;
    if (!o->account_id)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the provider account could not be identified");
    if (!o->account_name)
        o->account_name = o->account_id;
    return true;
}

/* The connection the consent lands in: the flow's, or the user's live connection of the same
 * account through the connector (the flow's PENDING one then retires). */
static bool conn_target(oauth_ctx_t *x, oauth_conn_t *flow_conn, const char *account_id,
                        oauth_conn_t *out, cx_error_t *err)
{
    if (flow_conn->pb->provider_account_id[0] &&
        strcmp(flow_conn->pb->provider_account_id, account_id) != 0)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the consent names another provider account than the connection's; "
                            "disconnect it and connect again");
    char key[1024];
    bool found = false;
    snprintf(key, sizeof(key), "%s/%s/%s", flow_conn->pb->subject_user_id,
             flow_conn->pb->connector_id, account_id);
    if (!oauth_conn_find(x, "live_key", key, out, &found, err))
        return false;
    if (!found || strcmp(out->pb->connection_id, flow_conn->pb->connection_id) == 0) {
        *out = *flow_conn;
        return true;
    }
    if (flow_conn->pb->state == CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_PENDING) {
        flow_conn->pb->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED;
        flow_conn->pb->state_reason = oauth_str(x, "superseded");
        if (!oauth_conn_save(x, flow_conn, err))
            return false;
    }
    return true;
}

static bool conn_complete(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                          cx_error_t *err)
{
    const Credex__V1__CompleteConnectRequest *r =
        (const Credex__V1__CompleteConnectRequest *)request;
    oauth_flow_t f;
    oauth_stored_t s;
    oauth_endpoints_t e;
    oauth_conn_t fk, k;
    bool found = false, claimed = false;
    if (!conn_need_user(x, err))
        return false;
    if (!r->oauth_state[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, CONN_UNKNOWN_STATE);
    /* Another user's state answers exactly as an unknown one (no oracle) and stays unclaimed. */
    if (!oauth_flow_find(x, r->oauth_state, &f, &found, err))
        return false;
    if (!found || strcmp(f.user, x->actor) != 0 || strcmp(f.provider_key, r->provider_key) != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, CONN_UNKNOWN_STATE);
    if (!oauth_flow_claim(x, r->oauth_state, &claimed, err))
        return false;
    if (!claimed || f.expires_at_ms < mdb_now_ms())
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, CONN_UNKNOWN_STATE);
    rpc_call_log_field(x->call, CX_LOG_STR("connection_id", f.connection_id));
    if (!conn_load_owned(x, f.connection_id, false, &fk, err))
        return false;
    if (r->error[0]) {
        char word[65];
        size_t n = strspn(r->error, "abcdefghijklmnopqrstuvwxyz_");
        snprintf(word, sizeof(word), "%s", n == strlen(r->error) && n <= 64 ? r->error : "invalid");
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the provider refused the authorization (error %s)", word);
    }
    if (!r->code[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "code is required");
    if (!oauth_connector_load(x, f.connector_id, &s, err))
        return false;
    if (s.pb->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connector is not active");
    if (!oauth_endpoints_of(x, s.pb, &e, err))
        return false;
    /* RFC 9207: the answer must come from the issuer the flow went to (mix-up defence). */
    if (r->iss[0] && e.issuer[0] && strcmp(r->iss, e.issuer) != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "the iss parameter does not name the connector's issuer");
    if (!r->iss[0] && e.iss_required)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "the iss parameter is required by this provider");

    conn_outcome_t o;
    memset(&o, 0, sizeof(o));
    uint8_t *ts = NULL;
    size_t tslen = 0;
    bool ok = false, rotated = false;
    if (!conn_exchange(x, &s, &e, &f, r->code, &o, err) ||
        !conn_target(x, &fk, o.account_id, &k, err))
        goto out;
    int64_t now = mdb_now_ms();
    Credex__V1__Connection *c = k.pb;
    oauth_conn_scopes(x, s.pb, o.tokens.scope, c);
    if (!oauth_conn_token_set(&o.tokens, c, now, &ts, &tslen, err) ||
        !conn_store_tokens(x, &k, ts, tslen, &rotated, err))
        goto out;
    c->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_ACTIVE;
    c->state_reason = oauth_str(x, "");
    c->provider_account_id = o.account_id;
    c->provider_account_name = o.account_name;
    c->provider_resource_id = oauth_str(x, o.nresources ? o.resources[0] : "");
    k.resources = oauth_strv(x, o.nresources ? o.nresources : 1);
    memcpy(k.resources, o.resources, o.nresources * sizeof(char *));
    k.nresources = o.nresources;
    c->scopes_version = s.pb->scopes_version;
    c->token_expires_at_ms = o.tokens.expires_in_s > 0 ? now + o.tokens.expires_in_s * 1000 : 0;
    c->connected_at_ms = now;
    if (!oauth_conn_save(x, &k, err)) {
        if (err->code == CX_ERR_CONFLICT)
            cx_error_set(err, CX_ERR_CONFLICT,
                         "this provider account is already connected through this connector");
        goto out;
    }
    if (!oauth_conn_audit(x, "connection.connected", c, "token_set",
                          rotated ? "rotated" : "created", err))
        goto out;
    Credex__V1__CompleteConnectResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__complete_connect_response__init(resp);
    resp->connection = c;
    resp->return_to = f.return_to;
    *reply = &resp->base;
    ok = true;
out:
    if (ts) {
        cx_crypto_wipe(ts, tslen);
        free(ts);
    }
    oauth_tokens_clear(&o.tokens);
    return ok;
}

/* ---- List / Get ------------------------------------------------------------------------------ */

static bool conn_get(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                     cx_error_t *err)
{
    const Credex__V1__GetConnectionRequest *r = (const Credex__V1__GetConnectionRequest *)request;
    oauth_conn_t k;
    if (!conn_need_user(x, err) || !conn_load_owned(x, r->connection_id, true, &k, err))
        return false;
    *reply = &k.pb->base;
    return true;
}

typedef struct conn_rows {
    oauth_ctx_t *x;
    Credex__V1__Connection **v;
    size_t n;
} conn_rows_t;

static bool conn_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    conn_rows_t *l = ctx;
    oauth_conn_t k;
    if (!conn_decode(l->x, doc, &k, err))
        return false;
    l->v[l->n++] = k.pb;
    return true;
}

static bool conn_list(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    const Credex__V1__ListConnectionsRequest *r =
        (const Credex__V1__ListConnectionsRequest *)request;
    if (!conn_need_user(x, err))
        return false;
    const char *subject = x->actor;
    if (r->subject_user_id[0] && strcmp(r->subject_user_id, x->actor) != 0) {
        if (!x->admin)
            return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                                "subject_user_id is for platform admins");
        subject = r->subject_user_id;
    }
    unsigned limit = r->page && r->page->page_size ? r->page->page_size : CONN_PAGE_DEFAULT;
    if (limit > CONN_PAGE_MAX)
        limit = CONN_PAGE_MAX;
    bson_t filter = BSON_INITIALIZER, lt;
    BSON_APPEND_UTF8(&filter, "subject_user_id", subject);
    if (r->provider_key[0])
        BSON_APPEND_UTF8(&filter, "provider_key", r->provider_key);
    if (r->state) {
        const char *name = oauth_conn_state_name(r->state);
        if (!name) {
            bson_destroy(&filter);
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "state is unknown");
        }
        BSON_APPEND_UTF8(&filter, "state", name);
    }
    /* Keyset paging, newest first: the token is the last connection id of the previous page. */
    if (r->page && r->page->page_token[0]) {
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &lt);
        BSON_APPEND_UTF8(&lt, "$lt", r->page->page_token);
        bson_append_document_end(&filter, &lt);
    }
    conn_rows_t rows = {.x = x, .v = rpc_arena_alloc(x->arena, (limit + 1) * sizeof(void *))};
    bool more = false;
    bool ok = oauth_connect(x, err) &&
              mdb_find_page(x->o->db, x->c, MDB_COLL_CONNECTIONS, &filter, "connection_id", "_id",
                            limit, conn_row, &rows, &more, err);
    bson_destroy(&filter);
    if (!ok)
        return false;
    Credex__V1__ListConnectionsResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__list_connections_response__init(resp);
    resp->connections = rows.v;
    resp->n_connections = rows.n;
    resp->page = rpc_arena_alloc(x->arena, sizeof(*resp->page));
    credex__v1__page_response__init(resp->page);
    resp->page->next_page_token =
        oauth_str(x, more && rows.n ? rows.v[rows.n - 1]->connection_id : "");
    *reply = &resp->base;
    return true;
}

/* ---- Disconnect ---------------------------------------------------------------------------- */

/* Best effort: revoke the refresh token (else the access token) where the provider offers
 * revocation. *revoked says whether the provider confirmed it. */
static void conn_revoke(oauth_ctx_t *x, const oauth_conn_t *k, bool *revoked)
{
    oauth_stored_t s;
    oauth_endpoints_t e;
    cx_error_t err;
    cx_secret_t *client = NULL;
    *revoked = false;
    cx_error_clear(&err);
    if (!k->secret_id[0] || !oauth_connector_load(x, k->pb->connector_id, &s, &err) ||
        !oauth_endpoints_of(x, s.pb, &e, &err) || !e.revocation_url || !e.revocation_url[0])
        return;
    Credex__V1__StoreResolveRequest req = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    req.caller = oauth_own_caller(x, "oauth_revocation");
    req.secret_id = k->secret_id;
    req.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "Resolve", &req.base, &reply, &err))
        goto out;
    Credex__V1__StoreResolveResponse *rr = (Credex__V1__StoreResolveResponse *)reply;
    Credex__V1__ProviderTokenSet *ts =
        credex__v1__provider_token_set__unpack(NULL, rr->value.len, rr->value.data);
    cx_crypto_wipe(rr->value.data, rr->value.len);
    if (!ts)
        goto out;
    bool refresh = ts->refresh_token.len > 0;
    ProtobufCBinaryData *t = refresh ? &ts->refresh_token : &ts->access_token;
    char *token = calloc(1, t->len + 1);
    if (token && oauth_client_secret(x, s.pb, &client, &err)) {
        memcpy(token, t->data, t->len);
        *revoked =
            oauth_revoke(x, s.pb, s.client_auth, &e, cx_secret_bytes(client), cx_secret_len(client),
                         token, refresh ? "refresh_token" : "access_token", &err);
    }
    if (token) {
        cx_crypto_wipe(token, t->len);
        free(token);
    }
    cx_crypto_wipe(ts->access_token.data, ts->access_token.len);
    cx_crypto_wipe(ts->refresh_token.data, ts->refresh_token.len);
    credex__v1__provider_token_set__free_unpacked(ts, NULL);
out:
    cx_secret_free(client);
    if (!*revoked)
        cx_log_warn(x->correlation_id, "oauth.revocation_failed",
                    CX_LOG_STR("connection_id", k->pb->connection_id),
                    CX_LOG_STR("reason", cx_code_reason(err.code)));
}

bool oauth_conn_end(oauth_ctx_t *x, oauth_conn_t *k, const char *reason, bool at_provider,
                    cx_error_t *err)
{
    bool revoked = false;
    if (at_provider)
        conn_revoke(x, k, &revoked);
    if (k->secret_id[0]) {
        cx_error_t de;
        cx_error_clear(&de);
        if (!oauth_secret_delete(x, k->secret_id, &de) && de.code != CX_ERR_NOT_FOUND) {
            cx_error_copy(err, &de);
            return false;
        }
    }
    k->secret_id = oauth_str(x, "");
    k->pb->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED;
    k->pb->state_reason = oauth_str(x, reason);
    if (!oauth_conn_save(x, k, err))
        return false;
    return !at_provider || oauth_conn_audit(x, "connection.disconnected", k->pb,
                                            "revoked_at_provider", revoked ? "true" : "false", err);
}

static bool conn_disconnect(oauth_ctx_t *x, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__DisconnectRequest *r = (const Credex__V1__DisconnectRequest *)request;
    oauth_conn_t k;
    if (!conn_need_user(x, err) || !conn_load_owned(x, r->connection_id, true, &k, err))
        return false;
    /* Idempotent: an already disconnected connection is answered as it is. */
    if ((k.pb->state != CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED || k.secret_id[0]) &&
        !oauth_conn_end(x, &k, "disconnected", true, err))
        return false;
    *reply = &k.pb->base;
    return true;
}

/* ---- reconsent after a connector scope change (T068) ------------------------------------ */

typedef struct conn_marks {
    oauth_ctx_t *x;
    oauth_conn_t *v;
    size_t n, cap;
} conn_marks_t;

static bool conn_mark_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    conn_marks_t *m = ctx;
    if (m->n >= m->cap)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED,
                            "too many connections to mark in one update");
    return conn_decode(m->x, doc, &m->v[m->n++], err);
}

static bool conn_each(oauth_ctx_t *x, const bson_t *filter, conn_marks_t *m, cx_error_t *err)
{
    return oauth_connect(x, err) &&
           mdb_find_each(x->o->db, x->c, MDB_COLL_CONNECTIONS, filter, conn_mark_row, m, err);
}

/* The connections of connector_id in state (or, with not, in any other state), read before
 * anything is written (no update while the cursor is open). m->v is freed by the caller. */
static bool conn_collect(oauth_ctx_t *x, const char *connector_id, const char *state, bool not,
                         conn_marks_t *m, cx_error_t *err)
{
    enum { CONN_MARK_MAX = 10000 };
    bson_t filter = BSON_INITIALIZER, ne;
    BSON_APPEND_UTF8(&filter, "connector_id", connector_id);
    if (not ) {
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "state", &ne);
        BSON_APPEND_UTF8(&ne, "$ne", state);
        bson_append_document_end(&filter, &ne);
    } else {
        BSON_APPEND_UTF8(&filter, "state", state);
    }
    *m = (conn_marks_t){
        .x = x, .v = calloc(CONN_MARK_MAX, sizeof(oauth_conn_t)), .cap = CONN_MARK_MAX};
    bool ok =
        m->v ? conn_each(x, &filter, m, err) : cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    bson_destroy(&filter);
    return ok;
}

bool oauth_conn_list(oauth_ctx_t *x, const bson_t *filter, oauth_conn_t *v, size_t cap, size_t *n,
                     cx_error_t *err)
{
    conn_marks_t m = {.x = x, .v = v, .cap = cap};
    bool ok = conn_each(x, filter, &m, err);
    *n = m.n;
    return ok;
}

bool oauth_connections_mark_reconsent(oauth_ctx_t *x, const Credex__V1__Connector *c, size_t *count,
                                      cx_error_t *err)
{
    conn_marks_t m;
    *count = 0;
    bool ok = conn_collect(x, c->connector_id, "active", false, &m, err);
    for (size_t i = 0; ok && i < m.n; i++) {
        oauth_conn_t *k = &m.v[i];
        Credex__V1__Connection *pb = k->pb;
        bool lacks = false;
        for (size_t j = 0; j < c->n_scopes && !lacks; j++)
            lacks = !conn_has(pb->granted_scopes, pb->n_granted_scopes, c->scopes[j]);
        if (!lacks)
            continue;
        pb->missing_scopes = oauth_strv(x, OAUTH_SCOPES_MAX);
        pb->n_missing_scopes = 0;
        for (size_t j = 0; j < c->n_scopes; j++)
            if (!conn_has(pb->granted_scopes, pb->n_granted_scopes, c->scopes[j]))
                pb->missing_scopes[pb->n_missing_scopes++] = c->scopes[j];
        pb->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_RECONSENT_REQUIRED;
        pb->state_reason = oauth_str(x, "scope_changed");
        char sv[16];
        snprintf(sv, sizeof(sv), "%u", c->scopes_version);
        ok = oauth_conn_save(x, k, err) &&
             oauth_conn_audit(x, "connection.reconsent_required", pb, "scopes_version", sv, err);
        if (ok)
            (*count)++;
    }
    free(m.v);
    return ok;
}

bool oauth_connections_end_all(oauth_ctx_t *x, const char *connector_id, size_t *count,
                               cx_error_t *err)
{
    conn_marks_t m;
    *count = 0;
    bool ok = conn_collect(x, connector_id, "revoked", true, &m, err);
    for (size_t i = 0; ok && i < m.n; i++)
        if ((ok = oauth_conn_end(x, &m.v[i], "connector_deleted", true, err)))
            (*count)++;
    free(m.v);
    return ok;
}

/* ---- the method table -------------------------------------------------------------------- */

static const oauth_method_t m_start = {"connection.started", false, conn_start,
                                       "provider_connection", "connection_id"};
static const oauth_method_t m_complete = {"connection.connected", false, conn_complete,
                                          "provider_connection", "connection_id"};
static const oauth_method_t m_list = {"connection.listed", false, conn_list, "provider_connection",
                                      "connection_id"};
static const oauth_method_t m_get = {"connection.read", false, conn_get, "provider_connection",
                                     "connection_id"};
static const oauth_method_t m_disconnect = {"connection.disconnected", false, conn_disconnect,
                                            "provider_connection", "connection_id"};
static const oauth_method_t m_reconnect = {"connection.started", false, conn_reconnect,
                                           "provider_connection", "connection_id"};

OAUTH_ENTRY(h_start, m_start)
OAUTH_ENTRY(h_complete, m_complete)
OAUTH_ENTRY(h_list, m_list)
OAUTH_ENTRY(h_get, m_get)
OAUTH_ENTRY(h_disconnect, m_disconnect)
OAUTH_ENTRY(h_reconnect, m_reconnect)

const rpc_method_impl_t oauth_connections_impls[] = {
    {.method = "StartConnect", .kind = RPC_UNARY, .unary = h_start},
    {.method = "CompleteConnect", .kind = RPC_UNARY, .unary = h_complete},
    {.method = "ListConnections", .kind = RPC_UNARY, .unary = h_list},
    {.method = "GetConnection", .kind = RPC_UNARY, .unary = h_get},
    {.method = "Disconnect", .kind = RPC_UNARY, .unary = h_disconnect},
    {.method = "Reconnect", .kind = RPC_UNARY, .unary = h_reconnect},
};
const size_t oauth_connections_nimpls =
    sizeof(oauth_connections_impls) / sizeof(oauth_connections_impls[0]);
