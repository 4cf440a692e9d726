/*
 * store rewrap: RewrapDataKeys (store.proto), the CMK rotation of stored data keys
 * (docs/KEY_ROTATION.md).
 *
 * One call moves one batch: the payload documents whose data key is not under keywrap's current
 * CMK (KeyWrap/Describe), after a payload id, in _id order. Each key is rewrapped by keywrap
 * (Rewrap: the plaintext data key never reaches store, and no payload is decrypted) under the
 * encryption context rebuilt from its secret's metadata read live from the database, exactly as
 * Resolve binds it: a payload moved to another secret, or a wrapped key copied from another
 * payload, fails there as integrity_error. Then the document's key fields are replaced only if
 * its wrapped key is still the one read, never upserted: a payload deleted meanwhile (its secret
 * deleted, a lost rotation cleaned up) stays deleted, and a key another run moved first is
 * counted as already current. The payload's ciphertext is never touched.
 *
 * State lives in the data only: what is left is exactly what is not under the current CMK, so a
 * run interrupted anywhere resumes by calling again, and a finished run rewraps nothing.
 *
 * Failures: a key that cannot be moved (integrity_error, not_found: no secret,
 * failed_precondition: a provider keywrap cannot read, conflict: changed under us) is reported,
 * audited (secret.key_rewrap_failed) and passed over. keywrap or the database out of reach, an
 * audit write that fails, or a Rewrap answered under another CMK than the one Describe named
 * (keywrap replicas disagree: a rolling restart not finished) fails the whole call, after the
 * last key replaced. Nothing here logs or answers key bytes: only ids, versions and codes.
 */
#include <string.h>

#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

#define STORE_REWRAP_LIMIT_MAX 100 /* store.proto: limit 1..100 */

typedef struct store_rewrap_run {
    store_ctx_t *x;
    const char *run_id;
    store_key_target_t target;
    Credex__V1__StoreRewrapDataKeysResponse *resp;
    Credex__V1__StoreRewrapFailure **failures; /* STORE_REWRAP_LIMIT_MAX slots */
} store_rewrap_run_t;

/* The batch's documents, copied out of the cursor, so that every keywrap call and write of the
 * batch happens after it is closed. */
typedef struct store_rewrap_rows {
    bson_t *docs[STORE_REWRAP_LIMIT_MAX];
    size_t n;
} store_rewrap_rows_t;

static bool store_rewrap_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    store_rewrap_rows_t *r = ctx;
    if (r->n >= STORE_REWRAP_LIMIT_MAX)
        return cx_error_set(err, CX_ERR_INTERNAL, "rewrap: more rows than the limit");
    r->docs[r->n++] = bson_copy(doc);
    return true;
}

static void store_rewrap_ne(bson_t * or, const char *idx, const char *field, const char *value)
{
    bson_t alt, ne;
    BSON_APPEND_DOCUMENT_BEGIN(or, idx, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&alt, field, &ne);
    BSON_APPEND_UTF8(&ne, "$ne", value);
    bson_append_document_end(&alt, &ne);
    bson_append_document_end(or, &alt);
}

/* The payloads whose key is not under t, and with after set, only those whose _id follows it. */
static void store_rewrap_filter(const store_key_target_t *t, const char *after, bson_t *f)
{
    bson_t or, gt;
    bson_init(f);
    if (after && after[0]) {
        BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &gt);
        BSON_APPEND_UTF8(&gt, "$gt", after);
        bson_append_document_end(f, &gt);
    }
    BSON_APPEND_ARRAY_BEGIN(f, "$or", & or);
    store_rewrap_ne(& or, "0", "key_provider", store_key_provider_name(t->provider));
    store_rewrap_ne(& or, "1", "key_id", t->key_id);
    bson_append_array_end(f, & or);
}

static bool store_rewrap_under_target(const store_rewrap_run_t *run,
                                      Credex__V1__KeyProvider provider, const char *key_id)
{
    return provider == run->target.provider && strcmp(key_id, run->target.key_id) == 0;
}

/* A document's string field when it has the shape of one of store's ids, else NULL: a failure
 * report names only what validated. */
static const char *store_rewrap_doc_id(const bson_t *doc, const char *key, const char *prefix)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    const char *s = bson_iter_utf8(&it, NULL);
    return store_id_valid(s, prefix) ? s : NULL;
}

/* The key fields of a payload document: the selector of its replacement (with _id) and the
 * values set by it. */
static void store_rewrap_key_fields(bson_t *b, const store_wrapped_t *w)
{
    BSON_APPEND_BINARY(b, "wrapped_key", BSON_SUBTYPE_BINARY, w->ct, (uint32_t)w->ct_len);
    BSON_APPEND_UTF8(b, "key_provider", store_key_provider_name(w->provider));
    BSON_APPEND_UTF8(b, "key_id", w->key_id);
    BSON_APPEND_UTF8(b, "key_version", w->key_version ? w->key_version : "");
}

/* Replace payload_id's key fields from `from` to `to`, only while they are still `from`. */
static bool store_rewrap_replace(store_ctx_t *x, const char *payload_id,
                                 const store_wrapped_t *from, const store_wrapped_t *to,
                                 bool *matched, cx_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&sel, "_id", payload_id);
    store_rewrap_key_fields(&sel, from);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    store_rewrap_key_fields(&set, to);
    BSON_APPEND_DATE_TIME(&set, "rewrapped_at", mdb_now_ms());
    bson_append_document_end(&upd, &set);
    bool ok = mdb_update_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &sel, &upd, matched, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    /* This replica's cached copy is of the old key (which still unwraps while the old CMK is
     * kept); dropped whatever the write answered, so that the next Resolve reads the document. */
    store_payload_cache_evict(x->st->payloads, payload_id);
    return ok;
}

/* Per-key refusals of keywrap: the key, not keywrap, is the problem. invalid_argument is a
 * request store built from stored fields, so the stored key is bad too. */
static bool store_rewrap_key_refusal(cx_code_t code)
{
    return code == CX_ERR_INTEGRITY || code == CX_ERR_FAILED_PRECONDITION ||
           code == CX_ERR_INVALID_ARGUMENT || code == CX_ERR_NOT_FOUND;
}

/* Report one key that was not moved (and audit it when its secret id is known). False only
 * when the event cannot be written: no record, so the whole call fails. */
static bool store_rewrap_failed(store_rewrap_run_t *run, const char *payload_id,
                                const char *secret_id, uint32_t version, const store_payload_t *p,
                                cx_code_t code, const char *detail, cx_error_t *err)
{
    store_ctx_t *x = run->x;
    rpc_arena_t *a = x->arena;
    cx_code_t reason = code == CX_ERR_INVALID_ARGUMENT ? CX_ERR_INTEGRITY : code;
    Credex__V1__StoreRewrapFailure *f = rpc_arena_alloc(a, sizeof(*f));
    credex__v1__store_rewrap_failure__init(f);
    /* Copies: the ids point into the batch's documents, freed before the answer is sent. */
    f->payload_id = payload_id ? rpc_arena_strndup(a, payload_id, strlen(payload_id)) : "";
    f->secret_id = secret_id ? rpc_arena_strndup(a, secret_id, strlen(secret_id)) : "";
    f->version = version;
    f->reason = (char *)cx_code_reason(reason);
    run->failures[run->resp->n_failures++] = f;
    cx_log_warn(rpc_call_correlation_id(x->call), "store.key_rewrap_failed",
                CX_LOG_STR("run_id", run->run_id), CX_LOG_STR("payload_id", f->payload_id),
                CX_LOG_STR("secret_id", f->secret_id), CX_LOG_INT("version", version),
                CX_LOG_STR("reason", f->reason), CX_LOG_STR("detail", detail));
    if (!secret_id)
        return true; /* nothing validated to hang an event on; the log line above says it */
    x->secret_id = secret_id;
    char ver[12];
    snprintf(ver, sizeof ver, "%u", version);
    cx_kv_t attrs[] = {{"version", ver},
                       {"run_id", run->run_id},
                       {"payload_id", f->payload_id},
                       {"from_key_provider", p ? store_key_provider_name(p->key_provider) : ""},
                       {"from_key_id", p ? p->key_id : ""}};
    return store_audit(x, "secret.key_rewrap_failed",
                       CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED, reason, attrs, p ? 5 : 3,
                       err);
}

/* Put back a replaced key whose event could not be written (no record, no change). Best
 * effort: only while the document still holds the key this call wrote. */
static void store_rewrap_undo(store_ctx_t *x, const char *payload_id, const store_wrapped_t *from,
                              const store_wrapped_t *to)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, unset;
    cx_error_t ignored;
    BSON_APPEND_UTF8(&sel, "_id", payload_id);
    store_rewrap_key_fields(&sel, to);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    store_rewrap_key_fields(&set, from);
    bson_append_document_end(&upd, &set);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$unset", &unset);
    BSON_APPEND_UTF8(&unset, "rewrapped_at", "");
    bson_append_document_end(&upd, &unset);
    mdb_update_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &sel, &upd, NULL, &ignored);
    store_payload_cache_evict(x->st->payloads, payload_id);
    bson_destroy(&sel);
    bson_destroy(&upd);
}

/* The replacement matched nothing: the document was deleted (skipped: never brought back), or
 * its key changed since it was read (under the target: another run moved it; otherwise a
 * conflict). */
static bool store_rewrap_lost(store_rewrap_run_t *run, const store_payload_t *p, cx_error_t *err)
{
    store_ctx_t *x = run->x;
    bson_t f = BSON_INITIALIZER, doc;
    bool found = false, ok;
    BSON_APPEND_UTF8(&f, "_id", p->payload_id);
    ok = mdb_find_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &doc, &found, err);
    bson_destroy(&f);
    if (!ok || !found)
        return ok;
    store_payload_t now;
    cx_error_t derr;
    if (store_payload_decode(&doc, &now, &derr) &&
        store_rewrap_under_target(run, now.key_provider, now.key_id))
        run->resp->already_current++;
    else
        ok = store_rewrap_failed(run, p->payload_id, p->secret_id, p->version, p, CX_ERR_CONFLICT,
                                 "the stored key changed during the rewrap", err);
    bson_destroy(&doc);
    return ok;
}

/* One payload document. False: the whole call fails with err. */
static bool store_rewrap_one(store_rewrap_run_t *run, const bson_t *doc, cx_error_t *err)
{
    store_ctx_t *x = run->x;
    store_payload_t p;
    store_ref_t ref;
    cx_error_t kerr = {0};
    x->secret_id = NULL;
    x->owner = NULL;
    const char *id = store_rewrap_doc_id(doc, "_id", "pay_");
    const char *sid = store_rewrap_doc_id(doc, "secret_id", "sec_");
    if (!id || !sid || !store_payload_decode(doc, &p, &kerr) || strcmp(id, p.payload_id) != 0)
        return store_rewrap_failed(run, id, sid, 0, NULL, CX_ERR_INTEGRITY,
                                   "stored payload is malformed", err);
    x->secret_id = sid; /* validated: the events of this key are about it */
    if (!store_load_ref(x, sid, &ref, &kerr)) {
        if (kerr.code != CX_ERR_NOT_FOUND && kerr.code != CX_ERR_INTEGRITY) {
            cx_error_copy(err, &kerr);
            return false;
        }
        return store_rewrap_failed(run, id, sid, p.version, &p, kerr.code, kerr.message, err);
    }
    store_bind_t b;
    store_bind_from_ref(&ref, &b);
    b.version = p.version;
    b.payload_id = p.payload_id;
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    store_bind_context(&b, ver, pairs);
    store_wrapped_t from = {.ct = p.wrapped,
                            .ct_len = p.wrapped_len,
                            .provider = p.key_provider,
                            .key_id = p.key_id,
                            .key_version = p.key_version},
                    to;
    if (!x->st->keys.rewrap(x->st->keys.ctx, x->call, &from, pairs, STORE_CONTEXT_PAIRS, &to,
                            &kerr)) {
        if (!store_rewrap_key_refusal(kerr.code))
            return cx_error_set(err, kerr.code, "keywrap: %s", kerr.message);
        return store_rewrap_failed(run, id, sid, p.version, &p, kerr.code, kerr.message, err);
    }
    if (!store_rewrap_under_target(run, to.provider, to.key_id))
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "keywrap replicas disagree on the current CMK: Describe named %s %s, "
                            "Rewrap answered %s %s; finish the rolling restart of keywrap, then "
                            "run again",
                            store_key_provider_name(run->target.provider), run->target.key_id,
                            store_key_provider_name(to.provider), to.key_id);
    bool matched = false;
    if (!store_rewrap_replace(x, id, &from, &to, &matched, err))
        return false;
    if (!matched)
        return store_rewrap_lost(run, &p, err);
    cx_kv_t attrs[] = {
        {"version", ver},          {"run_id", run->run_id},
        {"payload_id", id},        {"from_key_provider", store_key_provider_name(p.key_provider)},
        {"from_key_id", p.key_id}, {"to_key_provider", store_key_provider_name(to.provider)},
        {"to_key_id", to.key_id}};
    if (!store_audit(x, "secret.key_rewrapped", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS,
                     CX_OK, attrs, sizeof attrs / sizeof attrs[0], err)) {
        store_rewrap_undo(x, id, &from, &to);
        return false;
    }
    run->resp->rewrapped++;
    return true;
}

static bool store_rewrap_validate(const Credex__V1__StoreRewrapDataKeysRequest *r, cx_error_t *err)
{
    /* run_id: required and an id (the contract, checked by the dispatch). */
    if (r->after_payload_id[0] && !store_id_valid(r->after_payload_id, "pay_"))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "after_payload_id must be a payload id (pay_...)");
    if (r->limit > STORE_REWRAP_LIMIT_MAX || (r->limit == 0 && !r->count_only))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "limit must be 1..%d",
                            STORE_REWRAP_LIMIT_MAX);
    return true;
}

bool store_rewrap_data_keys(store_ctx_t *x, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreRewrapDataKeysRequest *r =
        (const Credex__V1__StoreRewrapDataKeysRequest *)request;
    rpc_arena_t *a = x->arena;
    store_rewrap_rows_t rows = {.n = 0};
    bson_t filter = BSON_INITIALIZER;
    bool ok = false, more = false;
    if (!store_rewrap_validate(r, err))
        goto out;
    if (!x->st->keys.rewrap || !x->st->keys.describe) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "no keywrap to rewrap with");
        goto out;
    }
    Credex__V1__StoreRewrapDataKeysResponse *resp = rpc_arena_alloc(a, sizeof(*resp));
    credex__v1__store_rewrap_data_keys_response__init(resp);
    store_rewrap_run_t run = {.x = x, .run_id = r->run_id, .resp = resp};
    run.failures = rpc_arena_alloc(a, STORE_REWRAP_LIMIT_MAX * sizeof(*run.failures));
    resp->failures = run.failures;
    cx_error_t kerr = {0};
    if (!x->st->keys.describe(x->st->keys.ctx, x->call, &run.target, &kerr)) {
        cx_error_set(err, kerr.code, "keywrap: %s", kerr.message);
        goto out;
    }
    if (!store_connect(x, err))
        goto out;
    resp->target_key_provider = run.target.provider;
    resp->target_key_id = (char *)run.target.key_id;
    resp->next_after_payload_id = "";
    if (!r->count_only) {
        bson_destroy(&filter);
        store_rewrap_filter(&run.target, r->after_payload_id, &filter);
        if (!mdb_find_first(x->st->db, x->c, MDB_COLL_PAYLOADS, &filter, "_id", r->limit,
                            store_rewrap_row, &rows, &more, err))
            goto out;
        for (size_t i = 0; i < rows.n; i++)
            if (!store_rewrap_one(&run, rows.docs[i], err))
                goto out;
        /* Where the next call goes on: after this batch's last document (the filter only
         * selects string ids, one of which it was). */
        bson_iter_t it;
        if (more && rows.n && bson_iter_init_find(&it, rows.docs[rows.n - 1], "_id") &&
            BSON_ITER_HOLDS_UTF8(&it))
            resp->next_after_payload_id =
                rpc_arena_strndup(a, bson_iter_utf8(&it, NULL), strlen(bson_iter_utf8(&it, NULL)));
    }
    /* The count reads the whole collection (no index serves "not under the target"): once per
     * pass, when the caller needs it, not once per batch. */
    if (r->count_only || !more) {
        bson_destroy(&filter);
        store_rewrap_filter(&run.target, NULL, &filter);
        if (!mdb_count(x->st->db, x->c, MDB_COLL_PAYLOADS, &filter, &resp->remaining, err))
            goto out;
    }
    resp->done = r->count_only ? resp->remaining == 0 : !more;
    cx_log_info(rpc_call_correlation_id(x->call), "store.data_keys_rewrapped",
                CX_LOG_STR("run_id", r->run_id), CX_LOG_BOOL("count_only", r->count_only),
                CX_LOG_STR("to_key_provider", store_key_provider_name(run.target.provider)),
                CX_LOG_STR("to_key_id", run.target.key_id),
                CX_LOG_INT("rewrapped", resp->rewrapped),
                CX_LOG_INT("already_current", resp->already_current),
                CX_LOG_INT("failed", (int64_t)resp->n_failures),
                CX_LOG_INT("remaining", (int64_t)resp->remaining));
    *reply = &resp->base;
    ok = true;
out:
    /* The last key's secret is no fact of the call (and points into a document freed here). */
    x->secret_id = NULL;
    x->owner = NULL;
    for (size_t i = 0; i < rows.n; i++)
        bson_destroy(rows.docs[i]);
    bson_destroy(&filter);
    return ok;
}
