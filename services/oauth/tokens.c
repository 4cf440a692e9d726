/*
 * oauth provider tokens: credex.v1.ProviderTokens/GetProviderToken, the access token of a
 * user's connection for the gateway's Exchange, refreshed exactly once per expiry across every
 * oauth replica (docs/TOKEN_REFRESH.md).
 *
 * One refresh per connection at a time: in the process, the first caller leads and the others
 * wait for its outcome (a flight); across processes, the leader takes the lease
 * "refresh/<connection id>" (common/mdb mdb_lease) and a leader that does not get it watches
 * the connection document until the holder's refresh lands or its lease ends. The lease keeps
 * refreshes apart but cannot stop a holder that stalled past it; the write can: the new token
 * set is a store RotateSecret naming the version read under the lease, a compare-and-swap on
 * store's unique (secret_id, version) index, so a stale holder's write is refused (conflict)
 * and it answers with the newer token set instead.
 *
 * Material: the token set is resolved from store into heap memory that is wiped when freed;
 * the access token reaches the reply (call arena, wiped by the arena) only after the
 * token.exchanged event is durable. The refresh token never leaves oauth. Logs, messages and
 * audit events carry ids and reason codes, never a token or the provider's text.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log/cx_log.h"
#include "common/mdb/mdb_cache.h"
#include "common/mdb/mdb_lease.h"
#include "credex/v1/store.pb-c.h"
#include "services/oauth/oauth_internal.h"

#define TOK_MIN_VALID_DEFAULT_MS 60000
#define TOK_MIN_VALID_MAX_MS     3600000
#define TOK_PICK_MAX             32  /* connections of one user and provider considered */
#define TOK_POLL_MS              100 /* a lease waiter's look at the connection document */
#define TOK_DEADLINE_MARGIN_MS   250 /* answered this long before the call's deadline */
#define TOK_USE_DEFAULT          "provider_token_exchange"

/* ---- in-process single flight ------------------------------------------------------------ */

typedef struct tok_flight {
    struct tok_flight *next;
    char id[64];
    unsigned refs;
    bool done;
    cx_error_t result; /* the leader's outcome (code CX_OK: refreshed) */
} tok_flight_t;

struct oauth_flights {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tok_flight_t *head;
};

static int64_t tok_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tok_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

bool oauth_tokens_setup(oauth_t *o, cx_error_t *err)
{
    unsigned char rnd[8];
    char host[64] = "";
    struct oauth_flights *fl = calloc(1, sizeof(*fl));
    if (!fl)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&fl->mu, NULL);
    pthread_cond_init(&fl->cv, &ca);
    pthread_condattr_destroy(&ca);
    o->flights = fl;
    if (!cx_crypto_random(rnd, sizeof(rnd), err))
        return cx_error_set(err, CX_ERR_INTERNAL, "no randomness");
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    /* Unique per process: a restarted replica on the same host and pid is another holder. */
    snprintf(o->holder, sizeof(o->holder), "%s:%ld:%02x%02x%02x%02x%02x%02x%02x%02x",
             host[0] ? host : "oauth", (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
             rnd[5], rnd[6], rnd[7]);
    return true;
}

void oauth_tokens_cleanup(oauth_t *o)
{
    if (!o || !o->flights)
        return;
    pthread_cond_destroy(&o->flights->cv);
    pthread_mutex_destroy(&o->flights->mu);
    free(o->flights);
    o->flights = NULL;
}

/* The flight of id, joined or started (*leader). NULL when out of memory: then the caller
 * refreshes alone (the lease still keeps replicas, and this process's threads, apart). */
static tok_flight_t *tok_flight_join(struct oauth_flights *fl, const char *id, bool *leader)
{
    tok_flight_t *f;
    *leader = false;
    pthread_mutex_lock(&fl->mu);
    for (f = fl->head; f && strcmp(f->id, id) != 0; f = f->next)
        ;
    if (!f && (f = calloc(1, sizeof(*f))) != NULL) {
        snprintf(f->id, sizeof(f->id), "%s", id);
        f->next = fl->head;
        fl->head = f;
        *leader = true;
    } else if (!f) {
        *leader = true;
    }
    if (f)
        f->refs++;
    pthread_mutex_unlock(&fl->mu);
    return f;
}

static void tok_flight_unref_locked(struct oauth_flights *fl, tok_flight_t *f)
{
    (void)fl;
    if (--f->refs == 0)
        free(f);
}

/* The leader's outcome lands: waiters wake, later callers start a new flight. */
static void tok_flight_land(struct oauth_flights *fl, tok_flight_t *f, const cx_error_t *result)
{
    pthread_mutex_lock(&fl->mu);
    for (tok_flight_t **p = &fl->head; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    f->done = true;
    if (result)
        f->result = *result;
    else
        cx_error_clear(&f->result);
    pthread_cond_broadcast(&fl->cv);
    tok_flight_unref_locked(fl, f);
    pthread_mutex_unlock(&fl->mu);
}

/* Wait for the leader until deadline (monotonic ms): true with its outcome in *result. */
static bool tok_flight_wait(struct oauth_flights *fl, tok_flight_t *f, int64_t deadline,
                            cx_error_t *result)
{
    struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (long)(deadline % 1000) * 1000000L};
    pthread_mutex_lock(&fl->mu);
    while (!f->done && pthread_cond_timedwait(&fl->cv, &fl->mu, &ts) == 0)
        ;
    bool done = f->done;
    if (done)
        *result = f->result;
    tok_flight_unref_locked(fl, f);
    pthread_mutex_unlock(&fl->mu);
    return done;
}

/* ---- the token set ------------------------------------------------------------------------ */

typedef struct tok_set {
    Credex__V1__ProviderTokenSet *ts; /* heap (protobuf-c's allocator); tok_set_clear wipes */
    uint32_t version;
} tok_set_t;

static void tok_set_clear(tok_set_t *s)
{
    if (!s || !s->ts)
        return;
    cx_crypto_wipe(s->ts->access_token.data, s->ts->access_token.len);
    cx_crypto_wipe(s->ts->refresh_token.data, s->ts->refresh_token.len);
    credex__v1__provider_token_set__free_unpacked(s->ts, NULL);
    s->ts = NULL;
}

/* A packed token set (plaintext, wiped here) into *out. */
static bool tok_set_unpack(uint8_t *buf, size_t len, uint32_t version, tok_set_t *out,
                           cx_error_t *err)
{
    Credex__V1__ProviderTokenSet *ts = credex__v1__provider_token_set__unpack(NULL, len, buf);
    cx_crypto_wipe(buf, len);
    if (!ts)
        return cx_error_set(err, CX_ERR_INTEGRITY, "stored token set is malformed");
    out->ts = ts;
    out->version = version;
    return true;
}

/* Everything one GetProviderToken works with. */
typedef struct tok_req {
    const Credex__V1__GetProviderTokenRequest *r;
    const char *resource;      /* caller.resource_context.provider_resource_id, "" when none */
    oauth_conn_t k;            /* the connection, as last read */
    oauth_stored_t s;          /* its connector */
    const oauth_provider_t *p; /* the descriptor of a built-in connector, else NULL */
    int64_t need_ms;           /* the access token must stay valid this long */
    bool refreshed;
} tok_req_t;

/* The attributes of a token event about q's connection (key NULL: none of its own), into a. */
static size_t tok_attrs(const tok_req_t *q, const char *key, const char *value, oauth_attr_t a[4])
{
    const Credex__V1__Connection *c = q->k.pb;
    a[0] = (oauth_attr_t){"provider_key", c->provider_key};
    a[1] = (oauth_attr_t){"connector_id", c->connector_id};
    a[2] = (oauth_attr_t){"state", oauth_conn_state_name(c->state)};
    if (!key)
        return 3;
    a[3] = (oauth_attr_t){key, value};
    return 4;
}

/* The token set of q's connection from store. With exchange, store records the exchange
 * (token.exchanged, not refreshed) as the read's one audit event when the access token lasts
 * q->need_ms more, and *recorded says it did: the material may then go to the caller with no
 * further event (docs/TOKEN_EXCHANGE.md, "One audit record per exchange"). */
static bool tok_read_as(oauth_ctx_t *x, const tok_req_t *q, tok_set_t *out, bool exchange,
                        bool *recorded, cx_error_t *err)
{
    if (!q->k.secret_id[0])
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connection has no tokens");
    const Credex__V1__CallerContext *in = q->r->caller;
    Credex__V1__StoreResolveRequest req = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    req.caller =
        oauth_own_caller(x, in && in->intended_use[0] ? in->intended_use : TOK_USE_DEFAULT);
    req.caller->resource_context = in ? in->resource_context : NULL;
    req.secret_id = q->k.secret_id;
    req.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    if (exchange) {
        oauth_attr_t a[4];
        size_t n = tok_attrs(q, "refreshed", "false", a);
        req.exchange_event = oauth_audit_event(x, "provider_connection", "token.exchanged",
                                               q->k.pb->connection_id, CX_OK, a, n);
        req.exchange_expires_after_ms = mdb_now_ms() + q->need_ms;
    }
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "Resolve", &req.base, &reply, err))
        return false;
    Credex__V1__StoreResolveResponse *rr = (Credex__V1__StoreResolveResponse *)reply;
    if (recorded)
        *recorded = exchange && rr->exchange_recorded;
    return tok_set_unpack(rr->value.data, rr->value.len, rr->version, out, err);
}

static bool tok_read(oauth_ctx_t *x, const tok_req_t *q, tok_set_t *out, cx_error_t *err)
{
    return tok_read_as(x, q, out, false, NULL, err);
}

static bool tok_valid(const tok_set_t *s, int64_t now, int64_t need_ms)
{
    const Credex__V1__ProviderTokenSet *t = s->ts;
    return t && t->access_token.len > 0 &&
           (t->expires_at_ms == 0 || t->expires_at_ms - now > need_ms);
}

/* ---- picking and checks ------------------------------------------------------------------- */

static bool tok_reaches(const oauth_conn_t *k, const char *resource)
{
    if (!resource[0] || strcmp(k->pb->provider_resource_id, resource) == 0)
        return true;
    for (size_t i = 0; i < k->nresources; i++)
        if (strcmp(k->resources[i], resource) == 0)
            return true;
    return false;
}

/* Does the kept pick k still answer request r for the actor: the actor's, the named connector
 * and provider, the resource, and live (neither REVOKED nor PENDING)? */
static bool tok_pick_holds(const oauth_ctx_t *x, const tok_req_t *q, const oauth_conn_t *k)
{
    const Credex__V1__GetProviderTokenRequest *r = q->r;
    const Credex__V1__Connection *c = k->pb;
    return strcmp(c->subject_user_id, x->actor) == 0 &&
           (!r->provider_key[0] || strcmp(r->provider_key, c->provider_key) == 0) &&
           (!r->connector_id[0] || strcmp(r->connector_id, c->connector_id) == 0) &&
           c->state != CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED &&
           c->state != CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_PENDING &&
           c->state != CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_UNSPECIFIED &&
           tok_reaches(k, q->resource);
}

/* The pick kept for this request, read again through the connection cache: true with *held
 * when it still holds (q->k set). A database failure fails the call (no pick from memory). */
static bool tok_pick_kept(oauth_ctx_t *x, tok_req_t *q, oauth_pick_ticket_t *ticket, bool *held,
                          cx_error_t *err)
{
    const Credex__V1__GetProviderTokenRequest *r = q->r;
    char id[OAUTH_PICK_ID_MAX];
    bool found = false;
    *held = false;
    if (!oauth_picks_get(x->o->picks, x->actor, r->provider_key, r->connector_id, q->resource, id,
                         ticket))
        return true;
    if (!oauth_conn_find_cached(x, id, &q->k, &found, err))
        return false;
    *held = found && tok_pick_holds(x, q, &q->k);
    if (!*held)
        oauth_picks_drop(x->o->picks, x->actor, r->provider_key, r->connector_id, q->resource);
    return true;
}

/* The subject's connection the request names (see oauth.proto). A REVOKED one is picked only
 * when no other matches, so that its state, not not_found, is the answer. A unique live pick by
 * provider key or connector is kept (picks.c) and checked again on every use. */
static bool tok_pick(oauth_ctx_t *x, tok_req_t *q, cx_error_t *err)
{
    const Credex__V1__GetProviderTokenRequest *r = q->r;
    bool found = false;
    if (r->connection_id[0]) {
        if (!oauth_conn_find_cached(x, r->connection_id, &q->k, &found, err))
            return false;
        if (!found || strcmp(q->k.pb->subject_user_id, x->actor) != 0 ||
            !tok_reaches(&q->k, q->resource))
            return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
        return true;
    }
    if (!r->connector_id[0] && !r->provider_key[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "connection_id, connector_id or provider_key is required");
    oauth_pick_ticket_t ticket;
    bool held = false;
    if (!tok_pick_kept(x, q, &ticket, &held, err))
        return false;
    if (held)
        return true;
    bson_t filter = BSON_INITIALIZER, ne;
    BSON_APPEND_UTF8(&filter, "subject_user_id", x->actor);
    if (r->provider_key[0])
        BSON_APPEND_UTF8(&filter, "provider_key", r->provider_key);
    if (r->connector_id[0])
        BSON_APPEND_UTF8(&filter, "connector_id", r->connector_id);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "state", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "pending");
    bson_append_document_end(&filter, &ne);
    oauth_conn_t *v = rpc_arena_alloc(x->arena, TOK_PICK_MAX * sizeof(*v));
    size_t n = 0, live = 0, gone = 0;
    cx_error_t le;
    cx_error_clear(&le);
    bool ok = oauth_conn_list(x, &filter, v, TOK_PICK_MAX, &n, &le);
    bson_destroy(&filter);
    if (!ok && le.code != CX_ERR_RESOURCE_EXHAUSTED) {
        cx_error_copy(err, &le);
        return false;
    }
    const oauth_conn_t *pick_live = NULL, *pick_gone = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!tok_reaches(&v[i], q->resource))
            continue;
        if (v[i].pb->state == CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED) {
            if (!pick_gone || v[i].pb->updated_at_ms > pick_gone->pb->updated_at_ms)
                pick_gone = &v[i];
            gone++;
        } else {
            pick_live = &v[i];
            live++;
        }
    }
    if (live > 1 || (!ok && live))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "several connections match: name connection_id, or narrow with "
                            "connector_id or caller.resource_context.provider_resource_id");
    if (!pick_live && !pick_gone)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    q->k = pick_live ? *pick_live : *pick_gone;
    if (pick_live && ok)
        oauth_picks_put(x->o->picks, x->actor, r->provider_key, r->connector_id, q->resource,
                        pick_live->pb->connection_id, &ticket);
    (void)gone;
    return true;
}

static bool tok_state_ok(const oauth_conn_t *k, cx_error_t *err)
{
    switch (k->pb->state) {
    case CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_ACTIVE:
        return true;
    case CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_RECONSENT_REQUIRED:
        return cx_error_set(err, CX_ERR_RECONSENT_REQUIRED,
                            "the connection needs the user's consent again: reconnect");
    case CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_EXPIRED:
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connection expired: reconnect");
    case CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_REVOKED:
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            strcmp(k->pb->state_reason, "refresh_token_revoked") == 0
                                ? "the provider revoked the connection: reconnect"
                                : "the connection was revoked: reconnect");
    default:
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connection is not connected yet");
    }
}

static bool tok_has(char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

/* Connection, connector and scopes allow an exchange. */
static bool tok_check(oauth_ctx_t *x, tok_req_t *q, cx_error_t *err)
{
    const Credex__V1__GetProviderTokenRequest *r = q->r;
    if (!tok_state_ok(&q->k, err))
        return false;
    if (r->connector_id[0] && strcmp(r->connector_id, q->k.pb->connector_id) != 0)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    if (r->provider_key[0] && strcmp(r->provider_key, q->k.pb->provider_key) != 0)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    if (!oauth_connector_load_cached(x, q->k.pb->connector_id, &q->s, err))
        return err->code == CX_ERR_NOT_FOUND
                   ? cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connector is gone")
                   : false;
    if (q->s.pb->status != CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connector is not active");
    q->p = q->s.pb->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN
               ? oauth_provider_find(q->s.pb->provider_key)
               : NULL;
    if (q->p && q->p->requires_provider_resource && !q->resource[0] && q->k.nresources > 1)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "caller.resource_context.provider_resource_id is required: the "
                            "connection reaches several provider resources");
    for (size_t i = 0; i < r->n_required_scopes; i++)
        if (!tok_has(q->k.pb->granted_scopes, q->k.pb->n_granted_scopes, r->required_scopes[i]))
            return cx_error_set(err, CX_ERR_RECONSENT_REQUIRED,
                                "a required scope is not granted: the user must consent again");
    int64_t before =
        q->s.pb->refresh_policy ? q->s.pb->refresh_policy->refresh_before_expiry_ms : 0;
    q->need_ms = r->min_valid_for_ms ? r->min_valid_for_ms : TOK_MIN_VALID_DEFAULT_MS;
    if (before > q->need_ms)
        q->need_ms = before;
    return true;
}

/* ---- the connection after a refresh ------------------------------------------------------ */

/* Record a refresh's outcome that leaves the state alone (only while the connection is still
 * ACTIVE: a concurrent disconnect wins). */
static bool tok_note(oauth_ctx_t *x, const oauth_conn_t *k, cx_error_t *err)
{
    const Credex__V1__Connection *c = k->pb;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool matched = false;
    BSON_APPEND_UTF8(&sel, "_id", c->connection_id);
    BSON_APPEND_UTF8(&sel, "state", "active");
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_INT64(&set, "token_expires_at_ms", c->token_expires_at_ms);
    BSON_APPEND_INT64(&set, "last_refreshed_at_ms", c->last_refreshed_at_ms);
    BSON_APPEND_UTF8(&set, "last_refresh_error", c->last_refresh_error);
    BSON_APPEND_INT64(&set, "refresh_retry_after_ms", c->refresh_retry_after_ms);
    oauth_bson_strs(&set, "granted_scopes", c->granted_scopes, c->n_granted_scopes);
    oauth_bson_strs(&set, "missing_scopes", c->missing_scopes, c->n_missing_scopes);
    BSON_APPEND_DATE_TIME(&set, "updated_at", mdb_now_ms());
    bson_append_document_end(&upd, &set);
    mdb_cache_evict(x->o->connections_cache, c->connection_id);
    bool ok = oauth_connect(x, err) &&
              mdb_update_one(x->o->db, x->c, MDB_COLL_CONNECTIONS, &sel, &upd, &matched, err);
    mdb_cache_evict(x->o->connections_cache, c->connection_id);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

static bool tok_audit(oauth_ctx_t *x, const tok_req_t *q, const char *event, cx_code_t code,
                      const char *key, const char *value)
{
    oauth_attr_t a[4];
    size_t n = tok_attrs(q, key, value, a);
    cx_error_t ae;
    return oauth_audit_on(x, "provider_connection", event, q->k.pb->connection_id, code, a, n, &ae);
}

/* A refresh failed with class cls: keep it on the connection, audit it, and answer err. */
static bool tok_failed(oauth_ctx_t *x, tok_req_t *q, oauth_refresh_class_t cls,
                       const oauth_token_answer_t *ans, cx_error_t *err)
{
    Credex__V1__Connection *c = q->k.pb;
    int64_t now = mdb_now_ms();
    cx_error_t we;
    cx_error_clear(&we);
    bool written = true;
    switch (cls) {
    case OAUTH_REFRESH_REVOKED:
        c->last_refresh_error = oauth_str(x, "revoked");
        written = oauth_conn_end(x, &q->k, "refresh_token_revoked", false, &we);
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "the provider revoked the connection: reconnect");
        break;
    case OAUTH_REFRESH_SCOPE:
        c->last_refresh_error = oauth_str(x, "reconsent_required");
        c->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_RECONSENT_REQUIRED;
        c->state_reason = oauth_str(x, "scope_revoked");
        written = oauth_conn_save(x, &q->k, &we);
        cx_error_set(err, CX_ERR_RECONSENT_REQUIRED,
                     "the provider no longer grants the connection's scopes: reconnect");
        break;
    case OAUTH_REFRESH_RATE_LIMITED:
        c->last_refresh_error = oauth_str(x, "rate_limited");
        c->refresh_retry_after_ms = oauth_retry_until(now, ans->retry_after_s);
        written = tok_note(x, &q->k, &we);
        cx_error_set(err, CX_ERR_RATE_LIMITED,
                     "the provider rate-limited the refresh: retry in %lld s",
                     (long long)((c->refresh_retry_after_ms - now + 999) / 1000));
        break;
    case OAUTH_REFRESH_UNAVAILABLE:
        c->last_refresh_error = oauth_str(x, "unavailable");
        written = tok_note(x, &q->k, &we);
        cx_error_set(err, CX_ERR_UNAVAILABLE, "the provider did not answer the refresh");
        break;
    default:
        c->last_refresh_error = oauth_str(x, "failed_precondition");
        written = tok_note(x, &q->k, &we);
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "the provider refused the refresh (HTTP %ld, error %s)", ans->status,
                     ans->error[0] ? ans->error : "none");
        break;
    }
    cx_log_warn(
        x->correlation_id, "oauth.refresh_failed", CX_LOG_STR("connection_id", c->connection_id),
        CX_LOG_STR("reason", c->last_refresh_error), CX_LOG_INT("http_status", ans->status));
    oauth_refresh_metric(c->last_refresh_error);
    if (!written)
        cx_log_error(x->correlation_id, "oauth.refresh_outcome_unsaved",
                     CX_LOG_STR("connection_id", c->connection_id),
                     CX_LOG_STR("reason", cx_code_reason(we.code)));
    tok_audit(x, q, "token.refresh_failed", err->code, "refresh_error", c->last_refresh_error);
    return false;
}

/* ---- one refresh at the provider (lease held) -------------------------------------------- */

/* The stall the fencing test freezes a replica in: tests only (refused in production). */
static void tok_test_pause(oauth_ctx_t *x, const tok_req_t *q, uint64_t token)
{
    unsigned ms = x->o->cfg->oauth_test_refresh_pause_ms;
    if (!ms)
        return;
    cx_log_warn(x->correlation_id, "oauth.test_refresh_pause",
                CX_LOG_STR("connection_id", q->k.pb->connection_id),
                CX_LOG_INT("lease_token", (int64_t)token), CX_LOG_INT("pause_ms", ms));
    tok_sleep_ms(ms);
}

/* Refresh q's connection whose token set cur (version read under the lease of token) is not
 * valid long enough. On success *cur is the token set now stored. */
static bool tok_refresh_held(oauth_ctx_t *x, tok_req_t *q, tok_set_t *cur, uint64_t token,
                             cx_error_t *err)
{
    oauth_endpoints_t e;
    oauth_tokens_t t;
    oauth_token_answer_t ans;
    cx_secret_t *client = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    bool ok = false;
    memset(&t, 0, sizeof(t));
    memset(&ans, 0, sizeof(ans));
    if (!oauth_client_secret(x, q->s.pb, &client, err) || !oauth_endpoints_of(x, q->s.pb, &e, err))
        goto out;
    cx_error_t pe;
    cx_error_clear(&pe);
    bool got = oauth_token_refresh(x, q->s.pb, q->s.client_auth, &e, cx_secret_bytes(client),
                                   cx_secret_len(client), cur->ts->refresh_token.data,
                                   cur->ts->refresh_token.len, &t, &ans, &pe);
    oauth_refresh_class_t cls = oauth_refresh_classify(got ? CX_OK : pe.code, &ans);
    if (cls != OAUTH_REFRESH_OK) {
        tok_failed(x, q, cls, &ans, err);
        goto out;
    }
    tok_test_pause(x, q, token);
    /* A provider that answers no new refresh token keeps the old one valid. */
    if (!t.refresh_token) {
        t.refresh_token = calloc(1, cur->ts->refresh_token.len + 1);
        if (!t.refresh_token) {
            cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
            goto out;
        }
        memcpy(t.refresh_token, cur->ts->refresh_token.data, cur->ts->refresh_token.len);
    }
    Credex__V1__Connection *c = q->k.pb;
    int64_t now = mdb_now_ms();
    if (t.scope[0])
        oauth_conn_scopes(x, q->s.pb, t.scope, c);
    if (!oauth_conn_token_set(&t, c, now, &buf, &len, err))
        goto out;
    /* The fence: only the version read under the lease may be replaced. */
    cx_error_t re;
    cx_error_clear(&re);
    if (!oauth_secret_rotate(x, q->k.secret_id, cur->version, buf, len, &re)) {
        if (re.code != CX_ERR_CONFLICT) {
            cx_error_copy(err, &re);
            goto out;
        }
        cx_log_warn(x->correlation_id, "oauth.refresh_fenced",
                    CX_LOG_STR("connection_id", c->connection_id),
                    CX_LOG_INT("lease_token", (int64_t)token),
                    CX_LOG_INT("read_version", cur->version));
        tok_audit(x, q, "token.refresh_failed", CX_ERR_CONFLICT, "refresh_error", "fenced");
        oauth_refresh_metric("fenced");
        tok_set_clear(cur);
        if (!tok_read(x, q, cur, err))
            goto out;
        if (!tok_valid(cur, mdb_now_ms(), 0)) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "the connection's tokens changed concurrently");
            goto out;
        }
        q->refreshed = true;
        ok = true;
        goto out;
    }
    uint32_t version = cur->version + 1;
    tok_set_clear(cur);
    if (!tok_set_unpack(buf, len, version, cur, err))
        goto out;
    c->token_expires_at_ms = cur->ts->expires_at_ms;
    c->last_refreshed_at_ms = now;
    c->last_refresh_error = oauth_str(x, "");
    c->refresh_retry_after_ms = 0;
    cx_error_t ne;
    cx_error_clear(&ne);
    if (!tok_note(x, &q->k, &ne)) /* the token set is stored: the metadata can lag */
        cx_log_warn(x->correlation_id, "oauth.refresh_note_failed",
                    CX_LOG_STR("connection_id", c->connection_id),
                    CX_LOG_STR("reason", cx_code_reason(ne.code)));
    if (!tok_audit(x, q, "token.refreshed", CX_OK, "rotated_refresh_token",
                   q->p && q->p->rotates_refresh_tokens ? "true" : "false")) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "the audit event could not be written");
        goto out;
    }
    q->refreshed = true;
    oauth_refresh_metric("refreshed");
    ok = true;
out:
    if (buf) {
        cx_crypto_wipe(buf, len);
        free(buf);
    }
    cx_secret_free(client);
    oauth_tokens_clear(&t);
    return ok;
}

/* ---- across processes: the lease ---------------------------------------------------------- */

/* Re-read the connection by id into q->k. */
static bool tok_reload(oauth_ctx_t *x, tok_req_t *q, cx_error_t *err)
{
    bool found = false;
    if (!oauth_conn_find(x, "_id", q->k.pb->connection_id, &q->k, &found, err))
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "connection not found");
    return true;
}

static bool tok_rate_limited(const oauth_conn_t *k, int64_t now, cx_error_t *err)
{
    if (k->pb->refresh_retry_after_ms <= now)
        return false;
    cx_error_set(err, CX_ERR_RATE_LIMITED, "the provider rate-limited refreshes: retry in %lld s",
                 (long long)((k->pb->refresh_retry_after_ms - now + 999) / 1000));
    return true;
}

/* Under the lease of token: look again (someone may have refreshed or failed just before),
 * then refresh. */
static bool tok_under_lease(oauth_ctx_t *x, tok_req_t *q, tok_set_t *cur, uint64_t token,
                            cx_error_t *err)
{
    if (!tok_reload(x, q, err) || !tok_state_ok(&q->k, err))
        return false;
    if (tok_rate_limited(&q->k, mdb_now_ms(), err))
        return false;
    tok_set_clear(cur);
    if (!tok_read(x, q, cur, err))
        return false;
    if (tok_valid(cur, mdb_now_ms(), q->need_ms)) {
        q->refreshed = true;
        return true;
    }
    return tok_refresh_held(x, q, cur, token, err);
}

/* A caller that did not get the lease: watch the connection until the holder's refresh lands
 * (the document's expiry or state changes) or its lease ends. *retry: try the lease again. */
static bool tok_watch(oauth_ctx_t *x, tok_req_t *q, tok_set_t *cur, const mdb_lease_grant_t *g,
                      int64_t deadline, bool *retry, cx_error_t *err)
{
    int64_t seen = q->k.pb->token_expires_at_ms, refreshed = q->k.pb->last_refreshed_at_ms;
    int64_t since = mdb_now_ms();
    uint32_t read = cur->version; /* only a newer token set is the holder's refresh */
    *retry = false;
    while (tok_mono_ms() < deadline) {
        tok_sleep_ms(TOK_POLL_MS);
        if (!tok_reload(x, q, err) || !tok_state_ok(&q->k, err))
            return false;
        if (tok_rate_limited(&q->k, mdb_now_ms(), err))
            return false;
        const Credex__V1__Connection *c = q->k.pb;
        if (c->token_expires_at_ms != seen || c->last_refreshed_at_ms != refreshed) {
            seen = c->token_expires_at_ms;
            refreshed = c->last_refreshed_at_ms;
            tok_set_clear(cur);
            if (!tok_read(x, q, cur, err))
                return false;
            if (cur->version > read && tok_valid(cur, mdb_now_ms(), 0)) {
                q->refreshed = true;
                return true;
            }
        }
        if (c->last_refresh_error[0] && c->updated_at_ms >= since)
            return cx_error_set(err, CX_ERR_UNAVAILABLE,
                                "another replica's refresh of this connection failed (%s)",
                                c->last_refresh_error);
        if (mdb_now_ms() >= g->expires_at_ms) {
            *retry = true;
            return false;
        }
    }
    return cx_error_set(err, CX_ERR_UNAVAILABLE,
                        "another replica is refreshing this connection; try again");
}

static bool tok_refresh_across(oauth_ctx_t *x, tok_req_t *q, tok_set_t *cur, int64_t deadline,
                               cx_error_t *err)
{
    char key[MDB_LEASE_KEY_MAX];
    snprintf(key, sizeof(key), "refresh/%s", q->k.pb->connection_id);
    for (;;) {
        mdb_lease_grant_t g;
        cx_error_t le;
        cx_error_clear(&le);
        if (!mdb_lease_acquire(x->o->db, key, x->o->holder, x->o->cfg->oauth_refresh_lease_ms, &g,
                               &le))
            return cx_error_set(err, CX_ERR_UNAVAILABLE, "the refresh lease is unavailable (%s)",
                                cx_code_reason(le.code));
        if (g.acquired) {
            bool ok = tok_under_lease(x, q, cur, g.token, err);
            cx_error_t re;
            if (!mdb_lease_release(x->o->db, key, g.token, &re))
                cx_log_warn(x->correlation_id, "oauth.lease_release_failed",
                            CX_LOG_STR("connection_id", q->k.pb->connection_id),
                            CX_LOG_STR("reason", cx_code_reason(re.code)));
            return ok;
        }
        bool retry = false;
        if (tok_watch(x, q, cur, &g, deadline, &retry, err))
            return true;
        if (!retry)
            return false;
    }
}

/* The token set cur is not valid for long enough: refresh it, once per connection in this
 * process (the others wait for the leader) and across processes (the lease). */
static bool tok_refresh(oauth_ctx_t *x, tok_req_t *q, tok_set_t *cur, cx_error_t *err)
{
    const oauth_t *o = x->o;
    int64_t now = mdb_now_ms();
    if (tok_rate_limited(&q->k, now, err))
        return false;
    bool can = q->s.pb->refresh_policy && q->s.pb->refresh_policy->refresh_enabled &&
               cur->ts->refresh_token.len > 0 && (!q->p || q->p->supports_refresh);
    if (!can) {
        if (tok_valid(cur, now, 0))
            return true; /* not as long as asked, but the best there is */
        /* The first read may come from the document cache: write from the database's. */
        if (!tok_reload(x, q, err) || !tok_state_ok(&q->k, err))
            return false;
        Credex__V1__Connection *c = q->k.pb;
        c->state = CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_EXPIRED;
        c->state_reason = oauth_str(x, "token_expired");
        cx_error_t we;
        if (!oauth_conn_save(x, &q->k, &we))
            return cx_error_set(err, CX_ERR_UNAVAILABLE, "the connection could not be updated");
        tok_audit(x, q, "token.refresh_failed", CX_ERR_FAILED_PRECONDITION, "refresh_error",
                  "expired");
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the access token expired and cannot be refreshed: reconnect");
    }
    /* Wait at most twice a lease (a stalled holder's lease ends, then one refresh), and never
     * past the caller's deadline. */
    int64_t budget = 2 * (int64_t)o->cfg->oauth_refresh_lease_ms + o->cfg->oauth_http_timeout_ms;
    int64_t left = rpc_call_remaining_ms(x->call) - TOK_DEADLINE_MARGIN_MS;
    if (left < budget)
        budget = left > 0 ? left : 0;
    int64_t deadline = tok_mono_ms() + budget;
    bool leader = false;
    tok_flight_t *f = tok_flight_join(o->flights, q->k.pb->connection_id, &leader);
    if (!leader) {
        cx_error_t res;
        if (!tok_flight_wait(o->flights, f, deadline, &res))
            return cx_error_set(err, CX_ERR_UNAVAILABLE,
                                "the refresh of this connection is taking too long; try again");
        if (res.code != CX_OK) {
            cx_error_copy(err, &res);
            return false;
        }
        tok_set_clear(cur);
        if (!tok_reload(x, q, err) || !tok_read(x, q, cur, err))
            return false;
        q->refreshed = true;
        return true;
    }
    bool ok = tok_refresh_across(x, q, cur, deadline, err);
    if (f)
        tok_flight_land(o->flights, f, ok ? NULL : err);
    return ok;
}

/* ---- the handler --------------------------------------------------------------------------- */

static const char *tok_api_base(oauth_ctx_t *x, const tok_req_t *q, const char *resource)
{
    const oauth_provider_t *p = q->p;
    if (!p || !p->api_base_url)
        return "";
    char url[1024];
    const char *base = p->base_url_configurable ? q->s.pb->endpoints->issuer_url : "";
    if (p->api_url_per_resource && !resource[0])
        return "";
    snprintf(url, sizeof(url), "%s%s%s%s", base, p->api_base_url,
             p->api_url_per_resource ? "/" : "", p->api_url_per_resource ? resource : "");
    return oauth_str(x, url);
}

static Credex__V1__GetProviderTokenResponse *tok_reply(oauth_ctx_t *x, const tok_req_t *q)
{
    const Credex__V1__Connection *c = q->k.pb;
    Credex__V1__GetProviderTokenResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__get_provider_token_response__init(resp);
    resp->connection_id = c->connection_id;
    resp->connector_id = c->connector_id;
    resp->provider_key = c->provider_key;
    resp->provider_account_id = c->provider_account_id;
    resp->provider_resource_id = q->resource[0] ? (char *)q->resource : c->provider_resource_id;
    resp->scopes = c->granted_scopes;
    resp->n_scopes = c->n_granted_scopes;
    resp->expires_at_ms = c->token_expires_at_ms;
    resp->api_base_url = (char *)tok_api_base(x, q, resp->provider_resource_id);
    return resp;
}

static bool tok_get(oauth_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                    cx_error_t *err)
{
    const Credex__V1__GetProviderTokenRequest *r =
        (const Credex__V1__GetProviderTokenRequest *)request;
    tok_req_t q;
    tok_set_t cur = {0};
    bool ok = false;
    memset(&q, 0, sizeof(q));
    q.r = r;
    /* The user is the gateway's verified subject; the request may repeat it, never change it. */
    const char *subject = r->caller ? r->caller->subject_user_id : "";
    if (!x->actor[0])
        x->actor = subject;
    if (!x->actor[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "caller.subject_user_id is required");
    if (subject[0] && strcmp(subject, x->actor) != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "caller.subject_user_id differs from the verified subject");
    if (r->min_valid_for_ms < 0 || r->min_valid_for_ms > TOK_MIN_VALID_MAX_MS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "min_valid_for_ms must be 0 to %d",
                            TOK_MIN_VALID_MAX_MS);
    q.resource = r->caller && r->caller->resource_context
                     ? r->caller->resource_context->provider_resource_id
                     : "";
    if (!tok_pick(x, &q, err))
        return false;
    rpc_call_log_field(x->call, CX_LOG_STR("connection_id", q.k.pb->connection_id));
    if (!tok_check(x, &q, err))
        return false;
    if (r->pick_only) {
        *reply = &tok_reply(x, &q)->base;
        return true;
    }
    /* No record, no material: the event is durable before the token leaves. A token that lasts
     * is recorded by store's Resolve itself (one insert, not two); any other outcome, a refresh
     * first, and the record is ours. */
    bool recorded = false;
    if (!tok_read_as(x, &q, &cur, true, &recorded, err))
        goto out;
    if (!recorded) {
        if (!tok_valid(&cur, mdb_now_ms(), q.need_ms) && !tok_refresh(x, &q, &cur, err))
            goto out;
        if (!tok_audit(x, &q, "token.exchanged", CX_OK, "refreshed",
                       q.refreshed ? "true" : "false")) {
            cx_error_set(err, CX_ERR_UNAVAILABLE, "the audit event could not be written");
            goto out;
        }
    }
    Credex__V1__GetProviderTokenResponse *resp = tok_reply(x, &q);
    const Credex__V1__ProviderTokenSet *ts = cur.ts;
    resp->token_type = oauth_str(x, ts->token_type[0] ? ts->token_type : "Bearer");
    resp->expires_at_ms = ts->expires_at_ms;
    resp->material.data =
        rpc_arena_alloc(x->arena, ts->access_token.len ? ts->access_token.len : 1);
    memcpy(resp->material.data, ts->access_token.data, ts->access_token.len);
    resp->material.len = ts->access_token.len;
    if (ts->n_scopes) {
        resp->scopes = oauth_strv(x, ts->n_scopes);
        for (size_t i = 0; i < ts->n_scopes; i++)
            resp->scopes[i] = oauth_str(x, ts->scopes[i]);
        resp->n_scopes = ts->n_scopes;
    }
    resp->refreshed = q.refreshed;
    *reply = &resp->base;
    ok = true;
out:
    tok_set_clear(&cur);
    return ok;
}

static const oauth_method_t m_get = {"token.exchanged", false, tok_get, "provider_connection",
                                     "connection_id"};

OAUTH_ENTRY(h_get, m_get)

const rpc_method_impl_t oauth_tokens_impls[] = {
    {.method = "GetProviderToken", .kind = RPC_UNARY, .unary = h_get},
};
const size_t oauth_tokens_nimpls = sizeof(oauth_tokens_impls) / sizeof(oauth_tokens_impls[0]);
