/*
 * store secrets: the credex.v1.CredentialStore handlers.
 *
 * Documents (field names follow common.proto SecretMetadata / VersionInfo):
 *   credential_secret_refs: secret_id, owner_type, owner_id, kind, status, display_name,
 *     description, provider, connector_id, allowed_uses[], current_version, current_payload_id,
 *     value_set, create_fingerprint, created_by/at, updated_by/at, rotated_at, revoked_at,
 *     deleted_at. Masked state only: no length, no last characters, nothing derived from the
 *     value.
 *   credential_encrypted_payloads: payload_id, secret_id, version, alg, key_provider, key_id,
 *     key_version, wrapped_key, nonce, ciphertext, tag, created_by, created_at.
 *
 * Concurrency is settled by unique indexes, not by locks: secret_id (idempotent create) and
 * (secret_id, version) (rotation: the payload of v+1 is inserted first, then the metadata is
 * moved from v to v+1 with a conditional update; the loser of either step cleans up).
 *
 * A ref's _id is its secret_id and a payload's _id its payload_id; every query and conditional
 * update of one ref selects it by _id (plus its conditions), which any MongoDB answers from the
 * primary key (and FerretDB's SQLite backend with credex's patch, tools/go/ferretdb/patches).
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

/* ---- small helpers --------------------------------------------------------------------- */

typedef struct store_ref {
    Credex__V1__SecretMetadata *meta;
    const char *payload_id;  /* current_payload_id */
    const char *fingerprint; /* create_fingerprint */
} store_ref_t;

typedef struct store_ctx {
    store_t *st;
    rpc_call_t *call;
    rpc_arena_t *arena;
    mongoc_client_t *c;
    const char *peer;
    /* Set when a database operation failed as unavailable: follow-up writes (failure audit,
     * cleanups) are then skipped, since each would wait the full database timeout again and
     * push the answer past the caller's deadline. What they would have cleaned up is
     * recovered later (see store_create_replay and store_reclaim_orphan). */
    bool db_down;
} store_ctx_t;

static bool store_begin(store_ctx_t *x, rpc_call_t *call, cx_error_t *err)
{
    memset(x, 0, sizeof(*x));
    x->st = rpc_call_context(call); /* set by store_register */
    x->call = call;
    x->arena = rpc_call_arena(call);
    x->peer = rpc_call_peer(call);
    if (!x->st)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "store is not ready");
    /* Defence in depth: the gateway refuses first, but a disabled feature must be disabled
     * everywhere. */
    if (!x->st->cfg->credentials_enabled)
        return cx_error_set(err, CX_ERR_FEATURE_DISABLED, "credentials feature is disabled");
    return true;
}

static bool store_connect(store_ctx_t *x, cx_error_t *err)
{
    x->c = mdb_client_pop(x->st->db, err);
    return x->c != NULL;
}

static void store_end(store_ctx_t *x)
{
    if (x->st && x->c)
        mdb_client_push(x->st->db, x->c);
    x->c = NULL;
}

/* mdb_error_map plus the db_down bookkeeping. Returns false. */
static bool store_db_error(store_ctx_t *x, const bson_error_t *berr, const bson_t *reply,
                           const char *what, cx_error_t *err)
{
    if (mdb_error_code(berr, reply) == CX_ERR_UNAVAILABLE)
        x->db_down = true;
    return mdb_error_map(berr, reply, what, err);
}

static int64_t store_date(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return 0;
}

static int64_t store_int(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) &&
        (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)))
        return bson_iter_as_int64(&it);
    return -1;
}

static bool store_ref_decode(rpc_arena_t *arena, const bson_t *doc, store_ref_t *out,
                             cx_error_t *err)
{
    bson_iter_t it, child;
    Credex__V1__SecretMetadata *m = rpc_arena_alloc(arena, sizeof(*m));
    Credex__V1__Owner *o = rpc_arena_alloc(arena, sizeof(*o));
    credex__v1__secret_metadata__init(m);
    credex__v1__owner__init(o);
    m->secret_id = store_adup(arena, doc, "secret_id");
    o->owner_type = store_owner_type_parse(store_adup(arena, doc, "owner_type"));
    o->owner_id = store_adup(arena, doc, "owner_id");
    m->owner = o;
    m->kind = store_kind_parse(store_adup(arena, doc, "kind"));
    m->status = store_status_parse(store_adup(arena, doc, "status"));
    int64_t v = store_int(doc, "current_version");
    if (!store_id_valid(m->secret_id, "sec_") || !o->owner_type || !m->kind || !m->status ||
        v < 1 || v > UINT32_MAX)
        return cx_error_set(err, CX_ERR_INTERNAL, "stored secret metadata is malformed");
    m->current_version = (uint32_t)v;
    m->display_name = store_adup(arena, doc, "display_name");
    m->description = store_adup(arena, doc, "description");
    m->provider = store_adup(arena, doc, "provider");
    m->connector_id = store_adup(arena, doc, "connector_id");
    if (bson_iter_init_find(&it, doc, "allowed_uses") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &child)) {
        m->allowed_uses = rpc_arena_alloc(arena, 16 * sizeof(char *));
        while (bson_iter_next(&child) && m->n_allowed_uses < 16)
            if (BSON_ITER_HOLDS_UTF8(&child)) {
                uint32_t len = 0;
                const char *s = bson_iter_utf8(&child, &len);
                m->allowed_uses[m->n_allowed_uses++] = rpc_arena_strndup(arena, s, len);
            }
    }
    m->value_set = bson_iter_init_find(&it, doc, "value_set") && BSON_ITER_HOLDS_BOOL(&it) &&
                   bson_iter_bool(&it);
    /* A constant, never derived from the value (common.proto). */
    m->masked_value =
        rpc_arena_strndup(arena, m->value_set ? "********" : "", m->value_set ? 8 : 0);
    m->created_by = store_adup(arena, doc, "created_by");
    m->created_at_ms = store_date(doc, "created_at");
    m->updated_by = store_adup(arena, doc, "updated_by");
    m->updated_at_ms = store_date(doc, "updated_at");
    m->rotated_at_ms = store_date(doc, "rotated_at");
    m->revoked_at_ms = store_date(doc, "revoked_at");
    m->deleted_at_ms = store_date(doc, "deleted_at");
    out->meta = m;
    out->payload_id = store_adup(arena, doc, "current_payload_id");
    out->fingerprint = store_adup(arena, doc, "create_fingerprint");
    return true;
}

/* Find one document; *found false when none. */
static bool store_find_one(store_ctx_t *x, const char *collname, const bson_t *filter, bson_t *out,
                           bool *found, cx_error_t *err)
{
    const bson_t *doc;
    bson_error_t berr;
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_INT64(&opts, "limit", 1);
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, collname);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
    *found = false;
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out);
        *found = true;
    }
    bool ok = !mongoc_cursor_error(cur, &berr);
    if (!ok) {
        if (*found)
            bson_destroy(out);
        *found = false;
        store_db_error(x, &berr, NULL, "database read", err);
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    return ok;
}

/* Load a secret's metadata; not_found when absent. */
static bool store_load_ref(store_ctx_t *x, const char *secret_id, store_ref_t *ref, cx_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, doc;
    bool found = false, ok;
    BSON_APPEND_UTF8(&filter, "_id", secret_id);
    ok = store_find_one(x, MDB_COLL_SECRET_REFS, &filter, &doc, &found, err);
    bson_destroy(&filter);
    if (!ok)
        return false;
    if (!found)
        return cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
    ok = store_ref_decode(x->arena, &doc, ref, err);
    bson_destroy(&doc);
    return ok;
}

/* A peer that may not touch this kind sees permission_denied (store.proto). */
static bool store_check_peer(store_ctx_t *x, const store_ref_t *ref, cx_error_t *err)
{
    if (!store_peer_may_use(x->peer, ref->meta->kind, ref->meta->owner->owner_type))
        return cx_error_set(err, CX_ERR_PERMISSION_DENIED,
                            "this peer may not use secrets of this kind or owner");
    return true;
}

static const char *store_actor(const Credex__V1__CallerContext *c, const char *peer)
{
    if (c && c->subject_user_id && c->subject_user_id[0])
        return c->subject_user_id;
    if (c && c->service_id && c->service_id[0])
        return c->service_id;
    return peer ? peer : "credex";
}

/* One audit event about a secret. attrs: NULL-terminated key/value pairs. */
static bool store_audit(store_ctx_t *x, const Credex__V1__CallerContext *caller,
                        const char *event_type, Credex__V1__AuditOutcome outcome, cx_code_t reason,
                        const char *secret_id, const Credex__V1__Owner *owner, const cx_kv_t *attrs,
                        size_t nattrs, cx_error_t *err)
{
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    Credex__V1__AuditEvent__AttributesEntry ents[8], *ptrs[8];
    Credex__V1__Owner ow = CREDEX__V1__OWNER__INIT;
    e.event_type = (char *)event_type;
    e.outcome = outcome;
    e.reason = (char *)(reason == CX_OK ? "" : cx_code_reason(reason));
    e.resource_type = "secret_ref";
    e.resource_id = (char *)(secret_id ? secret_id : "");
    if (caller) {
        e.subject_user_id = caller->subject_user_id;
        e.caller_kind = caller->caller_kind;
        e.intended_use = caller->intended_use;
        e.resource_context = caller->resource_context;
    }
    e.actor_id = (char *)store_actor(caller, x->peer);
    /* The hop that reached store; the gateway's own peer is in the caller context. */
    e.peer = (char *)(caller && caller->peer && caller->peer[0] ? caller->peer : x->peer);
    e.correlation_id = (char *)rpc_call_correlation_id(x->call);
    if (owner && owner->owner_type) {
        ow.owner_type = owner->owner_type;
        ow.owner_id = owner->owner_id;
        e.owner = &ow;
    }
    size_t n = 0;
    for (size_t i = 0; i < nattrs && n < 7; i++) {
        Credex__V1__AuditEvent__AttributesEntry a = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
        a.key = (char *)attrs[i].key;
        a.value = (char *)attrs[i].value;
        ents[n] = a;
        ptrs[n] = &ents[n];
        n++;
    }
    Credex__V1__AuditEvent__AttributesEntry via = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    via.key = "via";
    via.value = (char *)(x->peer ? x->peer : "");
    ents[n] = via;
    ptrs[n] = &ents[n];
    n++;
    e.n_attributes = n;
    e.attributes = ptrs;
    if (!store_audit_insert(x->st, x->c, &e, x->arena, err)) {
        if (err && err->code == CX_ERR_UNAVAILABLE)
            x->db_down = true;
        if (err)
            err->code = CX_ERR_UNAVAILABLE;
        cx_log_error(rpc_call_correlation_id(x->call), "store.audit_write_failed",
                     CX_LOG_STR("event_type", event_type),
                     CX_LOG_STR("secret_id", secret_id ? secret_id : ""));
        return false;
    }
    return true;
}

/* Best-effort audit of a failure or denial: the call already fails with err_in. */
static void store_audit_failure(store_ctx_t *x, const Credex__V1__CallerContext *caller,
                                const char *event_type, const char *secret_id,
                                const Credex__V1__Owner *owner, const cx_error_t *err_in)
{
    cx_error_t ignored;
    if (!x->c || !err_in || x->db_down)
        return;
    Credex__V1__AuditOutcome o =
        (err_in->code == CX_ERR_PERMISSION_DENIED || err_in->code == CX_ERR_BROWSER_DENIED ||
         err_in->code == CX_ERR_FAILED_PRECONDITION)
            ? CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED
            : CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_FAILED;
    store_audit(x, caller, event_type, o, err_in->code, secret_id, owner, NULL, 0, &ignored);
}

/* SHA-256 hex of the non-secret create parameters (never the value). */
static void store_fingerprint(const Credex__V1__StoreCreateSecretRequest *r, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *fields[7] = {store_owner_type_name(r->owner->owner_type),
                             r->owner->owner_id,
                             store_kind_name(r->kind),
                             r->display_name,
                             r->description,
                             r->provider,
                             r->connector_id};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        abort();
    for (size_t i = 0; i < 7 + r->n_allowed_uses; i++) {
        const char *s = i < 7 ? fields[i] : r->allowed_uses[i - 7];
        uint32_t len = (uint32_t)strlen(s);
        /* Length-prefixed so that ("ab","c") and ("a","bc") differ. */
        if (!EVP_DigestUpdate(ctx, &len, sizeof(len)) || !EVP_DigestUpdate(ctx, s, len))
            abort();
    }
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen))
        abort();
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Encrypt value as version b->version of b->secret_id under a fresh data key and insert the
 * payload document. CONFLICT when that version already exists. */
static bool store_write_payload(store_ctx_t *x, const store_bind_t *b,
                                const ProtobufCBinaryData *value, const char *created_by,
                                cx_error_t *err)
{
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    cx_secret_t *dek = NULL;
    store_wrapped_t w;
    unsigned char nonce[CX_GCM_NONCE_LEN], tag[CX_GCM_TAG_LEN];
    unsigned char *ct = rpc_arena_alloc(x->arena, value->len);
    bson_t doc = BSON_INITIALIZER, reply;
    bson_error_t berr;
    bool ok = false;

    store_bind_context(b, ver, pairs);
    if (!x->st->keys.generate(x->st->keys.ctx, x->call, pairs, STORE_CONTEXT_PAIRS, &dek, &w, err))
        goto out;
    if (!store_envelope_seal(dek, b, value->data, value->len, nonce, ct, tag, err))
        goto out;
    /* _id = payload_id (and secret_id for refs): the hot lookups are by _id, which every
     * MongoDB-wire backend serves from its primary key (FerretDB's SQLite backend scans for
     * secondary fields, so lookups would grow with the collection). */
    BSON_APPEND_UTF8(&doc, "_id", b->payload_id);
    BSON_APPEND_UTF8(&doc, "payload_id", b->payload_id);
    BSON_APPEND_UTF8(&doc, "secret_id", b->secret_id);
    BSON_APPEND_INT64(&doc, "version", b->version);
    BSON_APPEND_UTF8(&doc, "alg", STORE_ALG);
    BSON_APPEND_UTF8(&doc, "key_provider", store_key_provider_name(w.provider));
    BSON_APPEND_UTF8(&doc, "key_id", w.key_id);
    BSON_APPEND_UTF8(&doc, "key_version", w.key_version ? w.key_version : "");
    BSON_APPEND_BINARY(&doc, "wrapped_key", BSON_SUBTYPE_BINARY, w.ct, (uint32_t)w.ct_len);
    BSON_APPEND_BINARY(&doc, "nonce", BSON_SUBTYPE_BINARY, nonce, CX_GCM_NONCE_LEN);
    BSON_APPEND_BINARY(&doc, "ciphertext", BSON_SUBTYPE_BINARY, ct, (uint32_t)value->len);
    BSON_APPEND_BINARY(&doc, "tag", BSON_SUBTYPE_BINARY, tag, CX_GCM_TAG_LEN);
    BSON_APPEND_UTF8(&doc, "created_by", created_by);
    BSON_APPEND_DATE_TIME(&doc, "created_at", mdb_now_ms());
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, MDB_COLL_PAYLOADS);
    ok = mongoc_collection_insert_one(coll, &doc, NULL, &reply, &berr);
    if (!ok)
        store_db_error(x, &berr, &reply, "payload write", err);
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
out:
    cx_secret_free(dek);
    bson_destroy(&doc);
    return ok;
}

static bool store_delete_docs(store_ctx_t *x, const char *collname, const bson_t *filter, bool many,
                              cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, collname);
    bool ok = many ? mongoc_collection_delete_many(coll, filter, NULL, &reply, &berr)
                   : mongoc_collection_delete_one(coll, filter, NULL, &reply, &berr);
    if (!ok)
        store_db_error(x, &berr, &reply, "database delete", err);
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    return ok;
}

static void store_delete_payload_id(store_ctx_t *x, const char *payload_id)
{
    bson_t f = BSON_INITIALIZER;
    cx_error_t ignored;
    if (x->db_down)
        return;
    BSON_APPEND_UTF8(&f, "payload_id", payload_id);
    store_delete_docs(x, MDB_COLL_PAYLOADS, &f, false, &ignored);
    bson_destroy(&f);
}

/* Conditional update; *matched tells whether the selector matched. */
static bool store_update(store_ctx_t *x, const char *collname, const bson_t *sel, const bson_t *upd,
                         bool *matched, cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, collname);
    bool ok = mongoc_collection_update_one(coll, sel, upd, NULL, &reply, &berr);
    if (!ok)
        store_db_error(x, &berr, &reply, "database update", err);
    else if (matched)
        *matched = store_int(&reply, "matchedCount") > 0;
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    return ok;
}

/* Conditional update of one secret's metadata that also answers the document as it is after
 * the update (findAndModify, new: true), so that a lifecycle reply needs no second read.
 * *matched false: the selector matched nothing and *out is untouched. */
static bool store_update_ref(store_ctx_t *x, const bson_t *sel, const bson_t *upd, store_ref_t *out,
                             bool *matched, cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    bson_iter_t it;
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, MDB_COLL_SECRET_REFS);
    mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(o, upd);
    mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    bool ok = mongoc_collection_find_and_modify_with_opts(coll, sel, o, &reply, &berr);
    *matched = false;
    if (!ok) {
        store_db_error(x, &berr, &reply, "database update", err);
    } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        const uint8_t *data;
        uint32_t len;
        bson_t doc;
        bson_iter_document(&it, &len, &data);
        ok = bson_init_static(&doc, data, len) && store_ref_decode(x->arena, &doc, out, err);
        *matched = ok;
    }
    mongoc_find_and_modify_opts_destroy(o);
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    return ok;
}

/* store_update_ref, and when the selector matched nothing (someone else revoked or deleted the
 * secret meanwhile), the metadata as it is now: either way *ref is the secret after the call. */
static bool store_update_ref_current(store_ctx_t *x, const bson_t *sel, const bson_t *upd,
                                     const char *secret_id, store_ref_t *ref, cx_error_t *err)
{
    bool matched = false;
    store_ref_t after;
    if (!store_update_ref(x, sel, upd, &after, &matched, err))
        return false;
    if (!matched)
        return store_load_ref(x, secret_id, ref, err);
    *ref = after;
    return true;
}

static bool store_payload_exists(store_ctx_t *x, const char *secret_id, uint32_t version,
                                 bool *exists, cx_error_t *err)
{
    bson_t f = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&f, "secret_id", secret_id);
    BSON_APPEND_INT64(&f, "version", version);
    bool ok = store_find_one(x, MDB_COLL_PAYLOADS, &f, &doc, exists, err);
    if (ok && *exists)
        bson_destroy(&doc);
    bson_destroy(&f);
    return ok;
}

static void store_bind_from_ref(const store_ref_t *ref, store_bind_t *b)
{
    b->secret_id = ref->meta->secret_id;
    b->version = ref->meta->current_version;
    b->owner_type = store_owner_type_name(ref->meta->owner->owner_type);
    b->owner_id = ref->meta->owner->owner_id;
    b->kind = store_kind_name(ref->meta->kind);
    b->payload_id = ref->payload_id;
}

/* ---- CreateSecret ---------------------------------------------------------------------- */

static bool store_create_replay(store_ctx_t *x, const Credex__V1__StoreCreateSecretRequest *r,
                                const store_ref_t *ref, const char *fp, cx_error_t *err)
{
    if (strcmp(ref->fingerprint, fp) != 0)
        return cx_error_set(err, CX_ERR_CONFLICT,
                            "idempotency_key was used with different parameters");
    /* A create interrupted between its two writes left metadata without version 1: finish it
     * with this replay's value (the same key promises the same request). */
    if (ref->meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE &&
        ref->meta->current_version == 1) {
        bool exists = false;
        if (!store_payload_exists(x, ref->meta->secret_id, 1, &exists, err))
            return false;
        if (!exists) {
            store_bind_t b;
            store_bind_from_ref(ref, &b);
            if (!store_write_payload(x, &b, &r->value, ref->meta->created_by, err) &&
                err->code != CX_ERR_CONFLICT)
                return false;
        }
    }
    return true;
}

/* The payload of version 1 of a secret this create has just inserted. A concurrent replay of
 * the same key that found the metadata before this payload existed writes it itself (see
 * store_create_replay), under this very payload id: then ours is refused as a duplicate, and
 * the one stored is the replay's, equally valid (same key, same request). Only a duplicate
 * under another payload id (a leftover of an interrupted create) is a real conflict. */
static bool store_create_payload(store_ctx_t *x, const store_bind_t *b,
                                 const ProtobufCBinaryData *value, const char *actor,
                                 cx_error_t *err)
{
    if (store_write_payload(x, b, value, actor, err))
        return true;
    if (err->code != CX_ERR_CONFLICT)
        return false;
    bson_t f = BSON_INITIALIZER, doc;
    bool found = false;
    cx_error_t ferr;
    BSON_APPEND_UTF8(&f, "_id", b->payload_id);
    if (store_find_one(x, MDB_COLL_PAYLOADS, &f, &doc, &found, &ferr) && found) {
        bson_destroy(&doc);
        cx_error_clear(err);
    }
    bson_destroy(&f);
    return found;
}

static bool store_create(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreCreateSecretRequest *r =
        (const Credex__V1__StoreCreateSecretRequest *)request;
    store_ctx_t x;
    char sid[STORE_ID_BUF], pid[STORE_ID_BUF], fp[65];
    bson_t doc = BSON_INITIALIZER, reply_doc, arr;
    bson_error_t berr;
    store_ref_t ref;
    bool ok = false, created = false;

    if (!store_begin(&x, call, err) || !store_validate_create(r, x.peer, err))
        goto out;
    const char *otype = store_owner_type_name(r->owner->owner_type);
    store_secret_id_derive(otype, r->owner->owner_id, r->idempotency_key, sid);
    store_fingerprint(r, fp);
    if (!store_connect(&x, err))
        goto out;
    cx_error_t lerr;
    if (store_load_ref(&x, sid, &ref, &lerr)) {
        ok = store_create_replay(&x, r, &ref, fp, err);
        goto out;
    }
    if (lerr.code != CX_ERR_NOT_FOUND) {
        cx_error_copy(err, &lerr);
        goto out;
    }
    if (!store_random_id("pay_", pid, err))
        goto out;
    const char *actor = store_actor(r->caller, x.peer);
    int64_t now = mdb_now_ms();
    BSON_APPEND_UTF8(&doc, "_id", sid); /* primary-key lookups, see the payload insert */
    BSON_APPEND_UTF8(&doc, "secret_id", sid);
    BSON_APPEND_UTF8(&doc, "owner_type", otype);
    BSON_APPEND_UTF8(&doc, "owner_id", r->owner->owner_id);
    BSON_APPEND_UTF8(&doc, "kind", store_kind_name(r->kind));
    BSON_APPEND_UTF8(&doc, "status", "active");
    BSON_APPEND_UTF8(&doc, "display_name", r->display_name);
    BSON_APPEND_UTF8(&doc, "description", r->description);
    BSON_APPEND_UTF8(&doc, "provider", r->provider);
    BSON_APPEND_UTF8(&doc, "connector_id", r->connector_id);
    BSON_APPEND_ARRAY_BEGIN(&doc, "allowed_uses", &arr);
    for (size_t i = 0; i < r->n_allowed_uses; i++) {
        char k[16];
        const char *key;
        bson_uint32_to_string((uint32_t)i, &key, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, key, r->allowed_uses[i]);
    }
    bson_append_array_end(&doc, &arr);
    BSON_APPEND_INT64(&doc, "current_version", 1);
    BSON_APPEND_UTF8(&doc, "current_payload_id", pid);
    BSON_APPEND_BOOL(&doc, "value_set", true);
    BSON_APPEND_UTF8(&doc, "create_fingerprint", fp);
    BSON_APPEND_UTF8(&doc, "created_by", actor);
    BSON_APPEND_DATE_TIME(&doc, "created_at", now);
    BSON_APPEND_UTF8(&doc, "updated_by", actor);
    BSON_APPEND_DATE_TIME(&doc, "updated_at", now);
    mongoc_collection_t *coll = mdb_collection(x.st->db, x.c, MDB_COLL_SECRET_REFS);
    bool ins = mongoc_collection_insert_one(coll, &doc, NULL, &reply_doc, &berr);
    if (!ins)
        store_db_error(&x, &berr, &reply_doc, "secret write", err);
    bson_destroy(&reply_doc);
    mongoc_collection_destroy(coll);
    if (!ins) {
        /* Lost a race with a concurrent replay of the same key: answer as a replay. */
        if (err->code == CX_ERR_CONFLICT && store_load_ref(&x, sid, &ref, err))
            ok = store_create_replay(&x, r, &ref, fp, err);
        goto out;
    }
    store_bind_t b = {.secret_id = sid,
                      .version = 1,
                      .owner_type = otype,
                      .owner_id = r->owner->owner_id,
                      .kind = store_kind_name(r->kind),
                      .payload_id = pid};
    cx_kv_t attrs[] = {{"version", "1"}, {"kind", b.kind}};
    if (!store_create_payload(&x, &b, &r->value, actor, err) ||
        !store_audit(&x, r->caller, "secret.created",
                     CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK, sid, r->owner, attrs,
                     2, err)) {
        /* Undo both writes: a secret nobody was told about, or one without an audit record,
         * must not exist. */
        bson_t f = BSON_INITIALIZER;
        cx_error_t ignored;
        store_delete_payload_id(&x, pid);
        BSON_APPEND_UTF8(&f, "_id", sid);
        BSON_APPEND_UTF8(&f, "current_payload_id", pid);
        if (!x.db_down)
            store_delete_docs(&x, MDB_COLL_SECRET_REFS, &f, false, &ignored);
        bson_destroy(&f);
        goto out;
    }
    if (!store_ref_decode(x.arena, &doc, &ref, err)) /* what was inserted: no second read */
        goto out;
    created = ok = true;
out:
    if (!ok && x.c && r->caller && err->code != CX_ERR_INVALID_ARGUMENT &&
        err->code != CX_ERR_CONFLICT)
        store_audit_failure(&x, r->caller, "secret.created", sid, r->owner, err);
    if (ok) {
        Credex__V1__StoreCreateSecretResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
        credex__v1__store_create_secret_response__init(resp);
        resp->secret = ref.meta;
        resp->created = created;
        *reply = &resp->base;
    }
    bson_destroy(&doc);
    store_end(&x);
    return ok;
}

/* ---- GetSecret / UpdateSecret ---------------------------------------------------------- */

static bool store_get(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    const Credex__V1__StoreGetSecretRequest *r = (const Credex__V1__StoreGetSecretRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    bool ok = store_begin(&x, call, err) && store_validate_caller(r->caller, err) &&
              store_validate_secret_id(r->secret_id, err) && store_connect(&x, err) &&
              store_load_ref(&x, r->secret_id, &ref, err) && store_check_peer(&x, &ref, err);
    if (ok)
        *reply = &ref.meta->base;
    store_end(&x);
    return ok;
}

static bool store_update_secret(rpc_call_t *call, const ProtobufCMessage *request,
                                ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreUpdateSecretRequest *r =
        (const Credex__V1__StoreUpdateSecretRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, arr, ne;
    bool ok = false, matched = false;
    if (!store_begin(&x, call, err) || !store_validate_update(r, err) || !store_connect(&x, err) ||
        !store_load_ref(&x, r->secret_id, &ref, err) || !store_check_peer(&x, &ref, err))
        goto out;
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    BSON_APPEND_UTF8(&sel, "_id", r->secret_id);
    BSON_APPEND_DOCUMENT_BEGIN(&sel, "status", &ne);
    BSON_APPEND_UTF8(&ne, "$ne", "deleted");
    bson_append_document_end(&sel, &ne);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    for (size_t i = 0; i < r->n_update_mask; i++) {
        const char *f = r->update_mask[i];
        if (strcmp(f, "display_name") == 0)
            BSON_APPEND_UTF8(&set, "display_name", r->display_name);
        else if (strcmp(f, "description") == 0)
            BSON_APPEND_UTF8(&set, "description", r->description);
        else if (strcmp(f, "allowed_uses") == 0) {
            BSON_APPEND_ARRAY_BEGIN(&set, "allowed_uses", &arr);
            for (size_t j = 0; j < r->n_allowed_uses; j++) {
                char k[16];
                const char *key;
                bson_uint32_to_string((uint32_t)j, &key, k, sizeof(k));
                BSON_APPEND_UTF8(&arr, key, r->allowed_uses[j]);
            }
            bson_append_array_end(&set, &arr);
        }
    }
    BSON_APPEND_UTF8(&set, "updated_by", store_actor(r->caller, x.peer));
    BSON_APPEND_DATE_TIME(&set, "updated_at", mdb_now_ms());
    bson_append_document_end(&upd, &set);
    store_ref_t after;
    if (!store_update_ref(&x, &sel, &upd, &after, &matched, err))
        goto out;
    if (!matched) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    if (!store_audit(&x, r->caller, "secret.updated",
                     CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK, r->secret_id,
                     ref.meta->owner, NULL, 0, err))
        goto out;
    *reply = &after.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    store_end(&x);
    return ok;
}

/* ---- RotateSecret ---------------------------------------------------------------------- */

/* A rotation that inserted the payload of v+1 and then lost the database before moving the
 * metadata leaves an orphan that would block every later rotation to v+1. A payload of v+1
 * while the metadata still says v is either such an orphan or a rotation in progress; one
 * older than this is certainly not in progress (calls are capped far below it). */
#define STORE_ORPHAN_AGE_MS 120000

static bool store_reclaim_orphan(store_ctx_t *x, const store_bind_t *b)
{
    bson_t f = BSON_INITIALIZER, doc, del = BSON_INITIALIZER;
    bool found = false, reclaimed = false;
    cx_error_t ignored;
    BSON_APPEND_UTF8(&f, "secret_id", b->secret_id);
    BSON_APPEND_INT64(&f, "version", b->version);
    if (!store_find_one(x, MDB_COLL_PAYLOADS, &f, &doc, &found, &ignored) || !found)
        goto out;
    int64_t created = store_date(&doc, "created_at");
    bson_iter_t it;
    if (created > 0 && mdb_now_ms() - created > STORE_ORPHAN_AGE_MS &&
        bson_iter_init_find(&it, &doc, "payload_id") && BSON_ITER_HOLDS_UTF8(&it)) {
        /* Only while the metadata still points below this version (it is ours to check:
         * the caller loaded it as version b->version - 1). */
        store_ref_t ref;
        if (store_load_ref(x, b->secret_id, &ref, &ignored) &&
            ref.meta->current_version == b->version - 1) {
            BSON_APPEND_UTF8(&del, "payload_id", bson_iter_utf8(&it, NULL));
            BSON_APPEND_INT64(&del, "version", b->version);
            reclaimed = store_delete_docs(x, MDB_COLL_PAYLOADS, &del, false, &ignored);
            if (reclaimed)
                cx_log_warn(rpc_call_correlation_id(x->call), "store.orphan_payload_reclaimed",
                            CX_LOG_STR("secret_id", b->secret_id),
                            CX_LOG_INT("version", b->version));
        }
    }
    bson_destroy(&doc);
out:
    bson_destroy(&f);
    bson_destroy(&del);
    return reclaimed;
}

static bool store_rotate(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreRotateSecretRequest *r =
        (const Credex__V1__StoreRotateSecretRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    char pid[STORE_ID_BUF], ver[12];
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool ok = false, matched = false, wrote = false;
    const Credex__V1__Owner *owner = NULL;

    if (!store_begin(&x, call, err) || !store_validate_caller(r->caller, err) ||
        !store_validate_secret_id(r->secret_id, err) || !store_validate_value(&r->value, err))
        goto out;
    if (r->expected_version == 0 && strcmp(x.peer, "gateway") != 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "expected_version is required");
        goto out;
    }
    if (!store_connect(&x, err) || !store_load_ref(&x, r->secret_id, &ref, err) ||
        !store_check_peer(&x, &ref, err))
        goto out;
    owner = ref.meta->owner;
    if (ref.meta->status != CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is %s",
                     store_status_name(ref.meta->status));
        goto out;
    }
    uint32_t cur = ref.meta->current_version;
    if (r->expected_version != 0 && r->expected_version != cur) {
        cx_error_set(err, CX_ERR_CONFLICT, "expected_version %u but current version is %u",
                     r->expected_version, cur);
        goto out;
    }
    if (cur == UINT32_MAX) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "version limit reached");
        goto out;
    }
    if (!store_random_id("pay_", pid, err))
        goto out;
    store_bind_t b;
    store_bind_from_ref(&ref, &b);
    b.version = cur + 1;
    b.payload_id = pid;
    const char *actor = store_actor(r->caller, x.peer);
    /* Step 1: the unique (secret_id, version) index lets exactly one rotation to v+1 in. */
    bool written = store_write_payload(&x, &b, &r->value, actor, err);
    if (!written && err->code == CX_ERR_CONFLICT && store_reclaim_orphan(&x, &b))
        written = store_write_payload(&x, &b, &r->value, actor, err);
    if (!written) {
        if (err->code == CX_ERR_CONFLICT)
            cx_error_set(err, CX_ERR_CONFLICT, "concurrent rotation: version %u exists", b.version);
        goto out;
    }
    wrote = true;
    /* Step 2: move the metadata from v to v+1 only if nobody else did. */
    int64_t now = mdb_now_ms();
    BSON_APPEND_UTF8(&sel, "_id", r->secret_id);
    BSON_APPEND_INT64(&sel, "current_version", cur);
    BSON_APPEND_UTF8(&sel, "status", "active");
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_INT64(&set, "current_version", b.version);
    BSON_APPEND_UTF8(&set, "current_payload_id", pid);
    BSON_APPEND_BOOL(&set, "value_set", true);
    BSON_APPEND_UTF8(&set, "updated_by", actor);
    BSON_APPEND_DATE_TIME(&set, "updated_at", now);
    BSON_APPEND_DATE_TIME(&set, "rotated_at", now);
    bson_append_document_end(&upd, &set);
    store_ref_t moved;
    if (!store_update_ref(&x, &sel, &upd, &moved, &matched, err))
        goto out;
    if (!matched) {
        cx_error_set(err, CX_ERR_CONFLICT, "secret changed concurrently");
        goto out;
    }
    /* Hygiene only (Resolve follows the live metadata to the new payload id anyway). */
    store_payload_cache_evict_secret(x.st->payloads, r->secret_id);
    snprintf(ver, sizeof(ver), "%u", b.version);
    cx_kv_t attrs[] = {{"version", ver}, {"kind", b.kind}};
    if (!store_audit(&x, r->caller, "secret.rotated",
                     CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK, r->secret_id, owner,
                     attrs, 2, err)) {
        /* Put the metadata back to v so that the unaudited version is never served. */
        bson_t s2 = BSON_INITIALIZER, u2 = BSON_INITIALIZER, st2;
        cx_error_t ignored;
        BSON_APPEND_UTF8(&s2, "_id", r->secret_id);
        BSON_APPEND_UTF8(&s2, "current_payload_id", pid);
        BSON_APPEND_DOCUMENT_BEGIN(&u2, "$set", &st2);
        BSON_APPEND_INT64(&st2, "current_version", cur);
        BSON_APPEND_UTF8(&st2, "current_payload_id", ref.payload_id);
        bson_append_document_end(&u2, &st2);
        if (!x.db_down)
            store_update(&x, MDB_COLL_SECRET_REFS, &s2, &u2, NULL, &ignored);
        bson_destroy(&s2);
        bson_destroy(&u2);
        goto out;
    }
    wrote = false; /* committed */
    ref = moved;
    Credex__V1__StoreRotateSecretResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    Credex__V1__VersionInfo *vi = rpc_arena_alloc(x.arena, sizeof(*vi));
    credex__v1__store_rotate_secret_response__init(resp);
    credex__v1__version_info__init(vi);
    vi->secret_id = ref.meta->secret_id;
    vi->version = b.version;
    vi->payload_id = rpc_arena_strndup(x.arena, pid, strlen(pid));
    vi->state = CREDEX__V1__VERSION_STATE__VERSION_STATE_CURRENT;
    vi->algorithm = STORE_ALG;
    vi->created_by = (char *)actor;
    vi->created_at_ms = now;
    resp->secret = ref.meta;
    resp->version = vi;
    *reply = &resp->base;
    ok = true;
out:
    if (wrote)
        store_delete_payload_id(&x, pid); /* the loser (or a failed step) cleans up */
    if (!ok && x.c && err->code != CX_ERR_INVALID_ARGUMENT && err->code != CX_ERR_NOT_FOUND)
        store_audit_failure(&x, r->caller, "secret.rotated", r->secret_id, owner, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    store_end(&x);
    return ok;
}

/* ---- RevokeSecret / DeleteSecret ------------------------------------------------------- */

static bool store_revoke(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreRevokeSecretRequest *r =
        (const Credex__V1__StoreRevokeSecretRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool ok = false;
    if (!store_begin(&x, call, err) || !store_validate_caller(r->caller, err) ||
        !store_validate_secret_id(r->secret_id, err))
        goto out;
    if (strlen(r->reason) > 256 || strpbrk(r->reason, "\r\n\t")) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "reason must be <= 256 printable chars");
        goto out;
    }
    if (!store_connect(&x, err) || !store_load_ref(&x, r->secret_id, &ref, err) ||
        !store_check_peer(&x, &ref, err))
        goto out;
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE) {
        int64_t now = mdb_now_ms();
        BSON_APPEND_UTF8(&sel, "_id", r->secret_id);
        BSON_APPEND_UTF8(&sel, "status", "active");
        BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
        BSON_APPEND_UTF8(&set, "status", "revoked");
        BSON_APPEND_UTF8(&set, "updated_by", store_actor(r->caller, x.peer));
        BSON_APPEND_DATE_TIME(&set, "updated_at", now);
        BSON_APPEND_DATE_TIME(&set, "revoked_at", now);
        bson_append_document_end(&upd, &set);
        if (!store_update_ref_current(&x, &sel, &upd, r->secret_id, &ref, err))
            goto out;
        /* Hygiene only: Resolve reads the status live and refuses a revoked secret. */
        store_payload_cache_evict_secret(x.st->payloads, r->secret_id);
        cx_kv_t attrs[] = {{"note", r->reason}};
        if (!store_audit(&x, r->caller, "secret.revoked",
                         CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK, r->secret_id,
                         ref.meta->owner, attrs, r->reason[0] ? 1 : 0, err))
            goto out;
    }
    *reply = &ref.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    store_end(&x);
    return ok;
}

static bool store_delete(rpc_call_t *call, const ProtobufCMessage *request,
                         ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreDeleteSecretRequest *r =
        (const Credex__V1__StoreDeleteSecretRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, pf = BSON_INITIALIZER;
    bool ok = false;
    if (!store_begin(&x, call, err) || !store_validate_caller(r->caller, err) ||
        !store_validate_secret_id(r->secret_id, err) || !store_connect(&x, err) ||
        !store_load_ref(&x, r->secret_id, &ref, err) || !store_check_peer(&x, &ref, err))
        goto out;
    bool was_deleted = ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED;
    if (!was_deleted) {
        /* Tombstone first: from this write on, Resolve refuses the secret even if destroying
         * the payloads below is interrupted (a retry finishes it). */
        int64_t now = mdb_now_ms();
        BSON_APPEND_UTF8(&sel, "_id", r->secret_id);
        BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
        BSON_APPEND_UTF8(&set, "status", "deleted");
        BSON_APPEND_BOOL(&set, "value_set", false);
        BSON_APPEND_UTF8(&set, "updated_by", store_actor(r->caller, x.peer));
        BSON_APPEND_DATE_TIME(&set, "updated_at", now);
        BSON_APPEND_DATE_TIME(&set, "deleted_at", now);
        bson_append_document_end(&upd, &set);
        if (!store_update_ref_current(&x, &sel, &upd, r->secret_id, &ref, err))
            goto out;
    }
    /* Hygiene only: from the tombstone on, Resolve refuses the secret before any payload. */
    store_payload_cache_evict_secret(x.st->payloads, r->secret_id);
    BSON_APPEND_UTF8(&pf, "secret_id", r->secret_id);
    if (!store_delete_docs(&x, MDB_COLL_PAYLOADS, &pf, true, err))
        goto out;
    if (!was_deleted && !store_audit(&x, r->caller, "secret.deleted",
                                     CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK,
                                     r->secret_id, ref.meta->owner, NULL, 0, err))
        goto out;
    *reply = &ref.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    bson_destroy(&pf);
    store_end(&x);
    return ok;
}

/* ---- Resolve --------------------------------------------------------------------------- */

static bool store_uses_allow(const Credex__V1__SecretMetadata *m, const char *use)
{
    if (m->n_allowed_uses == 0)
        return true;
    for (size_t i = 0; i < m->n_allowed_uses; i++)
        if (strcmp(m->allowed_uses[i], use) == 0)
            return true;
    return false;
}

/* Unwrap p's data key (DEK cache or keywrap) and open p under the binding b (from the live
 * metadata). */
static cx_secret_t *store_resolve_open(store_ctx_t *x, const store_bind_t *b,
                                       const store_payload_t *p, cx_error_t *err)
{
    unsigned char *aad = NULL, ckey[32];
    size_t aadlen = 0;
    cx_secret_t *dek = NULL, *plain = NULL;
    if (!store_bind_aad(b, &aad, &aadlen, err))
        return NULL;
    store_dek_cache_key(b, p->wrapped, p->wrapped_len, aad, aadlen, ckey);
    int64_t now = mdb_now_ms();
    dek = store_dek_cache_get(x->st->dek, ckey, now);
    if (!dek) {
        char ver[12];
        cx_kv_t pairs[STORE_CONTEXT_PAIRS];
        store_wrapped_t w = {.ct = p->wrapped,
                             .ct_len = p->wrapped_len,
                             .provider = p->key_provider,
                             .key_id = p->key_id,
                             .key_version = p->key_version};
        store_bind_context(b, ver, pairs);
        if (!x->st->keys.unwrap(x->st->keys.ctx, x->call, &w, pairs, STORE_CONTEXT_PAIRS, &dek,
                                err))
            goto out;
        store_dek_cache_put(x->st->dek, ckey, dek, now);
    }
    plain = store_envelope_open(dek, b, p, err);
out:
    cx_secret_free(dek);
    free(aad);
    return plain;
}

/* A failure that a fresh copy of the payload cannot cure: the key service or the call is
 * gone. Retrying would only wait for it a second time. */
static bool store_transient(cx_code_t code)
{
    return code == CX_ERR_UNAVAILABLE || code == CX_ERR_DEADLINE_EXCEEDED ||
           code == CX_ERR_CANCELLED;
}

static bool store_resolve(rpc_call_t *call, const ProtobufCMessage *request,
                          ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreResolveRequest *r = (const Credex__V1__StoreResolveRequest *)request;
    store_ctx_t x;
    store_ref_t ref = {0};
    bson_t f = BSON_INITIALIZER, pdoc;
    bool ok = false, have_pdoc = false, found = false;
    cx_secret_t *plain = NULL, *cached = NULL;
    store_payload_t p = {0};
    store_bind_t b;

    if (!store_begin(&x, call, err) || !store_validate_resolve(r, x.peer, err) ||
        !store_connect(&x, err) || !store_load_ref(&x, r->secret_id, &ref, err))
        goto out;
    /* Every check that can refuse happens before any unwrap or decrypt. The metadata is read
     * from the database at every Resolve, never cached: a revoke, delete or rotation on any
     * replica takes effect at once. */
    if (!store_check_peer(&x, &ref, err))
        goto out;
    if (r->expected_kind && r->expected_kind != ref.meta->kind) {
        cx_error_set(err, CX_ERR_NOT_FOUND, "secret not found");
        goto out;
    }
    if (ref.meta->status != CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is %s",
                     store_status_name(ref.meta->status));
        goto out;
    }
    if (!store_uses_allow(ref.meta, r->caller->intended_use)) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "intended_use is not allowed for this secret");
        goto out;
    }
    store_bind_from_ref(&ref, &b);
    bool by_id = ref.payload_id != NULL && ref.payload_id[0] != '\0';
    /* The payload of a payload id never changes, so a cached copy (put only after it opened)
     * saves the second database read. Anything failing after a hit (a CMK rewrap changed the
     * stored wrapped key, the key service refuses the old one, a damaged entry) evicts it and
     * redoes the retrieval once from the database, whose answer is final: a tampered document
     * is still integrity_error. */
    if (by_id &&
        store_payload_cache_get(x.st->payloads, ref.payload_id, mdb_now_ms(), &p, &cached)) {
        plain = store_resolve_open(&x, &b, &p, err);
        cx_secret_free(cached);
        cached = NULL;
        if (!plain) {
            if (store_transient(err->code))
                goto out;
            store_payload_cache_evict(x.st->payloads, ref.payload_id);
            cx_log_warn(rpc_call_correlation_id(call), "store.payload_cache_retry",
                        CX_LOG_STR("secret_id", ref.meta->secret_id),
                        CX_LOG_STR("reason", cx_code_reason(err->code)));
            cx_error_clear(err); /* the database's answer below is the call's */
        }
    }
    if (!plain) {
        /* By primary key; the envelope's associated data is bound to what the ref says (secret
         * id, current version, payload id), so a document swapped in under this _id fails to
         * open. */
        if (by_id) {
            BSON_APPEND_UTF8(&f, "_id", ref.payload_id);
        } else {
            BSON_APPEND_UTF8(&f, "secret_id", ref.meta->secret_id);
            BSON_APPEND_INT64(&f, "version", ref.meta->current_version);
        }
        if (!store_find_one(&x, MDB_COLL_PAYLOADS, &f, &pdoc, &found, err))
            goto out;
        have_pdoc = found;
        if (!found) {
            cx_error_set(err, CX_ERR_INTEGRITY, "current payload is missing");
            goto out;
        }
        if (!store_payload_decode(&pdoc, &p, err))
            goto out;
        plain = store_resolve_open(&x, &b, &p, err);
        if (!plain)
            goto out;
        if (by_id)
            store_payload_cache_put(x.st->payloads, &p, mdb_now_ms());
    }
    char ver[12];
    snprintf(ver, sizeof(ver), "%u", b.version);
    cx_kv_t attrs[] = {{"version", ver}, {"kind", b.kind}};
    /* The use is on record before the material leaves; no record, no material. */
    if (!store_audit(&x, r->caller, "secret.retrieved",
                     CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK, ref.meta->secret_id,
                     ref.meta->owner, attrs, 2, err)) {
        err->code = CX_ERR_UNAVAILABLE;
        goto out;
    }
    Credex__V1__StoreResolveResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    credex__v1__store_resolve_response__init(resp);
    resp->secret_id = ref.meta->secret_id;
    resp->version = ref.meta->current_version;
    resp->kind = ref.meta->kind;
    resp->owner = ref.meta->owner;
    resp->provider = ref.meta->provider;
    resp->connector_id = ref.meta->connector_id;
    /* The call arena is wiped when the call ends (rpc_arena_free). */
    resp->value.len = cx_secret_len(plain);
    resp->value.data = rpc_arena_alloc(x.arena, resp->value.len);
    memcpy(resp->value.data, cx_secret_bytes(plain), resp->value.len);
    *reply = &resp->base;
    ok = true;
out:
    if (!ok && x.c && ref.meta && err->code != CX_ERR_INVALID_ARGUMENT) {
        if (err->code == CX_ERR_INTEGRITY)
            cx_log_error(rpc_call_correlation_id(call), "store.integrity_error",
                         CX_LOG_STR("secret_id", ref.meta->secret_id),
                         CX_LOG_INT("version", ref.meta->current_version));
        store_audit_failure(&x, r->caller, "secret.retrieved", ref.meta->secret_id, ref.meta->owner,
                            err);
    }
    cx_secret_free(plain);
    cx_secret_free(cached);
    if (have_pdoc)
        bson_destroy(&pdoc);
    bson_destroy(&f);
    store_end(&x);
    return ok;
}

/* ---- lists ----------------------------------------------------------------------------- */

/* {$or: [{key: {$lt: ms}}, {key: ms, idkey: {$lt: id}}]} for "newer first" paging. */
static void store_append_after(bson_t *and_arr, unsigned idx, const char *key, const char *idkey,
                               int64_t ms, const char *id, bool is_date)
{
    char k[16];
    const char *kk;
    bson_t d, or, a, b, lt1, lt2;
    bson_uint32_to_string(idx, &kk, k, sizeof(k));
    BSON_APPEND_DOCUMENT_BEGIN(and_arr, kk, &d);
    BSON_APPEND_ARRAY_BEGIN(&d, "$or", & or);
    BSON_APPEND_DOCUMENT_BEGIN(& or, "0", &a);
    BSON_APPEND_DOCUMENT_BEGIN(&a, key, &lt1);
    if (is_date)
        BSON_APPEND_DATE_TIME(&lt1, "$lt", ms);
    else
        BSON_APPEND_INT64(&lt1, "$lt", ms);
    bson_append_document_end(&a, &lt1);
    bson_append_document_end(& or, &a);
    BSON_APPEND_DOCUMENT_BEGIN(& or, "1", &b);
    if (is_date)
        BSON_APPEND_DATE_TIME(&b, key, ms);
    else
        BSON_APPEND_INT64(&b, key, ms);
    BSON_APPEND_DOCUMENT_BEGIN(&b, idkey, &lt2);
    BSON_APPEND_UTF8(&lt2, "$lt", id);
    bson_append_document_end(&b, &lt2);
    bson_append_document_end(& or, &b);
    bson_append_array_end(&d, & or);
    bson_append_document_end(and_arr, &d);
}

/* A row decoder: the reply message for one document (in the call arena), or NULL with err
 * set. ctx is the caller's, passed through. */
typedef void *(*store_row_fn)(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err);

/* One page of a list: the decoded rows and the page response (both in the call arena). */
typedef struct store_page {
    void **items;
    size_t n;
    Credex__V1__PageResponse *page;
} store_page_t;

/* Run a paged query: filter, sort {sortkey: -1, idkey: -1}, limit page+1 to learn whether
 * there is a next page; the next page token comes from the last returned row. */
static bool store_page_query(store_ctx_t *x, const char *collname, const bson_t *filter,
                             const char *sortkey, const char *idkey, bool is_date,
                             const Credex__V1__PageRequest *req, store_row_fn row, const void *ctx,
                             store_page_t *out, cx_error_t *err)
{
    unsigned page = store_page_size(req);
    out->items = rpc_arena_alloc(x->arena, page * sizeof(void *));
    out->n = 0;
    out->page = rpc_arena_alloc(x->arena, sizeof(*out->page));
    credex__v1__page_response__init(out->page);
    char **next_token = &out->page->next_page_token;
    bson_t opts = BSON_INITIALIZER, sort;
    bson_error_t berr;
    const bson_t *doc;
    unsigned n = 0;
    int64_t last_ms = 0;
    char last_id[STORE_ID_BUF] = "", tok[64];
    bool ok = true;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, sortkey, -1);
    BSON_APPEND_INT32(&sort, idkey, -1);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", (int64_t)page + 1);
    mongoc_collection_t *coll = mdb_collection(x->st->db, x->c, collname);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
    *next_token = rpc_arena_strndup(x->arena, "", 0);
    while (ok && mongoc_cursor_next(cur, &doc)) {
        if (n == page) {
            store_cursor_encode(last_ms, last_id, tok, sizeof(tok));
            *next_token = rpc_arena_strndup(x->arena, tok, strlen(tok));
            break;
        }
        void *item = row(x, doc, ctx, err);
        if (!(ok = item != NULL))
            break;
        out->items[out->n++] = item;
        bson_iter_t it;
        last_ms = is_date ? store_date(doc, sortkey) : store_int(doc, sortkey);
        if (bson_iter_init_find(&it, doc, idkey) && BSON_ITER_HOLDS_UTF8(&it))
            snprintf(last_id, sizeof(last_id), "%s", bson_iter_utf8(&it, NULL));
        n++;
    }
    if (ok && mongoc_cursor_error(cur, &berr))
        ok = store_db_error(x, &berr, NULL, "database read", err);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    return ok;
}

static void *store_meta_row(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err)
{
    (void)ctx;
    store_ref_t ref;
    return store_ref_decode(x->arena, doc, &ref, err) ? ref.meta : NULL;
}

static bool store_page_token(const Credex__V1__PageRequest *p, int64_t *ms, char id[STORE_ID_BUF],
                             bool *has, cx_error_t *err)
{
    *has = p && p->page_token && p->page_token[0];
    if (*has && !store_cursor_decode(p->page_token, ms, id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "page_token is invalid");
    return true;
}

static void store_append_in(bson_t *parent, const char *key, const char *const *vals, size_t n)
{
    bson_t d, arr;
    BSON_APPEND_DOCUMENT_BEGIN(parent, key, &d);
    BSON_APPEND_ARRAY_BEGIN(&d, "$in", &arr);
    for (size_t i = 0; i < n; i++) {
        char k[16];
        const char *kk;
        bson_uint32_to_string((uint32_t)i, &kk, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kk, vals[i]);
    }
    bson_append_array_end(&d, &arr);
    bson_append_document_end(parent, &d);
}

/* {owner_type, owner_id} of one owner, as the metadata documents store it. */
static void store_append_owner(bson_t *d, const Credex__V1__Owner *o)
{
    BSON_APPEND_UTF8(d, "owner_type", store_owner_type_name(o->owner_type));
    BSON_APPEND_UTF8(d, "owner_id", o->owner_id);
}

/* One {owner_type, owner_id} document per owner, appended to the array arr from index *idx. */
static void store_append_owners(bson_t *arr, unsigned *idx, Credex__V1__Owner *const *owners,
                                size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bson_t o;
        char k[16];
        const char *kk;
        bson_uint32_to_string((*idx)++, &kk, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(arr, kk, &o);
        store_append_owner(&o, owners[i]);
        bson_append_document_end(arr, &o);
    }
}

static bool store_list(rpc_call_t *call, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__StoreListSecretsRequest *r =
        (const Credex__V1__StoreListSecretsRequest *)request;
    static const char *const gateway_kinds[] = {"api_key", "token", "password", "generic"};
    static const char *const live[] = {"active", "revoked"};
    store_ctx_t x;
    bson_t filter = BSON_INITIALIZER, and_arr, or_doc, or_arr;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    unsigned idx = 0;
    if (!store_begin(&x, call, err) || !store_validate_caller(r->caller, err))
        goto out;
    if (r->n_owners > 64 || r->n_secret_ids > 1000) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "at most 64 owners and 1000 secret_ids");
        goto out;
    }
    for (size_t i = 0; i < r->n_owners; i++)
        if (!store_validate_owner(r->owners[i], err))
            goto out;
    for (size_t i = 0; i < r->n_secret_ids; i++)
        if (!store_validate_secret_id(r->secret_ids[i], err))
            goto out;
    if (r->n_exclude_owners > 1024) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "at most 1024 exclude_owners");
        goto out;
    }
    for (size_t i = 0; i < r->n_exclude_owners; i++)
        if (!store_validate_owner(r->exclude_owners[i], err))
            goto out;
    if (r->require_owner && r->require_owner->owner_type &&
        !store_validate_owner(r->require_owner, err))
        goto out;
    if ((r->kind && !store_kind_name(r->kind)) || (r->status && !store_status_name(r->status)) ||
        strlen(r->provider) > 64 || strlen(r->connector_id) > 64) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "invalid filter");
        goto out;
    }
    if (!store_page_token(r->page, &cms, cid, &has_tok, err))
        goto out;
    BSON_APPEND_ARRAY_BEGIN(&filter, "$and", &and_arr);
    if (r->n_owners || r->n_secret_ids) {
        char k[16];
        const char *kk;
        unsigned oi = 0;
        bson_uint32_to_string(idx++, &kk, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&and_arr, kk, &or_doc);
        BSON_APPEND_ARRAY_BEGIN(&or_doc, "$or", &or_arr);
        store_append_owners(&or_arr, &oi, r->owners, r->n_owners);
        if (r->n_secret_ids) {
            bson_t o;
            char k2[16];
            const char *kk2;
            bson_uint32_to_string(oi++, &kk2, k2, sizeof(k2));
            BSON_APPEND_DOCUMENT_BEGIN(&or_arr, kk2, &o);
            store_append_in(&o, "secret_id", (const char *const *)r->secret_ids, r->n_secret_ids);
            bson_append_document_end(&or_arr, &o);
        }
        bson_append_array_end(&or_doc, &or_arr);
        bson_append_document_end(&and_arr, &or_doc);
    }
    if (r->require_owner && r->require_owner->owner_type) {
        bson_t d;
        char k[16];
        const char *kk;
        bson_uint32_to_string(idx++, &kk, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&and_arr, kk, &d);
        store_append_owner(&d, r->require_owner);
        bson_append_document_end(&and_arr, &d);
    }
    if (r->n_exclude_owners) {
        bson_t d, nor;
        char k[16];
        const char *kk;
        bson_uint32_to_string(idx++, &kk, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&and_arr, kk, &d);
        unsigned ni = 0;
        BSON_APPEND_ARRAY_BEGIN(&d, "$nor", &nor);
        store_append_owners(&nor, &ni, r->exclude_owners, r->n_exclude_owners);
        bson_append_array_end(&d, &nor);
        bson_append_document_end(&and_arr, &d);
    }
    {
        bson_t d;
        char k[16];
        const char *kk;
        bson_uint32_to_string(idx++, &kk, k, sizeof(k));
        BSON_APPEND_DOCUMENT_BEGIN(&and_arr, kk, &d);
        /* The gateway only ever sees its own kinds (store.proto's per-peer policy). */
        if (r->kind)
            BSON_APPEND_UTF8(&d, "kind", store_kind_name(r->kind));
        else
            store_append_in(&d, "kind", gateway_kinds, 4);
        if (r->status)
            BSON_APPEND_UTF8(&d, "status", store_status_name(r->status));
        else
            store_append_in(&d, "status", live, 2);
        if (r->provider[0])
            BSON_APPEND_UTF8(&d, "provider", r->provider);
        if (r->connector_id[0])
            BSON_APPEND_UTF8(&d, "connector_id", r->connector_id);
        bson_append_document_end(&and_arr, &d);
    }
    if (r->kind && !store_peer_may_use(x.peer, r->kind, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER) &&
        !store_peer_may_use(x.peer, r->kind, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM)) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "this peer may not list this kind");
        goto out;
    }
    if (has_tok)
        store_append_after(&and_arr, idx++, "updated_at", "secret_id", cms, cid, true);
    bson_append_array_end(&filter, &and_arr);
    store_page_t pg;
    if (!store_connect(&x, err) ||
        !store_page_query(&x, MDB_COLL_SECRET_REFS, &filter, "updated_at", "secret_id", true,
                          r->page, store_meta_row, NULL, &pg, err))
        goto out;
    Credex__V1__StoreListSecretsResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    credex__v1__store_list_secrets_response__init(resp);
    resp->secrets = (Credex__V1__SecretMetadata **)pg.items;
    resp->n_secrets = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    store_end(&x);
    return ok;
}

/* ctx: the secret's current version (uint32_t). */
static void *store_ver_row(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err)
{
    uint32_t current = *(const uint32_t *)ctx;
    store_payload_t p;
    if (!store_payload_decode(doc, &p, err))
        return NULL;
    Credex__V1__VersionInfo *v = rpc_arena_alloc(x->arena, sizeof(*v));
    credex__v1__version_info__init(v);
    v->secret_id = rpc_arena_strndup(x->arena, p.secret_id, strlen(p.secret_id));
    v->version = p.version;
    v->payload_id = rpc_arena_strndup(x->arena, p.payload_id, strlen(p.payload_id));
    v->state = p.version == current ? CREDEX__V1__VERSION_STATE__VERSION_STATE_CURRENT
                                    : CREDEX__V1__VERSION_STATE__VERSION_STATE_PREVIOUS;
    v->algorithm = STORE_ALG;
    v->key_provider = p.key_provider;
    v->key_id = rpc_arena_strndup(x->arena, p.key_id, strlen(p.key_id));
    v->key_version = rpc_arena_strndup(x->arena, p.key_version, strlen(p.key_version));
    const char *cb = p.created_by ? p.created_by : "";
    v->created_by = rpc_arena_strndup(x->arena, cb, strlen(cb));
    v->created_at_ms = p.created_at_ms;
    return v;
}

static bool store_list_versions(rpc_call_t *call, const ProtobufCMessage *request,
                                ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreListVersionsRequest *r =
        (const Credex__V1__StoreListVersionsRequest *)request;
    store_ctx_t x;
    store_ref_t ref;
    bson_t filter = BSON_INITIALIZER, lt;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    if (!store_begin(&x, call, err) || !store_validate_caller(r->caller, err) ||
        !store_validate_secret_id(r->secret_id, err) ||
        !store_page_token(r->page, &cms, cid, &has_tok, err) || !store_connect(&x, err) ||
        !store_load_ref(&x, r->secret_id, &ref, err) || !store_check_peer(&x, &ref, err))
        goto out;
    BSON_APPEND_UTF8(&filter, "secret_id", r->secret_id);
    if (has_tok) {
        /* Versions are unique per secret: the version alone is the cursor. */
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "version", &lt);
        BSON_APPEND_INT64(&lt, "$lt", cms);
        bson_append_document_end(&filter, &lt);
    }
    store_page_t pg;
    uint32_t current = ref.meta->current_version;
    if (!store_page_query(&x, MDB_COLL_PAYLOADS, &filter, "version", "payload_id", false, r->page,
                          store_ver_row, &current, &pg, err))
        goto out;
    Credex__V1__StoreListVersionsResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    credex__v1__store_list_versions_response__init(resp);
    resp->versions = (Credex__V1__VersionInfo **)pg.items;
    resp->n_versions = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    store_end(&x);
    return ok;
}

/* ---- audit RPCs ------------------------------------------------------------------------ */

static bool store_append_audit(rpc_call_t *call, const ProtobufCMessage *request,
                               ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreAppendAuditEventRequest *r =
        (const Credex__V1__StoreAppendAuditEventRequest *)request;
    store_ctx_t x;
    bool ok = false;
    if (!store_begin(&x, call, err) || !store_validate_audit_event(r->event, err) ||
        !store_connect(&x, err))
        goto out;
    /* Copy: the request is const and store assigns id and time. The correlation id defaults
     * to this call's. */
    Credex__V1__AuditEvent e = *r->event;
    if (!e.correlation_id[0])
        e.correlation_id = (char *)rpc_call_correlation_id(call);
    if (!e.peer[0])
        e.peer = (char *)x.peer;
    if (!store_audit_insert(x.st, x.c, &e, x.arena, err)) {
        err->code = CX_ERR_UNAVAILABLE;
        goto out;
    }
    Credex__V1__StoreAppendAuditEventResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    credex__v1__store_append_audit_event_response__init(resp);
    resp->event_id = e.event_id;
    resp->created_at_ms = e.created_at_ms;
    *reply = &resp->base;
    ok = true;
out:
    store_end(&x);
    return ok;
}

static void *store_evt_row(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err)
{
    (void)ctx;
    Credex__V1__AuditEvent *e = rpc_arena_alloc(x->arena, sizeof(*e));
    if (!store_audit_decode(doc, x->arena, e)) {
        cx_error_set(err, CX_ERR_INTERNAL, "stored audit event is malformed");
        return NULL;
    }
    return e;
}

static bool store_query_audit(rpc_call_t *call, const ProtobufCMessage *request,
                              ProtobufCMessage **reply, cx_error_t *err)
{
    const Credex__V1__StoreQueryAuditEventsRequest *r =
        (const Credex__V1__StoreQueryAuditEventsRequest *)request;
    static const char *const outcomes[] = {"", "success", "denied", "failed"};
    store_ctx_t x;
    bson_t filter = BSON_INITIALIZER, and_arr, d, range;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    const Credex__V1__AuditFilter *f = r->filter;
    if (!store_begin(&x, call, err) || !store_page_token(r->page, &cms, cid, &has_tok, err))
        goto out;
    if (f && (strlen(f->event_type) > 64 || strlen(f->resource_type) > 64 ||
              strlen(f->resource_id) > 128 || strlen(f->subject_user_id) > 128 ||
              strlen(f->correlation_id) > 64 || (unsigned)f->outcome > 3 || f->since_ms < 0 ||
              f->until_ms < 0)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "invalid audit filter");
        goto out;
    }
    BSON_APPEND_ARRAY_BEGIN(&filter, "$and", &and_arr);
    BSON_APPEND_DOCUMENT_BEGIN(&and_arr, "0", &d);
    if (f) {
        if (f->event_type[0])
            BSON_APPEND_UTF8(&d, "event_type", f->event_type);
        if (f->outcome)
            BSON_APPEND_UTF8(&d, "outcome", outcomes[f->outcome]);
        if (f->resource_type[0])
            BSON_APPEND_UTF8(&d, "resource_type", f->resource_type);
        if (f->resource_id[0])
            BSON_APPEND_UTF8(&d, "resource_id", f->resource_id);
        if (f->subject_user_id[0])
            BSON_APPEND_UTF8(&d, "subject_user_id", f->subject_user_id);
        if (f->correlation_id[0])
            BSON_APPEND_UTF8(&d, "correlation_id", f->correlation_id);
        if (f->since_ms || f->until_ms) {
            BSON_APPEND_DOCUMENT_BEGIN(&d, "created_at", &range);
            if (f->since_ms)
                BSON_APPEND_DATE_TIME(&range, "$gte", f->since_ms);
            if (f->until_ms)
                BSON_APPEND_DATE_TIME(&range, "$lt", f->until_ms);
            bson_append_document_end(&d, &range);
        }
    }
    bson_append_document_end(&and_arr, &d);
    if (has_tok)
        store_append_after(&and_arr, 1, "created_at", "event_id", cms, cid, true);
    bson_append_array_end(&filter, &and_arr);
    store_page_t pg;
    if (!store_connect(&x, err) ||
        !store_page_query(&x, MDB_COLL_AUDIT_EVENTS, &filter, "created_at", "event_id", true,
                          r->page, store_evt_row, NULL, &pg, err))
        goto out;
    Credex__V1__StoreQueryAuditEventsResponse *resp = rpc_arena_alloc(x.arena, sizeof(*resp));
    credex__v1__store_query_audit_events_response__init(resp);
    resp->events = (Credex__V1__AuditEvent **)pg.items;
    resp->n_events = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    store_end(&x);
    return ok;
}

/* ---- method table ---------------------------------------------------------------------- */

static const char *const store_gateway_only[] = {"gateway", NULL};

const rpc_method_impl_t store_method_impls[] = {
    {.method = "CreateSecret", .kind = RPC_UNARY, .unary = store_create},
    {.method = "ListSecrets",
     .kind = RPC_UNARY,
     .unary = store_list,
     .allowed_peers = store_gateway_only},
    {.method = "GetSecret", .kind = RPC_UNARY, .unary = store_get},
    {.method = "UpdateSecret",
     .kind = RPC_UNARY,
     .unary = store_update_secret,
     .allowed_peers = store_gateway_only},
    {.method = "RotateSecret", .kind = RPC_UNARY, .unary = store_rotate},
    {.method = "ListVersions",
     .kind = RPC_UNARY,
     .unary = store_list_versions,
     .allowed_peers = store_gateway_only},
    {.method = "RevokeSecret", .kind = RPC_UNARY, .unary = store_revoke},
    {.method = "DeleteSecret", .kind = RPC_UNARY, .unary = store_delete},
    {.method = "Resolve", .kind = RPC_UNARY, .unary = store_resolve},
    {.method = "AppendAuditEvent", .kind = RPC_UNARY, .unary = store_append_audit},
    {.method = "QueryAuditEvents",
     .kind = RPC_UNARY,
     .unary = store_query_audit,
     .allowed_peers = store_gateway_only},
};
const size_t store_method_nimpls = sizeof(store_method_impls) / sizeof(store_method_impls[0]);
