/*
 * store lifecycle: CreateSecret, GetSecret, UpdateSecret, RotateSecret, RevokeSecret,
 * DeleteSecret.
 *
 * Concurrency is settled by unique indexes, not by locks: secret_id (idempotent create) and
 * (secret_id, version) (rotation: the payload of v+1 is inserted first, then the metadata is
 * moved from v to v+1 with a conditional update; the loser of either step cleans up).
 *
 * A ref's _id is its secret_id and a payload's _id its payload_id; every query and conditional
 * update of one ref selects it by _id (plus its conditions), which any MongoDB answers from the
 * primary key (and FerretDB's SQLite backend with credex's patch, tools/go/ferretdb/patches).
 *
 * Every write of a secret's metadata is bracketed by store_ref_forget, so that Resolve, which
 * may answer from the metadata cache (docs/DOCUMENT_CACHE.md), sees this replica's writes at
 * once; other replicas see them within the cache's bound.
 *
 * Each change is audited before it is answered (no record, no change); failures are audited
 * by the dispatch (dispatch.c), never here. While the database is down, the clean-ups below
 * fail at once (mdb) and what they would have removed is recovered later (store_create_replay,
 * store_reclaim_orphan).
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "services/store/store_internal.h"

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
 * payload document, created at created_at_ms. CONFLICT when that version already exists.
 * written (optional): on success, the VersionInfo of the document as inserted (the wrapping
 * key's provider, id and version are known only here), in the call arena. */
static bool store_write_payload(store_ctx_t *x, const store_bind_t *b,
                                const ProtobufCBinaryData *value, const char *created_by,
                                int64_t created_at_ms, Credex__V1__VersionInfo **written,
                                cx_error_t *err)
{
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    cx_secret_t *dek = NULL;
    store_wrapped_t w;
    unsigned char nonce[CX_GCM_NONCE_LEN], tag[CX_GCM_TAG_LEN];
    unsigned char *ct = rpc_arena_alloc(x->arena, value->len);
    bson_t doc;
    bool ok = false;

    store_bind_context(b, ver, pairs);
    if (!x->st->keys.generate(x->st->keys.ctx, x->call, pairs, STORE_CONTEXT_PAIRS, &dek, &w, err))
        goto out;
    if (!store_envelope_seal(dek, b, value->data, value->len, nonce, ct, tag, err))
        goto out;
    store_payload_t p = {.payload_id = b->payload_id,
                         .secret_id = b->secret_id,
                         .version = b->version,
                         .key_provider = w.provider,
                         .key_id = w.key_id,
                         .key_version = w.key_version,
                         .wrapped = w.ct,
                         .wrapped_len = (uint32_t)w.ct_len,
                         .nonce = nonce,
                         .ct = ct,
                         .ct_len = (uint32_t)value->len,
                         .tag = tag,
                         .created_by = created_by,
                         .created_at_ms = created_at_ms};
    store_payload_encode(&p, &doc);
    ok = mdb_insert_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &doc, err);
    bson_destroy(&doc);
    if (ok && written)
        *written = store_payload_version_info(x->arena, &p, true);
out:
    cx_secret_free(dek);
    return ok;
}

/* Called before and after every write of a secret's metadata document: the metadata cache
 * drops the secret and refuses any fill that read it before the write. After, whatever the
 * write answered: one that failed or timed out may still have been applied. */
static void store_ref_forget(store_ctx_t *x, const char *secret_id)
{
    mdb_cache_evict(x->st->meta, secret_id);
}

/* Best effort: the caller already fails or cleans up. */
static void store_delete_payload_id(store_ctx_t *x, const char *payload_id)
{
    bson_t f = BSON_INITIALIZER;
    cx_error_t ignored;
    BSON_APPEND_UTF8(&f, "_id", payload_id);
    mdb_delete_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &ignored);
    bson_destroy(&f);
}

/* Conditional update of one secret's metadata that also answers the document as it is after
 * the update, decoded, so that a lifecycle reply needs no second read. *matched false: the
 * selector matched nothing and *out is untouched. */
static bool store_update_ref(store_ctx_t *x, const bson_t *sel, const bson_t *upd, store_ref_t *out,
                             bool *matched, cx_error_t *err)
{
    bson_t after;
    *matched = false;
    store_ref_forget(x, x->secret_id);
    bool ok = mdb_update_one_returning(x->st->db, x->c, MDB_COLL_SECRET_REFS, sel, upd, &after,
                                       matched, err);
    store_ref_forget(x, x->secret_id);
    if (!ok)
        return false;
    if (!*matched)
        return true;
    ok = store_ref_decode(x->arena, &after, out, err);
    bson_destroy(&after);
    *matched = ok;
    return ok;
}

/* store_update_ref, and when the selector matched nothing (someone else revoked or deleted the
 * secret meanwhile), the metadata as it is now: either way *ref is the secret after the call. */
static bool store_update_ref_current(store_ctx_t *x, const bson_t *sel, const bson_t *upd,
                                     store_ref_t *ref, cx_error_t *err)
{
    bool matched = false;
    store_ref_t after;
    if (!store_update_ref(x, sel, upd, &after, &matched, err))
        return false;
    if (!matched)
        return store_load_ref(x, x->secret_id, ref, err);
    *ref = after;
    return true;
}

static bool store_payload_exists(store_ctx_t *x, const char *secret_id, uint32_t version,
                                 bool *exists, cx_error_t *err)
{
    bson_t f = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&f, "secret_id", secret_id);
    BSON_APPEND_INT64(&f, "version", version);
    bool ok = mdb_find_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &doc, exists, err);
    if (ok && *exists)
        bson_destroy(&doc);
    bson_destroy(&f);
    return ok;
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
            if (!store_write_payload(x, &b, &r->value, ref->meta->created_by, mdb_now_ms(), NULL,
                                     err) &&
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
    if (store_write_payload(x, b, value, actor, mdb_now_ms(), NULL, err))
        return true;
    if (err->code != CX_ERR_CONFLICT)
        return false;
    bson_t f = BSON_INITIALIZER, doc;
    bool found = false;
    cx_error_t ferr;
    BSON_APPEND_UTF8(&f, "_id", b->payload_id);
    if (mdb_find_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &doc, &found, &ferr) && found) {
        bson_destroy(&doc);
        cx_error_clear(err);
    }
    bson_destroy(&f);
    return found;
}

bool store_create(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    const Credex__V1__StoreCreateSecretRequest *r =
        (const Credex__V1__StoreCreateSecretRequest *)request;
    char sid[STORE_ID_BUF], pid[STORE_ID_BUF], fp[65];
    bson_t doc;
    store_ref_t ref;
    bool ok = false, created = false, have_doc = false;

    if (!store_validate_create(r, x->peer, err))
        return false;
    const char *otype = store_owner_type_name(r->owner->owner_type);
    store_secret_id_derive(otype, r->owner->owner_id, r->idempotency_key, sid);
    x->secret_id = rpc_arena_strndup(x->arena, sid, strlen(sid));
    x->owner = r->owner; /* validated: the owner this create is for */
    store_fingerprint(r, fp);
    cx_error_t lerr;
    if (store_load_ref(x, sid, &ref, &lerr)) {
        ok = store_create_replay(x, r, &ref, fp, err);
        goto out;
    }
    if (lerr.code != CX_ERR_NOT_FOUND) {
        cx_error_copy(err, &lerr);
        goto out;
    }
    if (!store_random_id("pay_", pid, err))
        goto out;
    const char *actor = store_actor(x);
    store_ref_new_t n = {.req = r,
                         .secret_id = sid,
                         .payload_id = pid,
                         .fingerprint = fp,
                         .actor = actor,
                         .now_ms = mdb_now_ms()};
    store_ref_encode(&n, &doc);
    have_doc = true;
    store_ref_forget(x, sid);
    bool inserted = mdb_insert_one(x->st->db, x->c, MDB_COLL_SECRET_REFS, &doc, err);
    store_ref_forget(x, sid);
    if (!inserted) {
        /* Lost a race with a concurrent replay of the same key: answer as a replay. */
        if (err->code == CX_ERR_CONFLICT && store_load_ref(x, sid, &ref, err))
            ok = store_create_replay(x, r, &ref, fp, err);
        goto out;
    }
    store_bind_t b = {.secret_id = sid,
                      .version = 1,
                      .owner_type = otype,
                      .owner_id = r->owner->owner_id,
                      .kind = store_kind_name(r->kind),
                      .payload_id = pid};
    cx_kv_t attrs[] = {{"version", "1"}, {"kind", b.kind}};
    if (!store_create_payload(x, &b, &r->value, actor, err) ||
        !store_audit(x, "secret.created", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK,
                     attrs, 2, err)) {
        /* Undo both writes: a secret nobody was told about, or one without an audit record,
         * must not exist. */
        bson_t f = BSON_INITIALIZER;
        cx_error_t ignored;
        store_delete_payload_id(x, pid);
        BSON_APPEND_UTF8(&f, "_id", sid);
        BSON_APPEND_UTF8(&f, "current_payload_id", pid);
        store_ref_forget(x, sid);
        mdb_delete_one(x->st->db, x->c, MDB_COLL_SECRET_REFS, &f, &ignored);
        store_ref_forget(x, sid);
        bson_destroy(&f);
        goto out;
    }
    if (!store_ref_decode(x->arena, &doc, &ref, err)) /* what was inserted: no second read */
        goto out;
    created = ok = true;
out:
    if (ok) {
        Credex__V1__StoreCreateSecretResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
        credex__v1__store_create_secret_response__init(resp);
        resp->secret = ref.meta;
        resp->created = created;
        *reply = &resp->base;
    }
    if (have_doc)
        bson_destroy(&doc);
    return ok;
}

/* ---- GetSecret / UpdateSecret ---------------------------------------------------------- */

bool store_get(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
               cx_error_t *err)
{
    (void)request; /* its caller and secret_id are the dispatch's */
    store_ref_t ref;
    if (!store_load_secret(x, &ref, err))
        return false;
    *reply = &ref.meta->base;
    return true;
}

/* {key: [vals...]} */
static void store_append_strings(bson_t *parent, const char *key, char *const *vals, size_t n)
{
    bson_t arr;
    BSON_APPEND_ARRAY_BEGIN(parent, key, &arr);
    for (size_t i = 0; i < n; i++) {
        char k[16];
        const char *kk;
        bson_uint32_to_string((uint32_t)i, &kk, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, kk, vals[i]);
    }
    bson_append_array_end(parent, &arr);
}

bool store_update(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    const Credex__V1__StoreUpdateSecretRequest *r =
        (const Credex__V1__StoreUpdateSecretRequest *)request;
    store_ref_t ref, after;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, ne;
    bool ok = false, matched = false;
    if (!store_validate_update(r, err) || !store_load_secret(x, &ref, err))
        goto out;
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    BSON_APPEND_UTF8(&sel, "_id", x->secret_id);
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
        else if (strcmp(f, "allowed_uses") == 0)
            store_append_strings(&set, "allowed_uses", r->allowed_uses, r->n_allowed_uses);
    }
    BSON_APPEND_UTF8(&set, "updated_by", store_actor(x));
    BSON_APPEND_DATE_TIME(&set, "updated_at", mdb_now_ms());
    bson_append_document_end(&upd, &set);
    if (!store_update_ref(x, &sel, &upd, &after, &matched, err))
        goto out;
    if (!matched) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    if (!store_audit(x, "secret.updated", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK,
                     NULL, 0, err))
        goto out;
    *reply = &after.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
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
    store_payload_t p;
    BSON_APPEND_UTF8(&f, "secret_id", b->secret_id);
    BSON_APPEND_INT64(&f, "version", b->version);
    if (!mdb_find_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &f, &doc, &found, &ignored) || !found)
        goto out;
    if (store_payload_decode(&doc, &p, &ignored) && p.created_at_ms > 0 &&
        mdb_now_ms() - p.created_at_ms > STORE_ORPHAN_AGE_MS) {
        /* Only while the metadata still points below this version (it is ours to check:
         * the caller loaded it as version b->version - 1). */
        store_ref_t ref;
        if (store_load_ref(x, b->secret_id, &ref, &ignored) &&
            ref.meta->current_version == b->version - 1) {
            BSON_APPEND_UTF8(&del, "payload_id", p.payload_id);
            BSON_APPEND_INT64(&del, "version", b->version);
            reclaimed = mdb_delete_one(x->st->db, x->c, MDB_COLL_PAYLOADS, &del, &ignored);
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

/* Put the metadata of a rotation that could not be audited back to the version before it, so
 * that the unaudited version is never served. */
static void store_rotate_undo(store_ctx_t *x, const char *pid, uint32_t cur, const char *cur_pid)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    cx_error_t ignored;
    BSON_APPEND_UTF8(&sel, "_id", x->secret_id);
    BSON_APPEND_UTF8(&sel, "current_payload_id", pid);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_INT64(&set, "current_version", cur);
    BSON_APPEND_UTF8(&set, "current_payload_id", cur_pid);
    bson_append_document_end(&upd, &set);
    store_ref_forget(x, x->secret_id);
    mdb_update_one(x->st->db, x->c, MDB_COLL_SECRET_REFS, &sel, &upd, NULL, &ignored);
    store_ref_forget(x, x->secret_id);
    bson_destroy(&sel);
    bson_destroy(&upd);
}

bool store_rotate(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    const Credex__V1__StoreRotateSecretRequest *r =
        (const Credex__V1__StoreRotateSecretRequest *)request;
    store_ref_t ref, moved;
    char pid[STORE_ID_BUF], ver[12];
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool ok = false, matched = false, wrote = false;

    if (r->expected_version == 0 && strcmp(x->peer, "gateway") != 0) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "expected_version is required");
        goto out;
    }
    if (!store_load_secret(x, &ref, err))
        goto out;
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
    const char *actor = store_actor(x);
    /* One instant for the rotation: the new version's created_at is the secret's rotated_at. */
    int64_t now = mdb_now_ms();
    Credex__V1__VersionInfo *vi = NULL;
    /* Step 1: the unique (secret_id, version) index lets exactly one rotation to v+1 in. */
    bool written = store_write_payload(x, &b, &r->value, actor, now, &vi, err);
    if (!written && err->code == CX_ERR_CONFLICT && store_reclaim_orphan(x, &b))
        written = store_write_payload(x, &b, &r->value, actor, now, &vi, err);
    if (!written) {
        if (err->code == CX_ERR_CONFLICT)
            cx_error_set(err, CX_ERR_CONFLICT, "concurrent rotation: version %u exists", b.version);
        goto out;
    }
    wrote = true;
    /* Step 2: move the metadata from v to v+1 only if nobody else did. */
    BSON_APPEND_UTF8(&sel, "_id", x->secret_id);
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
    if (!store_update_ref(x, &sel, &upd, &moved, &matched, err))
        goto out;
    if (!matched) {
        cx_error_set(err, CX_ERR_CONFLICT, "secret changed concurrently");
        goto out;
    }
    /* Hygiene only (Resolve follows the metadata, forgotten above, to the new payload id). */
    store_payload_cache_evict_secret(x->st->payloads, x->secret_id);
    snprintf(ver, sizeof(ver), "%u", b.version);
    cx_kv_t attrs[] = {{"version", ver}, {"kind", b.kind}};
    if (!store_audit(x, "secret.rotated", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK,
                     attrs, 2, err)) {
        store_rotate_undo(x, pid, cur, ref.payload_id);
        goto out;
    }
    wrote = false; /* committed */
    Credex__V1__StoreRotateSecretResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_rotate_secret_response__init(resp);
    resp->secret = moved.meta;
    resp->version = vi; /* what was inserted, as ListVersions reads it back */
    *reply = &resp->base;
    ok = true;
out:
    if (wrote)
        store_delete_payload_id(x, pid); /* the loser (or a failed step) cleans up */
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* ---- RevokeSecret / DeleteSecret ------------------------------------------------------- */

bool store_revoke(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    const Credex__V1__StoreRevokeSecretRequest *r =
        (const Credex__V1__StoreRevokeSecretRequest *)request;
    store_ref_t ref;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool ok = false;
    if (!store_load_secret(x, &ref, err))
        goto out;
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "secret is deleted");
        goto out;
    }
    if (ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE) {
        int64_t now = mdb_now_ms();
        BSON_APPEND_UTF8(&sel, "_id", x->secret_id);
        BSON_APPEND_UTF8(&sel, "status", "active");
        BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
        BSON_APPEND_UTF8(&set, "status", "revoked");
        BSON_APPEND_UTF8(&set, "updated_by", store_actor(x));
        BSON_APPEND_DATE_TIME(&set, "updated_at", now);
        BSON_APPEND_DATE_TIME(&set, "revoked_at", now);
        bson_append_document_end(&upd, &set);
        if (!store_update_ref_current(x, &sel, &upd, &ref, err))
            goto out;
        /* Hygiene only: Resolve refuses a revoked secret from its metadata (forgotten above). */
        store_payload_cache_evict_secret(x->st->payloads, x->secret_id);
        cx_kv_t attrs[] = {{"note", r->reason}};
        if (!store_audit(x, "secret.revoked", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS,
                         CX_OK, attrs, r->reason[0] ? 1 : 0, err))
            goto out;
    }
    *reply = &ref.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

bool store_delete(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err)
{
    (void)request; /* its caller and secret_id are the dispatch's */
    store_ref_t ref;
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, pf = BSON_INITIALIZER;
    bool ok = false;
    if (!store_load_secret(x, &ref, err))
        goto out;
    bool was_deleted = ref.meta->status == CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED;
    if (!was_deleted) {
        /* Tombstone first: from this write on, Resolve refuses the secret even if destroying
         * the payloads below is interrupted (a retry finishes it). */
        int64_t now = mdb_now_ms();
        BSON_APPEND_UTF8(&sel, "_id", x->secret_id);
        BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
        BSON_APPEND_UTF8(&set, "status", "deleted");
        BSON_APPEND_BOOL(&set, "value_set", false);
        BSON_APPEND_UTF8(&set, "updated_by", store_actor(x));
        BSON_APPEND_DATE_TIME(&set, "updated_at", now);
        BSON_APPEND_DATE_TIME(&set, "deleted_at", now);
        bson_append_document_end(&upd, &set);
        if (!store_update_ref_current(x, &sel, &upd, &ref, err))
            goto out;
    }
    /* Hygiene only: from the tombstone on, Resolve refuses the secret before any payload. */
    store_payload_cache_evict_secret(x->st->payloads, x->secret_id);
    BSON_APPEND_UTF8(&pf, "secret_id", x->secret_id);
    if (!mdb_delete_many(x->st->db, x->c, MDB_COLL_PAYLOADS, &pf, err))
        goto out;
    if (!was_deleted &&
        !store_audit(x, "secret.deleted", CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS, CX_OK,
                     NULL, 0, err))
        goto out;
    *reply = &ref.meta->base;
    ok = true;
out:
    bson_destroy(&sel);
    bson_destroy(&upd);
    bson_destroy(&pf);
    return ok;
}
