/*
 * oauth connectors: the oauth_connectors collection and the credex.v1.Connectors handlers
 * (see oauth_internal.h and docs/DATA_MODEL.md).
 *
 * Uniqueness. One live connector per (provider_key, type) is the plain unique index on
 * live_key: "<provider_key>/<type>" while the connector is not deleted, "deleted/<id>" once it
 * is. A create is one insert, so of concurrent creates exactly one succeeds and the others get
 * the duplicate key (conflict), on FerretDB (no partial indexes) as on MongoDB.
 *
 * Writes. Every write after the insert is conditional on the document's version counter (and
 * increments it), so two admins' updates never interleave: the later one is conflict (Update)
 * or re-reads and applies again (Enable, Disable, Delete: set operations). On MongoDB, that is;
 * FerretDB's SQLite backend does not make a conditional update atomic, so there two concurrent
 * writes may both apply (docs/DATA_MODEL.md). Uniqueness and secret rotations do not depend on
 * it: both are inserts into unique indexes.
 *
 * The client secret lives in store (kind oauth_client_secret, owner platform, idempotency key
 * "connector/<id>/client_secret"); the document keeps its id only. Replies say
 * client_secret_masked, never the secret; messages never echo a value.
 *
 * Audit: every action through store.AppendAuditEvent (resource_type oauth_connector), success
 * by the handler that knows the attributes, failure once by oauth_run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "common/crypto/cx_crypto.h"
#include "common/log/cx_log.h"
#include "common/mdb/mdb_cache.h"
#include "credex/v1/store.pb-c.h"
#include "services/oauth/oauth_internal.h"

#define OAUTH_WRITE_TRIES 4 /* re-reads of a set operation that met a concurrent write */
#define OAUTH_SECRET_USE  "oauth_client_auth" /* intended use of oauth's own Resolve */

/* ---- names stored in documents (lower-case words of the proto enums) ----------------------- */

static const char *const oauth_type_names[] = {NULL, "built_in", "custom_oauth2", "custom_oidc"};
static const char *const oauth_status_names[] = {NULL, "active", "disabled", "deleted"};
static const char *const oauth_auth_names[] = {"client_secret_post", "client_secret_basic"};

#define OAUTH_NAME(tbl, v)                                                                         \
    ((unsigned)(v) < sizeof(tbl) / sizeof(tbl[0]) ? tbl[(unsigned)(v)] : NULL)

static int oauth_name_parse(const char *const *tbl, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (tbl[i] && strcmp(tbl[i], s) == 0)
            return (int)i;
    return -1;
}

/* ---- the context ------------------------------------------------------------------------- */

char *oauth_str(oauth_ctx_t *x, const char *s)
{
    s = s ? s : "";
    return rpc_arena_strndup(x->arena, s, strlen(s));
}

void oauth_ctx_done(oauth_ctx_t *x)
{
    if (!x || !x->c)
        return;
    mdb_client_push(x->o->db, x->c);
    x->c = NULL;
}

bool oauth_connect(oauth_ctx_t *x, cx_error_t *err)
{
    if (!x->c)
        x->c = mdb_client_pop(x->o->db, err);
    return x->c != NULL;
}

/* What the gateway verified, from the call's metadata (oauth.proto's header). */
bool oauth_ctx_from_call(rpc_call_t *call, oauth_ctx_t *x, cx_error_t *err)
{
    static const char *const keys[] = {"x-credex-subject-user-id", "x-credex-caller-kind",
                                       "x-credex-service-id", "x-credex-platform-admin"};
    const char *v[4] = {NULL, NULL, NULL, NULL};
    memset(x, 0, sizeof(*x));
    x->o = rpc_call_context(call);
    x->call = call;
    x->arena = rpc_call_arena(call);
    snprintf(x->correlation_id, sizeof(x->correlation_id), "%s", rpc_call_correlation_id(call));
    x->actor = "";
    x->service_id = "";
    x->caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    if (!x->o)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "oauth is starting");
    rpc_call_headers(call, keys, 4, v);
    if (v[0] && !cx_contract_check_value("subject_user_id", v[0], false, err))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "x-credex-subject-user-id is malformed");
    if (v[2] && !cx_contract_check_value("service_id", v[2], false, err))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "x-credex-service-id is malformed");
    x->actor = v[0] ? v[0] : "";
    x->service_id = v[2] ? v[2] : "";
    if (v[1] && strcmp(v[1], "browser") == 0)
        x->caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    else if (v[1] && strcmp(v[1], "service_on_behalf_of_user") == 0)
        x->caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    else if (v[1] && strcmp(v[1], "service") != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "x-credex-caller-kind is malformed");
    x->admin = v[3] && strcmp(v[3], "true") == 0;
    return true;
}

/* ---- store calls ------------------------------------------------------------------------- */

/* A store call with the parent's correlation id and deadline (or the bootstrap's id). A
 * dependency fault is unavailable (fail closed); store's own answers pass through. */
bool oauth_store_call(oauth_ctx_t *x, const char *method, const ProtobufCMessage *req,
                      ProtobufCMessage **reply, cx_error_t *err)
{
    rpc_call_options_t o = {.parent = x->call,
                            .correlation_id = x->call ? NULL : x->correlation_id};
    cx_error_t e;
    cx_error_clear(&e);
    if (rpc_client_unary(x->o->store, &credex__v1__credential_store__descriptor, method, req, &o,
                         x->arena, reply, &e))
        return true;
    if (!cx_code_is_dependency_fault(e.code)) {
        cx_error_copy(err, &e);
        return false;
    }
    cx_log_warn(x->correlation_id, "oauth.store_failed", CX_LOG_STR("method", method),
                CX_LOG_STR("reason", cx_code_reason(e.code)));
    return cx_error_set(err, CX_ERR_UNAVAILABLE, "store is unavailable");
}

Credex__V1__CallerContext *oauth_caller(oauth_ctx_t *x, const char *intended_use)
{
    Credex__V1__CallerContext *cc = rpc_arena_alloc(x->arena, sizeof(*cc));
    credex__v1__caller_context__init(cc);
    cc->caller_kind = x->caller_kind;
    cc->service_id = oauth_str(x, x->service_id);
    cc->subject_user_id = oauth_str(x, x->call ? x->actor : "");
    cc->intended_use = oauth_str(x, intended_use);
    return cc;
}

static Credex__V1__Owner *oauth_platform_owner(oauth_ctx_t *x)
{
    Credex__V1__Owner *o = rpc_arena_alloc(x->arena, sizeof(*o));
    credex__v1__owner__init(o);
    o->owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM;
    o->owner_id = oauth_str(x, "platform");
    return o;
}

/* ---- audit ------------------------------------------------------------------------------- */

bool oauth_audit(oauth_ctx_t *x, const char *event_type, const char *connector_id, cx_code_t code,
                 const oauth_attr_t *attrs, size_t n, cx_error_t *err)
{
    return oauth_audit_on(x, "oauth_connector", event_type, connector_id, code, attrs, n, err);
}

Credex__V1__AuditEvent *oauth_audit_event(oauth_ctx_t *x, const char *resource_type,
                                          const char *event_type, const char *resource_id,
                                          cx_code_t code, const oauth_attr_t *attrs, size_t n)
{
    Credex__V1__AuditEvent *ev = rpc_arena_alloc(x->arena, sizeof(*ev));
    credex__v1__audit_event__init(ev);
    ev->event_type = oauth_str(x, event_type);
    ev->resource_type = oauth_str(x, resource_type);
    ev->resource_id = oauth_str(x, resource_id);
    ev->caller_kind = x->caller_kind;
    ev->subject_user_id = oauth_str(x, x->call ? x->actor : "");
    ev->actor_id = oauth_str(x, x->actor[0] ? x->actor
                                : x->call   ? "gateway"
                                            : OAUTH_PLATFORM_ACTOR);
    ev->peer = oauth_str(x, x->call ? rpc_call_peer(x->call) : "");
    ev->correlation_id = oauth_str(x, x->correlation_id);
    if (code == CX_OK) {
        ev->outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    } else {
        ev->outcome = cx_code_is_denial(code) ? CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED
                                              : CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED;
        ev->reason = oauth_str(x, cx_code_reason(code));
    }
    Credex__V1__AuditEvent__AttributesEntry **entries =
        rpc_arena_alloc(x->arena, (n ? n : 1) * sizeof(*entries));
    for (size_t i = 0; i < n; i++) {
        entries[i] = rpc_arena_alloc(x->arena, sizeof(*entries[i]));
        credex__v1__audit_event__attributes_entry__init(entries[i]);
        entries[i]->key = oauth_str(x, attrs[i].key);
        entries[i]->value = oauth_str(x, attrs[i].value);
    }
    ev->attributes = entries;
    ev->n_attributes = n;
    return ev;
}

bool oauth_audit_on(oauth_ctx_t *x, const char *resource_type, const char *event_type,
                    const char *resource_id, cx_code_t code, const oauth_attr_t *attrs, size_t n,
                    cx_error_t *err)
{
    Credex__V1__StoreAppendAuditEventRequest req =
        CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    req.event = oauth_audit_event(x, resource_type, event_type, resource_id, code, attrs, n);
    ProtobufCMessage *reply = NULL;
    cx_error_t e;
    cx_error_clear(&e);
    if (oauth_store_call(x, "AppendAuditEvent", &req.base, &reply, &e))
        return true;
    cx_log_error(x->correlation_id, "oauth.audit_failed", CX_LOG_STR("event_type", event_type),
                 CX_LOG_STR("resource_id", resource_id), CX_LOG_STR("reason", e.message));
    return cx_error_set(err, CX_ERR_UNAVAILABLE, "the audit event could not be written");
}

/* ---- the read model ---------------------------------------------------------------------- */

static Credex__V1__Connector *oauth_pb_new(oauth_ctx_t *x)
{
    Credex__V1__Connector *c = rpc_arena_alloc(x->arena, sizeof(*c));
    credex__v1__connector__init(c);
    c->endpoints = rpc_arena_alloc(x->arena, sizeof(*c->endpoints));
    credex__v1__connector_endpoints__init(c->endpoints);
    c->account_mapping = rpc_arena_alloc(x->arena, sizeof(*c->account_mapping));
    credex__v1__account_mapping__init(c->account_mapping);
    c->refresh_policy = rpc_arena_alloc(x->arena, sizeof(*c->refresh_policy));
    credex__v1__refresh_policy__init(c->refresh_policy);
    return c;
}

/* A shallow copy with sub-messages of its own (so that the copy's fields can be replaced). */
static Credex__V1__Connector *oauth_pb_copy(oauth_ctx_t *x, const Credex__V1__Connector *src)
{
    Credex__V1__Connector *c = oauth_pb_new(x);
    Credex__V1__ConnectorEndpoints *e = c->endpoints;
    Credex__V1__AccountMapping *m = c->account_mapping;
    Credex__V1__RefreshPolicy *r = c->refresh_policy;
    *c = *src;
    *e = *src->endpoints;
    *m = *src->account_mapping;
    *r = *src->refresh_policy;
    c->endpoints = e;
    c->account_mapping = m;
    c->refresh_policy = r;
    return c;
}

char **oauth_strv(oauth_ctx_t *x, size_t n)
{
    return rpc_arena_alloc(x->arena, (n ? n : 1) * sizeof(char *));
}

/* The configuration fields of c (checked and normalised) into pb. */
static void oauth_pb_set_config(oauth_ctx_t *x, Credex__V1__Connector *pb,
                                const oauth_connector_t *c)
{
    pb->provider_key = oauth_str(x, c->provider_key);
    pb->type = c->type;
    pb->display_name = oauth_str(x, c->display_name);
    pb->client_id = oauth_str(x, c->client_id);
    pb->endpoints->authorization_url = oauth_str(x, c->authorization_url);
    pb->endpoints->token_url = oauth_str(x, c->token_url);
    pb->endpoints->userinfo_url = oauth_str(x, c->userinfo_url);
    pb->endpoints->revocation_url = oauth_str(x, c->revocation_url);
    pb->endpoints->issuer_url = oauth_str(x, c->issuer_url);
    pb->redirect_uri = oauth_str(x, c->redirect_uri);
    pb->scopes = oauth_strv(x, c->nscopes);
    for (size_t i = 0; i < c->nscopes; i++)
        pb->scopes[i] = oauth_str(x, c->scopes[i]);
    pb->n_scopes = c->nscopes;
    pb->account_mapping->account_id_field = oauth_str(x, c->account_id_field);
    pb->account_mapping->account_name_field = oauth_str(x, c->account_name_field);
    pb->refresh_policy->refresh_enabled = c->refresh_enabled;
    pb->refresh_policy->refresh_before_expiry_ms = c->refresh_before_expiry_ms;
    pb->authorization_params =
        rpc_arena_alloc(x->arena, (c->nauth_params ? c->nauth_params : 1) * sizeof(void *));
    for (size_t i = 0; i < c->nauth_params; i++) {
        Credex__V1__Connector__AuthorizationParamsEntry *e = rpc_arena_alloc(x->arena, sizeof(*e));
        credex__v1__connector__authorization_params_entry__init(e);
        e->key = oauth_str(x, c->auth_params[i].name);
        e->value = oauth_str(x, c->auth_params[i].value);
        pb->authorization_params[i] = e;
    }
    pb->n_authorization_params = c->nauth_params;
    pb->client_auth_method = oauth_str(x, oauth_client_auth_name(c->client_auth));
}

/* Same scopes in any order (a reordering is no scope change: nobody must re-consent). */
static bool oauth_scopes_equal(const Credex__V1__Connector *a, const Credex__V1__Connector *b)
{
    if (a->n_scopes != b->n_scopes)
        return false;
    for (size_t i = 0; i < a->n_scopes; i++) {
        bool found = false;
        for (size_t j = 0; j < b->n_scopes && !found; j++)
            found = strcmp(a->scopes[i], b->scopes[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static bool oauth_params_equal(const Credex__V1__Connector *a, const Credex__V1__Connector *b)
{
    if (a->n_authorization_params != b->n_authorization_params)
        return false;
    for (size_t i = 0; i < a->n_authorization_params; i++)
        if (strcmp(a->authorization_params[i]->key, b->authorization_params[i]->key) != 0 ||
            strcmp(a->authorization_params[i]->value, b->authorization_params[i]->value) != 0)
            return false;
    return true;
}

/* The input fields that differ between a and b, by their update_mask names. */
static size_t oauth_pb_diff(const Credex__V1__Connector *a, const Credex__V1__Connector *b,
                            const char **changed)
{
    const Credex__V1__ConnectorEndpoints *ea = a->endpoints, *eb = b->endpoints;
    size_t n = 0;
    if (strcmp(a->display_name, b->display_name) != 0)
        changed[n++] = "display_name";
    if (strcmp(a->client_id, b->client_id) != 0)
        changed[n++] = "client_id";
    if (strcmp(ea->authorization_url, eb->authorization_url) != 0 ||
        strcmp(ea->token_url, eb->token_url) != 0 ||
        strcmp(ea->userinfo_url, eb->userinfo_url) != 0 ||
        strcmp(ea->revocation_url, eb->revocation_url) != 0 ||
        strcmp(ea->issuer_url, eb->issuer_url) != 0)
        changed[n++] = "endpoints";
    if (strcmp(a->redirect_uri, b->redirect_uri) != 0)
        changed[n++] = "redirect_uri";
    if (!oauth_scopes_equal(a, b))
        changed[n++] = "scopes";
    if (strcmp(a->account_mapping->account_id_field, b->account_mapping->account_id_field) != 0 ||
        strcmp(a->account_mapping->account_name_field, b->account_mapping->account_name_field) != 0)
        changed[n++] = "account_mapping";
    if (a->refresh_policy->refresh_enabled != b->refresh_policy->refresh_enabled ||
        a->refresh_policy->refresh_before_expiry_ms != b->refresh_policy->refresh_before_expiry_ms)
        changed[n++] = "refresh_policy";
    if (!oauth_params_equal(a, b))
        changed[n++] = "authorization_params";
    if (strcmp(a->client_auth_method, b->client_auth_method) != 0)
        changed[n++] = "client_auth_method";
    return n;
}

/* ---- documents --------------------------------------------------------------------------- */

static const char *oauth_live_key(oauth_ctx_t *x, const Credex__V1__Connector *c)
{
    char buf[160];
    if (c->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED)
        snprintf(buf, sizeof(buf), "deleted/%s", c->connector_id);
    else
        snprintf(buf, sizeof(buf), "%s/%s", c->provider_key, OAUTH_NAME(oauth_type_names, c->type));
    return oauth_str(x, buf);
}

void oauth_bson_strs(bson_t *doc, const char *key, char *const *v, size_t n)
{
    bson_t arr;
    char idx[16];
    const char *k;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &arr);
    for (size_t i = 0; i < n; i++) {
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof(idx));
        BSON_APPEND_UTF8(&arr, k, v[i]);
    }
    bson_append_array_end(doc, &arr);
}

/* The document of c (every field but _id; the caller adds _id for an insert). */
static void oauth_doc_fields(oauth_ctx_t *x, const Credex__V1__Connector *c, int64_t version,
                             oauth_client_auth_t auth, bson_t *doc)
{
    const Credex__V1__ConnectorEndpoints *e = c->endpoints;
    BSON_APPEND_UTF8(doc, "connector_id", c->connector_id);
    BSON_APPEND_UTF8(doc, "provider_key", c->provider_key);
    BSON_APPEND_UTF8(doc, "type", OAUTH_NAME(oauth_type_names, c->type));
    BSON_APPEND_UTF8(doc, "status", OAUTH_NAME(oauth_status_names, c->status));
    BSON_APPEND_UTF8(doc, "live_key", oauth_live_key(x, c));
    BSON_APPEND_UTF8(doc, "display_name", c->display_name);
    oauth_bson_strs(doc, "enabled_for", c->enabled_for, c->n_enabled_for);
    BSON_APPEND_UTF8(doc, "client_id", c->client_id);
    BSON_APPEND_UTF8(doc, "client_secret_id", c->client_secret_id);
    BSON_APPEND_UTF8(doc, "client_auth", OAUTH_NAME(oauth_auth_names, auth));
    BSON_APPEND_UTF8(doc, "authorization_url", e->authorization_url);
    BSON_APPEND_UTF8(doc, "token_url", e->token_url);
    BSON_APPEND_UTF8(doc, "userinfo_url", e->userinfo_url);
    BSON_APPEND_UTF8(doc, "revocation_url", e->revocation_url);
    BSON_APPEND_UTF8(doc, "issuer_url", e->issuer_url);
    BSON_APPEND_UTF8(doc, "redirect_uri", c->redirect_uri);
    oauth_bson_strs(doc, "scopes", c->scopes, c->n_scopes);
    BSON_APPEND_INT64(doc, "scopes_version", c->scopes_version);
    BSON_APPEND_UTF8(doc, "account_id_field", c->account_mapping->account_id_field);
    BSON_APPEND_UTF8(doc, "account_name_field", c->account_mapping->account_name_field);
    BSON_APPEND_BOOL(doc, "refresh_enabled", c->refresh_policy->refresh_enabled);
    BSON_APPEND_INT64(doc, "refresh_before_expiry_ms", c->refresh_policy->refresh_before_expiry_ms);
    /* Pairs, not a sub-document: parameter names may hold '.', which field names should not. */
    bson_t arr, pair;
    char idx[16];
    const char *k;
    BSON_APPEND_ARRAY_BEGIN(doc, "authorization_params", &arr);
    for (size_t i = 0; i < c->n_authorization_params; i++) {
        bson_uint32_to_string((uint32_t)i, &k, idx, sizeof(idx));
        BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &pair);
        BSON_APPEND_UTF8(&pair, "name", c->authorization_params[i]->key);
        BSON_APPEND_UTF8(&pair, "value", c->authorization_params[i]->value);
        bson_append_document_end(&arr, &pair);
    }
    bson_append_array_end(doc, &arr);
    BSON_APPEND_INT64(doc, "version", version);
    BSON_APPEND_UTF8(doc, "created_by", c->created_by);
    BSON_APPEND_DATE_TIME(doc, "created_at", c->created_at_ms);
    BSON_APPEND_UTF8(doc, "updated_by", c->updated_by);
    BSON_APPEND_DATE_TIME(doc, "updated_at", c->updated_at_ms);
}

bool oauth_rd_find(oauth_reader_t *r, const char *key, bson_iter_t *it)
{
    if (bson_iter_init_find(it, r->doc, key))
        return true;
    if (!r->bad)
        r->bad = key;
    return false;
}

void oauth_rd_fail(oauth_reader_t *r, const char *key)
{
    if (!r->bad)
        r->bad = key;
}

char *oauth_rd_str(oauth_reader_t *r, const char *key)
{
    bson_iter_t it;
    if (!oauth_rd_find(r, key, &it) || !BSON_ITER_HOLDS_UTF8(&it)) {
        oauth_rd_fail(r, key);
        return oauth_str(r->x, "");
    }
    uint32_t len = 0;
    const char *s = bson_iter_utf8(&it, &len);
    if (strlen(s) != len || len > 4096) {
        oauth_rd_fail(r, key);
        return oauth_str(r->x, "");
    }
    return oauth_str(r->x, s);
}

/* The field key holding a value of type a or b (else it is the reader's failure). */
bool oauth_rd_typed(oauth_reader_t *r, const char *key, bson_type_t a, bson_type_t b,
                    bson_iter_t *it)
{
    if (oauth_rd_find(r, key, it) && (bson_iter_type(it) == a || bson_iter_type(it) == b))
        return true;
    oauth_rd_fail(r, key);
    return false;
}

int64_t oauth_rd_int(oauth_reader_t *r, const char *key)
{
    bson_iter_t it;
    return oauth_rd_typed(r, key, BSON_TYPE_INT64, BSON_TYPE_INT32, &it) ? bson_iter_as_int64(&it)
                                                                         : 0;
}

int64_t oauth_rd_date(oauth_reader_t *r, const char *key)
{
    bson_iter_t it;
    return oauth_rd_typed(r, key, BSON_TYPE_DATE_TIME, BSON_TYPE_DATE_TIME, &it)
               ? bson_iter_date_time(&it)
               : 0;
}

bool oauth_rd_bool(oauth_reader_t *r, const char *key)
{
    bson_iter_t it;
    return oauth_rd_typed(r, key, BSON_TYPE_BOOL, BSON_TYPE_BOOL, &it) && bson_iter_bool(&it);
}

char **oauth_rd_strs(oauth_reader_t *r, const char *key, size_t max, size_t *n)
{
    bson_iter_t it, sub;
    *n = 0;
    if (!oauth_rd_find(r, key, &it) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &sub)) {
        oauth_rd_fail(r, key);
        return oauth_strv(r->x, 0);
    }
    char **v = oauth_strv(r->x, max);
    while (bson_iter_next(&sub)) {
        if (*n >= max || !BSON_ITER_HOLDS_UTF8(&sub)) {
            oauth_rd_fail(r, key);
            break;
        }
        v[(*n)++] = oauth_str(r->x, bson_iter_utf8(&sub, NULL));
    }
    return v;
}

static void oauth_rd_params(oauth_reader_t *r, Credex__V1__Connector *c)
{
    bson_iter_t it, sub, f;
    c->authorization_params = rpc_arena_alloc(r->x->arena, OAUTH_AUTH_PARAMS_MAX * sizeof(void *));
    if (!oauth_rd_find(r, "authorization_params", &it) || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &sub)) {
        oauth_rd_fail(r, "authorization_params");
        return;
    }
    while (bson_iter_next(&sub)) {
        const uint8_t *data;
        uint32_t len;
        bson_t pair;
        if (c->n_authorization_params >= OAUTH_AUTH_PARAMS_MAX || !BSON_ITER_HOLDS_DOCUMENT(&sub)) {
            oauth_rd_fail(r, "authorization_params");
            return;
        }
        bson_iter_document(&sub, &len, &data);
        if (!bson_init_static(&pair, data, len)) {
            oauth_rd_fail(r, "authorization_params");
            return;
        }
        Credex__V1__Connector__AuthorizationParamsEntry *e =
            rpc_arena_alloc(r->x->arena, sizeof(*e));
        credex__v1__connector__authorization_params_entry__init(e);
        if (!bson_iter_init_find(&f, &pair, "name") || !BSON_ITER_HOLDS_UTF8(&f)) {
            oauth_rd_fail(r, "authorization_params");
            return;
        }
        e->key = oauth_str(r->x, bson_iter_utf8(&f, NULL));
        if (!bson_iter_init_find(&f, &pair, "value") || !BSON_ITER_HOLDS_UTF8(&f)) {
            oauth_rd_fail(r, "authorization_params");
            return;
        }
        e->value = oauth_str(r->x, bson_iter_utf8(&f, NULL));
        c->authorization_params[c->n_authorization_params++] = e;
    }
}

static bool oauth_doc_decode(oauth_ctx_t *x, const bson_t *doc, oauth_stored_t *out,
                             cx_error_t *err)
{
    oauth_reader_t r = {.x = x, .doc = doc};
    Credex__V1__Connector *c = oauth_pb_new(x);
    c->connector_id = oauth_rd_str(&r, "connector_id");
    c->provider_key = oauth_rd_str(&r, "provider_key");
    int type = oauth_name_parse(oauth_type_names, 4, oauth_rd_str(&r, "type"));
    int status = oauth_name_parse(oauth_status_names, 4, oauth_rd_str(&r, "status"));
    int auth = oauth_name_parse(oauth_auth_names, 2, oauth_rd_str(&r, "client_auth"));
    if (type <= 0)
        oauth_rd_fail(&r, "type");
    if (status <= 0)
        oauth_rd_fail(&r, "status");
    if (auth < 0)
        oauth_rd_fail(&r, "client_auth");
    c->type = type > 0 ? (Credex__V1__ConnectorType)type : 0;
    c->status = status > 0 ? (Credex__V1__ConnectorStatus)status : 0;
    c->display_name = oauth_rd_str(&r, "display_name");
    c->enabled_for = oauth_rd_strs(&r, "enabled_for", 1000, &c->n_enabled_for);
    c->client_id = oauth_rd_str(&r, "client_id");
    c->client_secret_id = oauth_rd_str(&r, "client_secret_id");
    c->client_secret_masked = c->client_secret_id[0] != '\0';
    c->endpoints->authorization_url = oauth_rd_str(&r, "authorization_url");
    c->endpoints->token_url = oauth_rd_str(&r, "token_url");
    c->endpoints->userinfo_url = oauth_rd_str(&r, "userinfo_url");
    c->endpoints->revocation_url = oauth_rd_str(&r, "revocation_url");
    c->endpoints->issuer_url = oauth_rd_str(&r, "issuer_url");
    c->redirect_uri = oauth_rd_str(&r, "redirect_uri");
    c->scopes = oauth_rd_strs(&r, "scopes", OAUTH_SCOPES_MAX, &c->n_scopes);
    int64_t sv = oauth_rd_int(&r, "scopes_version");
    if (sv < 1 || sv > UINT32_MAX)
        oauth_rd_fail(&r, "scopes_version");
    c->scopes_version = (uint32_t)sv;
    c->account_mapping->account_id_field = oauth_rd_str(&r, "account_id_field");
    c->account_mapping->account_name_field = oauth_rd_str(&r, "account_name_field");
    c->refresh_policy->refresh_enabled = oauth_rd_bool(&r, "refresh_enabled");
    c->refresh_policy->refresh_before_expiry_ms = oauth_rd_int(&r, "refresh_before_expiry_ms");
    oauth_rd_params(&r, c);
    int64_t version = oauth_rd_int(&r, "version");
    if (version < 1)
        oauth_rd_fail(&r, "version");
    c->created_by = oauth_rd_str(&r, "created_by");
    c->created_at_ms = oauth_rd_date(&r, "created_at");
    c->updated_by = oauth_rd_str(&r, "updated_by");
    c->updated_at_ms = oauth_rd_date(&r, "updated_at");
    if (r.bad)
        return cx_error_set(err, CX_ERR_INTEGRITY, "stored connector is malformed (%s)", r.bad);
    out->pb = c;
    out->version = version;
    out->client_auth = (oauth_client_auth_t)auth;
    c->client_auth_method = oauth_str(x, oauth_client_auth_name(out->client_auth));
    return true;
}

/* ---- reads ------------------------------------------------------------------------------- */

static bool oauth_find(oauth_ctx_t *x, const bson_t *filter, oauth_stored_t *out, bool *found,
                       cx_error_t *err)
{
    bson_t doc;
    *found = false;
    if (!oauth_connect(x, err) ||
        !mdb_find_one(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS, filter, &doc, found, err))
        return false;
    if (!*found)
        return true;
    bool ok = oauth_doc_decode(x, &doc, out, err);
    bson_destroy(&doc);
    if (!ok)
        cx_log_error(x->correlation_id, "oauth.integrity_error",
                     CX_LOG_STR("detail", err->message));
    return ok;
}

static bool oauth_find_id(oauth_ctx_t *x, const char *id, oauth_stored_t *out, bool *found,
                          cx_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", id);
    bool ok = oauth_find(x, &filter, out, found, err);
    bson_destroy(&filter);
    return ok;
}

bool oauth_connector_find_live(oauth_ctx_t *x, const char *provider_key,
                               Credex__V1__ConnectorType type, oauth_stored_t *out, bool *found,
                               cx_error_t *err)
{
    char key[160];
    snprintf(key, sizeof(key), "%s/%s", provider_key, OAUTH_NAME(oauth_type_names, type));
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "live_key", key);
    bool ok = oauth_find(x, &filter, out, found, err);
    bson_destroy(&filter);
    return ok;
}

bool oauth_connector_load_cached(oauth_ctx_t *x, const char *id, oauth_stored_t *out,
                                 cx_error_t *err)
{
    bson_t doc;
    bool found = false;
    if (!x->o->connectors_cache)
        return oauth_connector_load(x, id, out, err);
    if (!id || !id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector_id is required");
    if (!oauth_connect(x, err) ||
        !mdb_cache_find(x->o->connectors_cache, x->c, id, &doc, &found, NULL, err))
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connector not found");
    bool ok = oauth_doc_decode(x, &doc, out, err);
    bson_destroy(&doc);
    if (!ok) { /* what the database holds may be put right: never answer it from memory */
        mdb_cache_evict(x->o->connectors_cache, id);
        cx_log_error(x->correlation_id, "oauth.integrity_error",
                     CX_LOG_STR("detail", err->message));
    }
    return ok;
}

bool oauth_connector_load(oauth_ctx_t *x, const char *id, oauth_stored_t *out, cx_error_t *err)
{
    bool found = false;
    if (!id || !id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector_id is required");
    if (!oauth_find_id(x, id, out, &found, err))
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connector not found");
    return true;
}

/* ---- writes ------------------------------------------------------------------------------ */

/* Write pb as the document's new state if its version is still cur_version; *out is what the
 * database then holds. Another write since (or a vanished document): conflict (not_found). */
static bool oauth_write(oauth_ctx_t *x, int64_t cur_version, Credex__V1__Connector *pb,
                        oauth_client_auth_t auth, oauth_stored_t *out, cx_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, after;
    bool matched = false, ok = false;
    pb->updated_at_ms = mdb_now_ms();
    BSON_APPEND_UTF8(&sel, "_id", pb->connector_id);
    BSON_APPEND_INT64(&sel, "version", cur_version);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    oauth_doc_fields(x, pb, cur_version + 1, auth, &set);
    bson_append_document_end(&upd, &set);
    mdb_cache_evict(x->o->connectors_cache, pb->connector_id);
    bool wrote =
        oauth_connect(x, err) && mdb_update_one_returning(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS,
                                                          &sel, &upd, &after, &matched, err);
    mdb_cache_evict(x->o->connectors_cache, pb->connector_id);
    if (!wrote)
        goto out;
    if (!matched) {
        oauth_stored_t now;
        bool found = false;
        if (oauth_find_id(x, pb->connector_id, &now, &found, err))
            cx_error_set(err, found ? CX_ERR_CONFLICT : CX_ERR_NOT_FOUND,
                         found ? "connector changed concurrently; read it again"
                               : "connector not found");
        goto out;
    }
    ok = oauth_doc_decode(x, &after, out, err);
    bson_destroy(&after);
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* Store the client secret of connector pb (idempotent per connector: a replay returns the
 * secret already stored under the same idempotency key). *secret_id in the arena. */
static bool oauth_secret_create(oauth_ctx_t *x, const Credex__V1__Connector *pb,
                                const uint8_t *secret, size_t len, char **secret_id,
                                cx_error_t *err)
{
    char key[128], name[128];
    snprintf(key, sizeof(key), "connector/%s/client_secret", pb->connector_id);
    snprintf(name, sizeof(name), "OAuth client secret of connector %s", pb->connector_id);
    Credex__V1__StoreCreateSecretRequest req = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    req.caller = oauth_caller(x, "");
    req.idempotency_key = key;
    req.owner = oauth_platform_owner(x);
    req.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    req.display_name = name;
    req.provider = pb->provider_key;
    req.connector_id = pb->connector_id;
    req.value.data = (uint8_t *)secret;
    req.value.len = len;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "CreateSecret", &req.base, &reply, err))
        return false;
    const Credex__V1__StoreCreateSecretResponse *r =
        (const Credex__V1__StoreCreateSecretResponse *)reply;
    if (!r->secret || !r->secret->secret_id[0])
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "store answered without a secret id");
    *secret_id = r->secret->secret_id;
    return true;
}

/* Record the client secret's id in the document (whatever its version: nothing else changes). */
static bool oauth_secret_link(oauth_ctx_t *x, const char *connector_id, const char *secret_id,
                              oauth_stored_t *out, cx_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, inc, after;
    bool matched = false, ok = false;
    BSON_APPEND_UTF8(&sel, "_id", connector_id);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_UTF8(&set, "client_secret_id", secret_id);
    bson_append_document_end(&upd, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$inc", &inc);
    BSON_APPEND_INT64(&inc, "version", 1);
    bson_append_document_end(&upd, &inc);
    mdb_cache_evict(x->o->connectors_cache, connector_id);
    bool wrote =
        oauth_connect(x, err) && mdb_update_one_returning(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS,
                                                          &sel, &upd, &after, &matched, err);
    mdb_cache_evict(x->o->connectors_cache, connector_id);
    if (!wrote)
        goto out;
    if (!matched) {
        cx_error_set(err, CX_ERR_NOT_FOUND, "connector not found");
        goto out;
    }
    ok = oauth_doc_decode(x, &after, out, err);
    bson_destroy(&after);
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* The secret's current version (RotateSecret from oauth always names the version it replaces). */
bool oauth_secret_version(oauth_ctx_t *x, const char *secret_id, uint32_t *version, cx_error_t *err)
{
    Credex__V1__StoreGetSecretRequest req = CREDEX__V1__STORE_GET_SECRET_REQUEST__INIT;
    req.caller = oauth_caller(x, "");
    req.secret_id = (char *)secret_id;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "GetSecret", &req.base, &reply, err))
        return false;
    *version = ((const Credex__V1__SecretMetadata *)reply)->current_version;
    return true;
}

bool oauth_secret_rotate(oauth_ctx_t *x, const char *secret_id, uint32_t expected,
                         const uint8_t *secret, size_t len, cx_error_t *err)
{
    Credex__V1__StoreRotateSecretRequest req = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    req.caller = oauth_caller(x, "");
    req.secret_id = (char *)secret_id;
    req.expected_version = expected;
    req.value.data = (uint8_t *)secret;
    req.value.len = len;
    ProtobufCMessage *reply = NULL;
    return oauth_store_call(x, "RotateSecret", &req.base, &reply, err);
}

bool oauth_secret_delete(oauth_ctx_t *x, const char *secret_id, cx_error_t *err)
{
    Credex__V1__StoreDeleteSecretRequest req = CREDEX__V1__STORE_DELETE_SECRET_REQUEST__INIT;
    req.caller = oauth_caller(x, "");
    req.secret_id = (char *)secret_id;
    ProtobufCMessage *reply = NULL;
    return oauth_store_call(x, "DeleteSecret", &req.base, &reply, err);
}

static void oauth_validate_env(oauth_ctx_t *x, oauth_validate_env_t *env)
{
    env->allow_hosts = (const char *const *)x->o->allow_hosts;
    env->production = x->o->cfg->production;
}

/* Counts live connectors, stopping at the bound. */
static bool oauth_count_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    (void)doc;
    size_t *n = ctx;
    if (++*n >= OAUTH_CONNECTORS_MAX)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "at most %d connectors",
                            OAUTH_CONNECTORS_MAX);
    return true;
}

static bool oauth_room_for_one(oauth_ctx_t *x, cx_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, ne;
    size_t n = 0;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "status", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "deleted");
    bson_append_document_end(&filter, &ne);
    bool ok = oauth_connect(x, err) && mdb_find_each(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS,
                                                     &filter, oauth_count_row, &n, err);
    bson_destroy(&filter);
    return ok;
}

bool oauth_connector_create(oauth_ctx_t *x, const char *id, const Credex__V1__Connector *in,
                            const uint8_t *secret, size_t secret_len,
                            Credex__V1__ConnectorStatus status, oauth_stored_t *out,
                            cx_error_t *err)
{
    oauth_validate_env_t env;
    oauth_connector_t checked;
    char idbuf[32];
    if (!secret || secret_len == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "client_secret is required");
    oauth_validate_env(x, &env);
    if (!oauth_connector_validate(in, &env, &checked, err))
        return false;
    Credex__V1__Connector *pb = oauth_pb_new(x);
    oauth_pb_set_config(x, pb, &checked);
    oauth_client_auth_t auth = checked.client_auth;
    oauth_connector_clear(&checked);
    if (!oauth_room_for_one(x, err))
        return false;
    if (!id) {
        static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        unsigned char rnd[26];
        if (!cx_crypto_random(rnd, sizeof(rnd), err))
            return cx_error_set(err, CX_ERR_INTERNAL, "random id");
        memcpy(idbuf, "con_", 4);
        for (size_t i = 0; i < sizeof(rnd); i++)
            idbuf[4 + i] = crockford[rnd[i] & 31];
        idbuf[30] = '\0';
        id = idbuf;
    }
    pb->connector_id = oauth_str(x, id);
    pb->status = status;
    pb->enabled_for = in->enabled_for;
    pb->n_enabled_for = in->n_enabled_for;
    pb->client_secret_id = oauth_str(x, "");
    pb->scopes_version = 1;
    pb->created_by = oauth_str(x, x->actor[0] ? x->actor : OAUTH_PLATFORM_ACTOR);
    pb->updated_by = pb->created_by;
    pb->created_at_ms = pb->updated_at_ms = mdb_now_ms();

    /* The document first: its insert is the uniqueness decision, so a loser of a race never
     * stores a secret. */
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", pb->connector_id);
    oauth_doc_fields(x, pb, 1, auth, &doc);
    bool ok = oauth_connect(x, err) &&
              mdb_insert_one(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS, &doc, err);
    bson_destroy(&doc);
    if (!ok) {
        if (err->code == CX_ERR_CONFLICT)
            cx_error_set(err, CX_ERR_CONFLICT,
                         "a live connector of this provider_key and type already exists");
        return false;
    }
    char *secret_id = NULL;
    if (!oauth_secret_create(x, pb, secret, secret_len, &secret_id, err)) {
        /* No connector without its secret: remove the document, keep the store's error. */
        cx_error_t derr;
        bson_t filter = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&filter, "_id", pb->connector_id);
        if (!mdb_delete_one(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS, &filter, &derr))
            cx_log_error(x->correlation_id, "oauth.create_rollback_failed",
                         CX_LOG_STR("connector_id", pb->connector_id),
                         CX_LOG_STR("reason", derr.message));
        mdb_cache_evict(x->o->connectors_cache, pb->connector_id);
        bson_destroy(&filter);
        return false;
    }
    return oauth_secret_link(x, pb->connector_id, secret_id, out, err);
}

/* Replace the fields of mask in merged by in's. "client_secret" is noted, not a field. */
static bool oauth_mask_apply(Credex__V1__Connector *merged, const Credex__V1__Connector *in,
                             char *const *mask, size_t nmask, bool *secret, cx_error_t *err)
{
    static const Credex__V1__ConnectorEndpoints no_endpoints =
        CREDEX__V1__CONNECTOR_ENDPOINTS__INIT;
    static const Credex__V1__AccountMapping no_mapping = CREDEX__V1__ACCOUNT_MAPPING__INIT;
    static const Credex__V1__RefreshPolicy no_policy = CREDEX__V1__REFRESH_POLICY__INIT;
    *secret = false;
    for (size_t i = 0; i < nmask; i++) {
        const char *f = mask[i];
        if (strcmp(f, "client_secret") == 0) {
            *secret = true;
            continue;
        }
        if (!in)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "connector is required when update_mask names its fields");
        if (strcmp(f, "display_name") == 0) {
            merged->display_name = in->display_name;
        } else if (strcmp(f, "client_id") == 0) {
            merged->client_id = in->client_id;
        } else if (strcmp(f, "redirect_uri") == 0) {
            merged->redirect_uri = in->redirect_uri;
        } else if (strcmp(f, "scopes") == 0) {
            merged->scopes = in->scopes;
            merged->n_scopes = in->n_scopes;
        } else if (strcmp(f, "endpoints") == 0) {
            *merged->endpoints = in->endpoints ? *in->endpoints : no_endpoints;
        } else if (strcmp(f, "account_mapping") == 0) {
            *merged->account_mapping = in->account_mapping ? *in->account_mapping : no_mapping;
        } else if (strcmp(f, "refresh_policy") == 0) {
            *merged->refresh_policy = in->refresh_policy ? *in->refresh_policy : no_policy;
        } else if (strcmp(f, "client_auth_method") == 0) {
            merged->client_auth_method = in->client_auth_method;
        } else if (strcmp(f, "authorization_params") == 0) {
            merged->authorization_params = in->authorization_params;
            merged->n_authorization_params = in->n_authorization_params;
        } else if (strcmp(f, "provider_key") == 0 || strcmp(f, "type") == 0) {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "update_mask: provider_key and type cannot be changed (create "
                                "another connector)");
        } else if (strcmp(f, "enabled_for") == 0) {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "update_mask: enabled_for changes through EnableConnector and "
                                "DisableConnector");
        } else {
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask: unknown field");
        }
    }
    return true;
}

/* The client secret of a connector that has one becomes secret (a new version in store). */
static bool oauth_secret_replace(oauth_ctx_t *x, const Credex__V1__Connector *pb,
                                 const uint8_t *secret, size_t len, cx_error_t *err)
{
    uint32_t version = 0;
    return oauth_secret_version(x, pb->client_secret_id, &version, err) &&
           oauth_secret_rotate(x, pb->client_secret_id, version, secret, len, err);
}

bool oauth_connector_update(oauth_ctx_t *x, const oauth_stored_t *cur,
                            const Credex__V1__Connector *in, char *const *mask, size_t nmask,
                            const uint8_t *secret, size_t secret_len, oauth_stored_t *out,
                            const char **changed, size_t *nchanged, cx_error_t *err)
{
    bool rotate = false;
    *nchanged = 0;
    if (cur->pb->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "connector is deleted");
    Credex__V1__Connector *merged = oauth_pb_copy(x, cur->pb);
    if (!oauth_mask_apply(merged, in, mask, nmask, &rotate, err))
        return false;
    if (rotate && (!secret || secret_len == 0))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "client_secret is required when update_mask names it");
    oauth_validate_env_t env;
    oauth_connector_t checked;
    oauth_validate_env(x, &env);
    if (!oauth_connector_validate(merged, &env, &checked, err))
        return false;
    Credex__V1__Connector *next = oauth_pb_copy(x, cur->pb);
    oauth_pb_set_config(x, next, &checked);
    oauth_client_auth_t auth = checked.client_auth;
    oauth_connector_clear(&checked);
    size_t n = oauth_pb_diff(cur->pb, next, changed);
    bool scopes_changed = false;
    for (size_t i = 0; i < n; i++)
        scopes_changed |= strcmp(changed[i], "scopes") == 0;
    if (rotate)
        changed[n++] = "client_secret";
    *nchanged = n;
    if (n == 0) {
        *out = *cur;
        return true;
    }
    /* The next issue marks the connections consented under an older scopes_version. */
    if (scopes_changed)
        next->scopes_version = cur->pb->scopes_version + 1;
    next->updated_by = oauth_str(x, x->actor[0] ? x->actor : OAUTH_PLATFORM_ACTOR);
    if (!oauth_write(x, cur->version, next, auth, out, err))
        return false;
    if (!rotate)
        return true;
    if (!out->pb->client_secret_id[0]) {
        char *secret_id = NULL;
        return oauth_secret_create(x, out->pb, secret, secret_len, &secret_id, err) &&
               oauth_secret_link(x, out->pb->connector_id, secret_id, out, err);
    }
    return oauth_secret_replace(x, out->pb, secret, secret_len, err);
}

/* Resolve the stored client secret and compare it with secret in constant time; the plaintext
 * is wiped at once. *version is the version compared. */
static bool oauth_secret_equals(oauth_ctx_t *x, const char *secret_id, const uint8_t *secret,
                                size_t len, bool *equal, uint32_t *version, cx_error_t *err)
{
    Credex__V1__StoreResolveRequest req = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    req.caller = oauth_caller(x, OAUTH_SECRET_USE);
    req.secret_id = (char *)secret_id;
    req.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "Resolve", &req.base, &reply, err))
        return false;
    Credex__V1__StoreResolveResponse *r = (Credex__V1__StoreResolveResponse *)reply;
    cx_secret_t *a = cx_secret_from(r->value.data, r->value.len);
    cx_secret_t *b = cx_secret_from(secret, len);
    cx_crypto_wipe(r->value.data, r->value.len);
    bool ok = a && b;
    if (ok) {
        *equal = cx_secret_equal(a, b);
        *version = r->version;
    }
    cx_secret_free(a);
    cx_secret_free(b);
    if (!ok)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return true;
}

bool oauth_connector_secret_ensure(oauth_ctx_t *x, oauth_stored_t *cur, const uint8_t *secret,
                                   size_t secret_len, bool *rotated, cx_error_t *err)
{
    *rotated = false;
    for (int attempt = 0; attempt < OAUTH_WRITE_TRIES; attempt++) {
        if (!cur->pb->client_secret_id[0]) {
            /* A create that has not linked its secret yet (another replica in the middle of
             * one, or one that stopped there): the idempotency key makes this the same secret. */
            char *secret_id = NULL;
            if (!oauth_secret_create(x, cur->pb, secret, secret_len, &secret_id, err) ||
                !oauth_secret_link(x, cur->pb->connector_id, secret_id, cur, err))
                return false;
        }
        bool equal = false;
        uint32_t version = 0;
        if (!oauth_secret_equals(x, cur->pb->client_secret_id, secret, secret_len, &equal, &version,
                                 err))
            return false;
        if (equal)
            return true;
        cx_error_t e;
        cx_error_clear(&e);
        if (oauth_secret_rotate(x, cur->pb->client_secret_id, version, secret, secret_len, &e)) {
            *rotated = true;
            return true;
        }
        if (e.code != CX_ERR_CONFLICT) {
            cx_error_copy(err, &e);
            return false;
        }
        /* Another replica rotated first: compare with what it stored. */
    }
    return cx_error_set(err, CX_ERR_CONFLICT, "client secret kept changing concurrently");
}

/* ---- handlers ---------------------------------------------------------------------------- */

/* One Connectors method: its audit event, whether only platform admins may call it, and its
 * steps. */

/* The request's id field (connector_id, connection_id), "" when it has none. */
static const char *oauth_request_id(const ProtobufCMessage *request, const char *field)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(request->descriptor, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING)
        return "";
    const char *s = *(const char *const *)((const char *)request + f->offset);
    return s ? s : "";
}

/* The one path of every Connectors call: the gateway's facts, the input contract, the admin
 * requirement, the method, and exactly one audit event for a failure. */
bool oauth_run(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
               cx_error_t *err, const oauth_method_t *m)
{
    oauth_ctx_t x;
    const char *resource_id = "";
    bool ok = oauth_ctx_from_call(call, &x, err);
    if (!x.o)
        return false;
    if (ok && !cx_contract_check(request, err))
        ok = false;
    if (ok) /* audited with the connector it names, once the request passed the contract */
        resource_id = oauth_request_id(request, m->id_field ? m->id_field : "connector_id");
    if (ok && m->admin && (!x.admin || !x.actor[0]))
        ok = cx_error_set(err, CX_ERR_PERMISSION_DENIED, "platform admins only");
    ok = ok && m->run(&x, request, reply, err);
    if (resource_id[0] && m->id_field)
        rpc_call_log_field(call, CX_LOG_STR("connection_id", resource_id));
    else if (resource_id[0])
        rpc_call_log_field(call, CX_LOG_STR("connector_id", resource_id));
    if (!ok) {
        cx_error_t aerr;
        oauth_audit_on(&x, m->resource_type ? m->resource_type : "oauth_connector", m->event_type,
                       resource_id, err->code, NULL, 0, &aerr);
    }
    oauth_ctx_done(&x);
    return ok;
}

static bool oauth_success(oauth_ctx_t *x, const char *event, const oauth_stored_t *s,
                          const char *changed, const char *extra_key, const char *extra_value,
                          cx_error_t *err)
{
    char sv[16];
    snprintf(sv, sizeof(sv), "%u", s->pb->scopes_version);
    oauth_attr_t a[5] = {{"provider_key", s->pb->provider_key},
                         {"type", OAUTH_NAME(oauth_type_names, s->pb->type)},
                         {"scopes_version", sv}};
    size_t n = 3;
    if (changed)
        a[n++] = (oauth_attr_t){"changed_fields", changed};
    if (extra_key)
        a[n++] = (oauth_attr_t){extra_key, extra_value};
    return oauth_audit(x, event, s->pb->connector_id, CX_OK, a, n, err);
}

static const char *oauth_join(oauth_ctx_t *x, const char *const *v, size_t n)
{
    char buf[256];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < sizeof(buf); i++) {
        int w = snprintf(buf + off, sizeof(buf) - off, "%s%s", i ? "," : "", v[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return oauth_str(x, buf);
}

static bool oauth_list_builtin(oauth_ctx_t *x, const ProtobufCMessage *request,
                               ProtobufCMessage **reply, cx_error_t *err)
{
    (void)request;
    size_t n = 0;
    const oauth_provider_t *p = oauth_providers(&n);
    Credex__V1__ListBuiltinProvidersResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__list_builtin_providers_response__init(resp);
    resp->providers = rpc_arena_alloc(x->arena, (n ? n : 1) * sizeof(void *));
    ProtobufCAllocator alloc = rpc_arena_allocator(x->arena);
    for (size_t i = 0; i < n; i++) {
        /* The descriptor's message is heap memory: copied into the call arena by value. */
        Credex__V1__BuiltinProvider *b = oauth_provider_to_proto(&p[i]);
        if (!b)
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        size_t len = protobuf_c_message_get_packed_size(&b->base);
        uint8_t *buf = rpc_arena_alloc(x->arena, len ? len : 1);
        protobuf_c_message_pack(&b->base, buf);
        protobuf_c_message_free_unpacked(&b->base, NULL);
        ProtobufCMessage *copy =
            protobuf_c_message_unpack(&credex__v1__builtin_provider__descriptor, &alloc, len, buf);
        if (!copy)
            return cx_error_set(err, CX_ERR_INTERNAL, "provider descriptor copy failed");
        resp->providers[resp->n_providers++] = (Credex__V1__BuiltinProvider *)copy;
    }
    *reply = &resp->base;
    return true;
}

static bool oauth_visible(const oauth_ctx_t *x, const Credex__V1__Connector *c)
{
    return x->admin || c->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE;
}

static bool oauth_get(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    const Credex__V1__GetConnectorRequest *r = (const Credex__V1__GetConnectorRequest *)request;
    oauth_stored_t s;
    if (!oauth_connector_load(x, r->connector_id, &s, err))
        return false;
    /* Users see active connectors only (the gateway narrows further by OpenFGA); a hidden one
     * looks like a missing one. */
    if (!oauth_visible(x, s.pb))
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connector not found");
    *reply = &s.pb->base;
    return true;
}

typedef struct oauth_list_rows {
    oauth_ctx_t *x;
    Credex__V1__Connector **v;
    size_t n;
} oauth_list_rows_t;

static bool oauth_list_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    oauth_list_rows_t *l = ctx;
    oauth_stored_t s;
    if (l->n >= OAUTH_CONNECTORS_MAX)
        return true; /* the bound of an unpaged list; creates keep below it */
    if (!oauth_doc_decode(l->x, doc, &s, err))
        return false;
    l->v[l->n++] = s.pb;
    return true;
}

static int oauth_pb_cmp(const void *a, const void *b)
{
    const Credex__V1__Connector *ca = *(Credex__V1__Connector *const *)a;
    const Credex__V1__Connector *cb = *(Credex__V1__Connector *const *)b;
    int d = strcmp(ca->provider_key, cb->provider_key);
    return d ? d : strcmp(ca->connector_id, cb->connector_id);
}

static bool oauth_list(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__ListConnectorsRequest *r = (const Credex__V1__ListConnectorsRequest *)request;
    if (r->include_disabled && !x->admin)
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "include_disabled is for platform admins");
    bson_t filter = BSON_INITIALIZER, in, arr;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "status", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
    BSON_APPEND_UTF8(&arr, "0", "active");
    if (r->include_disabled)
        BSON_APPEND_UTF8(&arr, "1", "disabled");
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&filter, &in);
    if (r->provider_key[0])
        BSON_APPEND_UTF8(&filter, "provider_key", r->provider_key);
    oauth_list_rows_t rows = {
        .x = x, .v = rpc_arena_alloc(x->arena, OAUTH_CONNECTORS_MAX * sizeof(void *))};
    bool ok = oauth_connect(x, err) && mdb_find_each(x->o->db, x->c, MDB_COLL_OAUTH_CONNECTORS,
                                                     &filter, oauth_list_row, &rows, err);
    bson_destroy(&filter);
    if (!ok)
        return false;
    qsort(rows.v, rows.n, sizeof(rows.v[0]), oauth_pb_cmp);
    Credex__V1__ListConnectorsResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__list_connectors_response__init(resp);
    resp->connectors = rows.v;
    resp->n_connectors = rows.n;
    *reply = &resp->base;
    return true;
}

static bool oauth_create(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err)
{
    const Credex__V1__CreateConnectorRequest *r =
        (const Credex__V1__CreateConnectorRequest *)request;
    oauth_stored_t s;
    if (!oauth_connector_create(x, NULL, r->connector, r->client_secret.data, r->client_secret.len,
                                CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED, &s, err))
        return false;
    rpc_call_log_field(x->call, CX_LOG_STR("connector_id", s.pb->connector_id));
    if (!oauth_success(x, "connector.created", &s, NULL, NULL, NULL, err))
        return false;
    *reply = &s.pb->base;
    return true;
}

static bool oauth_update(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err)
{
    const Credex__V1__UpdateConnectorRequest *r =
        (const Credex__V1__UpdateConnectorRequest *)request;
    oauth_stored_t cur, s;
    const char *changed[16];
    size_t nchanged = 0, nmarked = 0;
    if (r->n_update_mask == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "update_mask is required");
    if (!oauth_connector_load(x, r->connector_id, &cur, err) ||
        !oauth_connector_update(x, &cur, r->connector, r->update_mask, r->n_update_mask,
                                r->client_secret.data, r->client_secret.len, &s, changed, &nchanged,
                                err) ||
        !oauth_success(x, "connector.updated", &s, oauth_join(x, changed, nchanged), NULL, NULL,
                       err))
        return false;
    /* After the connector's own event: the connections follow the connector's new scopes. */
    if (s.pb->scopes_version != cur.pb->scopes_version &&
        !oauth_connections_mark_reconsent(x, s.pb, &nmarked, err))
        return false;
    Credex__V1__UpdateConnectorResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__update_connector_response__init(resp);
    resp->connector = s.pb;
    resp->reconsent_required_count = (uint32_t)nmarked;
    *reply = &resp->base;
    return true;
}

/* A set operation on the document: read, compute the next state (apply: false = unchanged),
 * write conditionally; a concurrent write makes it read and apply again. */
typedef bool (*oauth_apply_fn)(oauth_ctx_t *x, const void *arg, Credex__V1__Connector *next,
                               bool *changed, cx_error_t *err);

static bool oauth_mutate(oauth_ctx_t *x, const char *id, oauth_apply_fn apply, const void *arg,
                         oauth_stored_t *out, bool *changed, cx_error_t *err)
{
    for (int attempt = 0; attempt < OAUTH_WRITE_TRIES; attempt++) {
        oauth_stored_t cur;
        if (!oauth_connector_load(x, id, &cur, err))
            return false;
        Credex__V1__Connector *next = oauth_pb_copy(x, cur.pb);
        if (!apply(x, arg, next, changed, err))
            return false;
        if (!*changed) {
            *out = cur;
            return true;
        }
        next->updated_by = oauth_str(x, x->actor[0] ? x->actor : OAUTH_PLATFORM_ACTOR);
        if (oauth_write(x, cur.version, next, cur.client_auth, out, err))
            return true;
        if (err->code != CX_ERR_CONFLICT)
            return false;
    }
    return false;
}

static bool oauth_apply_delete(oauth_ctx_t *x, const void *arg, Credex__V1__Connector *next,
                               bool *changed, cx_error_t *err)
{
    (void)x, (void)arg, (void)err;
    *changed = next->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED;
    next->status = CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED;
    return true;
}

static bool oauth_delete(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err)
{
    const Credex__V1__DeleteConnectorRequest *r =
        (const Credex__V1__DeleteConnectorRequest *)request;
    oauth_stored_t s;
    bool changed = false;
    size_t ended = 0;
    if (!oauth_mutate(x, r->connector_id, oauth_apply_delete, NULL, &s, &changed, err))
        return false;
    /* Also on a repeated delete: what failed before goes now (store's DeleteSecret is
     * idempotent). The connections first: their revocation needs the client secret. */
    if (!oauth_connections_end_all(x, s.pb->connector_id, &ended, err))
        return false;
    if (s.pb->client_secret_id[0] && !oauth_secret_delete(x, s.pb->client_secret_id, err))
        return false;
    if (!oauth_success(x, "connector.deleted", &s, NULL, "already_deleted",
                       changed ? "false" : "true", err))
        return false;
    *reply = &s.pb->base;
    return true;
}

typedef struct oauth_teams {
    char **ids;
    size_t n;
} oauth_teams_t;

static bool oauth_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static bool oauth_apply_enable(oauth_ctx_t *x, const void *arg, Credex__V1__Connector *next,
                               bool *changed, cx_error_t *err)
{
    const oauth_teams_t *t = arg;
    if (next->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "connector is deleted");
    *changed = next->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE;
    next->status = CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE;
    char **v = oauth_strv(x, next->n_enabled_for + t->n);
    size_t n = 0;
    for (size_t i = 0; i < next->n_enabled_for; i++)
        v[n++] = next->enabled_for[i];
    for (size_t i = 0; i < t->n; i++)
        if (!oauth_has(v, n, t->ids[i])) {
            v[n++] = t->ids[i];
            *changed = true;
        }
    if (n > 1000)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "enabled_for holds at most 1000 teams");
    next->enabled_for = v;
    next->n_enabled_for = n;
    return true;
}

static bool oauth_apply_disable(oauth_ctx_t *x, const void *arg, Credex__V1__Connector *next,
                                bool *changed, cx_error_t *err)
{
    const oauth_teams_t *t = arg;
    if (next->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "connector is deleted");
    *changed = false;
    if (t->n == 0) {
        /* The connector itself, for everyone; enabled_for is kept for a later enable. */
        *changed = next->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED;
        next->status = CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DISABLED;
        return true;
    }
    char **v = oauth_strv(x, next->n_enabled_for);
    size_t n = 0;
    for (size_t i = 0; i < next->n_enabled_for; i++) {
        if (oauth_has(t->ids, t->n, next->enabled_for[i]))
            *changed = true;
        else
            v[n++] = next->enabled_for[i];
    }
    next->enabled_for = v;
    next->n_enabled_for = n;
    return true;
}

static bool oauth_enable_disable(oauth_ctx_t *x, const char *id, char **teams, size_t nteams,
                                 bool enable, ProtobufCMessage **reply, cx_error_t *err)
{
    oauth_teams_t t = {teams, nteams};
    oauth_stored_t s;
    bool changed = false;
    if (!oauth_mutate(x, id, enable ? oauth_apply_enable : oauth_apply_disable, &t, &s, &changed,
                      err) ||
        !oauth_success(x, enable ? "connector.enabled" : "connector.disabled", &s, NULL, "teams",
                       nteams ? oauth_join(x, (const char *const *)teams, nteams) : "", err))
        return false;
    *reply = &s.pb->base;
    return true;
}

static bool oauth_enable(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err)
{
    const Credex__V1__EnableConnectorRequest *r =
        (const Credex__V1__EnableConnectorRequest *)request;
    return oauth_enable_disable(x, r->connector_id, r->team_ids, r->n_team_ids, true, reply, err);
}

static bool oauth_disable(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                          cx_error_t *err)
{
    const Credex__V1__DisableConnectorRequest *r =
        (const Credex__V1__DisableConnectorRequest *)request;
    return oauth_enable_disable(x, r->connector_id, r->team_ids, r->n_team_ids, false, reply, err);
}

/* ---- TestConnector ----------------------------------------------------------------------- */

typedef struct oauth_checks {
    oauth_ctx_t *x;
    Credex__V1__ConnectorCheck **v;
    size_t n;
    bool ok;
} oauth_checks_t;

static void oauth_check_add(oauth_checks_t *c, const char *name, cx_code_t code, const char *detail)
{
    Credex__V1__ConnectorCheck *k = rpc_arena_alloc(c->x->arena, sizeof(*k));
    credex__v1__connector_check__init(k);
    k->name = oauth_str(c->x, name);
    k->passed = code == CX_OK;
    k->reason = oauth_str(c->x, code == CX_OK ? "" : cx_code_reason(code));
    k->detail = oauth_str(c->x, detail);
    c->ok = c->ok && k->passed;
    c->v[c->n++] = k;
}

static void oauth_test_checks(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_checks_t *k)
{
    const Credex__V1__ConnectorEndpoints *e = c->endpoints;
    const char *urls[] = {e->authorization_url, e->token_url, e->userinfo_url, e->revocation_url,
                          e->issuer_url};
    const char *const *allow = (const char *const *)x->o->allow_hosts;
    cx_code_t https = CX_OK, screen = CX_OK;
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        if (!urls[i][0])
            continue;
        cx_error_t ue;
        if (strncmp(urls[i], "https://", 8) != 0 && https == CX_OK)
            https = CX_ERR_SSRF_BLOCKED;
        if (screen == CX_OK && !cx_http_url_check(urls[i], allow, &ue))
            screen = ue.code;
    }
    oauth_check_add(k, "https", https,
                    https ? "a connector URL is not https" : "every URL is https");

    bool custom = c->type != CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN;
    bool oidc = c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC;
    /* Discovery first: an OIDC connector may leave its endpoints to it, and the token endpoint
     * probed is then the one the issuer's document names. */
    oauth_discovered_t disc;
    memset(&disc, 0, sizeof(disc));
    bool discovery = custom && (oidc || e->issuer_url[0]);
    cx_code_t d = screen;
    const char *dd = "the issuer failed the SSRF screening";
    if (discovery && d == CX_OK && !x->o->http) {
        d = CX_ERR_UNAVAILABLE;
        dd = "the provider client is not available";
    } else if (discovery && d == CX_OK) {
        cx_error_t de;
        cx_error_clear(&de);
        if (oauth_discover(x->o->http, e->issuer_url, oidc, allow, &disc, &de)) {
            dd = "the discovery document names the configured issuer";
        } else {
            d = de.code;
            dd = "discovery failed";
        }
    }
    const char *token_url = e->token_url[0] ? e->token_url : disc.token_url;

    cx_code_t token = CX_OK, ssrf = screen;
    char detail[112] = "a URL failed the SSRF screening";
    long status = 0;
    if (screen != CX_OK) {
        token = screen;
    } else if (!x->o->http) {
        token = ssrf = CX_ERR_UNAVAILABLE;
        snprintf(detail, sizeof(detail), "the provider client is not available");
    } else if (token_url == NULL || !token_url[0]) {
        token = d != CX_OK ? d : CX_ERR_FAILED_PRECONDITION;
        snprintf(detail, sizeof(detail), "no token endpoint: none configured and none discovered");
    } else {
        cx_error_t te;
        cx_error_clear(&te);
        if (!oauth_token_probe(x, c, token_url, &status, &te)) {
            token = te.code;
            if (te.code == CX_ERR_SSRF_BLOCKED)
                ssrf = te.code;
            snprintf(detail, sizeof(detail), "no answer from the token endpoint (%s)",
                     cx_code_reason(te.code));
        } else if (status >= 300 && status < 400) {
            /* A token endpoint that redirects is misconfigured: credex never follows it, so
             * every real token request would fail the same way. */
            token = CX_ERR_FAILED_PRECONDITION;
            snprintf(detail, sizeof(detail),
                     "the token endpoint answered with a redirect (HTTP %ld), which credex never "
                     "follows",
                     status);
        } else {
            snprintf(detail, sizeof(detail), "the token endpoint answered HTTP %ld", status);
        }
    }
    oauth_discovered_clear(&disc);
    oauth_check_add(k, "ssrf", ssrf,
                    ssrf == CX_OK && status ? "every URL and the address connected to are allowed"
                    : ssrf == CX_OK ? "every URL is allowed; the token endpoint was not reached"
                    : ssrf == CX_ERR_UNAVAILABLE ? "the provider client is not available"
                                                 : "a URL or an address it resolves to is not "
                                                   "allowed");
    if (discovery)
        oauth_check_add(k, "discovery", d, dd);
    oauth_check_add(k, "token_endpoint", token, detail);
}

static bool oauth_test(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__TestConnectorRequest *r = (const Credex__V1__TestConnectorRequest *)request;
    oauth_stored_t s;
    if (!oauth_connector_load(x, r->connector_id, &s, err))
        return false;
    if (s.pb->status == CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_DELETED)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "connector is deleted");
    oauth_checks_t k = {.x = x, .v = rpc_arena_alloc(x->arena, 8 * sizeof(void *)), .ok = true};
    oauth_test_checks(x, s.pb, &k);
    const char *failed[8];
    size_t nfailed = 0;
    for (size_t i = 0; i < k.n; i++)
        if (!k.v[i]->passed)
            failed[nfailed++] = k.v[i]->name;
    if (!oauth_success(x, "connector.tested", &s, NULL, "failed_checks",
                       oauth_join(x, failed, nfailed), err))
        return false;
    Credex__V1__TestConnectorResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__test_connector_response__init(resp);
    resp->ok = k.ok;
    resp->checks = k.v;
    resp->n_checks = k.n;
    resp->tested_at_ms = mdb_now_ms();
    *reply = &resp->base;
    return true;
}

/* ---- the method table -------------------------------------------------------------------- */

static const oauth_method_t m_builtin = {"connector.listed", true, oauth_list_builtin, NULL, NULL};
static const oauth_method_t m_list = {"connector.listed", false, oauth_list, NULL, NULL};
static const oauth_method_t m_get = {"connector.read", false, oauth_get, NULL, NULL};
static const oauth_method_t m_create = {"connector.created", true, oauth_create, NULL, NULL};
static const oauth_method_t m_update = {"connector.updated", true, oauth_update, NULL, NULL};
static const oauth_method_t m_delete = {"connector.deleted", true, oauth_delete, NULL, NULL};
static const oauth_method_t m_enable = {"connector.enabled", true, oauth_enable, NULL, NULL};
static const oauth_method_t m_disable = {"connector.disabled", true, oauth_disable, NULL, NULL};
static const oauth_method_t m_test = {"connector.tested", true, oauth_test, NULL, NULL};

OAUTH_ENTRY(h_builtin, m_builtin)
OAUTH_ENTRY(h_list, m_list)
OAUTH_ENTRY(h_get, m_get)
OAUTH_ENTRY(h_create, m_create)
OAUTH_ENTRY(h_update, m_update)
OAUTH_ENTRY(h_delete, m_delete)
OAUTH_ENTRY(h_enable, m_enable)
OAUTH_ENTRY(h_disable, m_disable)
OAUTH_ENTRY(h_test, m_test)

const rpc_method_impl_t oauth_connectors_impls[] = {
    {.method = "ListBuiltinProviders", .kind = RPC_UNARY, .unary = h_builtin},
    {.method = "ListConnectors", .kind = RPC_UNARY, .unary = h_list},
    {.method = "GetConnector", .kind = RPC_UNARY, .unary = h_get},
    {.method = "CreateConnector", .kind = RPC_UNARY, .unary = h_create},
    {.method = "UpdateConnector", .kind = RPC_UNARY, .unary = h_update},
    {.method = "DeleteConnector", .kind = RPC_UNARY, .unary = h_delete},
    {.method = "EnableConnector", .kind = RPC_UNARY, .unary = h_enable},
    {.method = "DisableConnector", .kind = RPC_UNARY, .unary = h_disable},
    {.method = "TestConnector", .kind = RPC_UNARY, .unary = h_test},
};
const size_t oauth_connectors_nimpls =
    sizeof(oauth_connectors_impls) / sizeof(oauth_connectors_impls[0]);
