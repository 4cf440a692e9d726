/*
 * store lists: ListSecrets, ListVersions and QueryAuditEvents, newest first, and the keyset
 * paging they share (store_page_query over mdb_find_page). A page token is "<sort key>.<id>"
 * of the last row returned (store_cursor_encode); the next page asks for rows strictly after
 * it. Every row is decoded as strictly as a single read: one tampered row fails the whole list
 * with integrity_error instead of being skipped or shown.
 */
#include <stdio.h>
#include <string.h>

#include "services/store/store_internal.h"

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

/* The rows of one page as mdb_find_page hands them over, and the sort key and id of the last
 * one (the next page's token). */
typedef struct store_pager {
    store_ctx_t *x;
    store_row_fn row;
    const void *ctx;
    const char *sortkey, *idkey;
    bool is_date;
    store_page_t *out;
    int64_t last_ms;
    char last_id[STORE_ID_BUF];
} store_pager_t;

static bool store_pager_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    store_pager_t *pg = ctx;
    bson_iter_t it;
    void *item = pg->row(pg->x, doc, pg->ctx, err);
    if (!item)
        return false;
    pg->out->items[pg->out->n++] = item;
    pg->last_ms = pg->is_date ? store_date(doc, pg->sortkey) : store_int(doc, pg->sortkey);
    if (bson_iter_init_find(&it, doc, pg->idkey) && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(pg->last_id, sizeof(pg->last_id), "%s", bson_iter_utf8(&it, NULL));
    return true;
}

/* One page of filter, sorted {sortkey: -1, idkey: -1}; the next page token comes from the last
 * row returned, when there is a next page. */
static bool store_page_query(store_ctx_t *x, const char *collname, const bson_t *filter,
                             const char *sortkey, const char *idkey, bool is_date,
                             const Credex__V1__PageRequest *req, store_row_fn row, const void *ctx,
                             store_page_t *out, cx_error_t *err)
{
    unsigned limit = store_page_size(req);
    bool more = false;
    char tok[64];
    store_pager_t pg = {.x = x,
                        .row = row,
                        .ctx = ctx,
                        .sortkey = sortkey,
                        .idkey = idkey,
                        .is_date = is_date,
                        .out = out};
    out->items = rpc_arena_alloc(x->arena, limit * sizeof(void *));
    out->n = 0;
    out->page = rpc_arena_alloc(x->arena, sizeof(*out->page));
    credex__v1__page_response__init(out->page);
    if (!store_connect(x, err) || !mdb_find_page(x->st->db, x->c, collname, filter, sortkey, idkey,
                                                 limit, store_pager_row, &pg, &more, err))
        return false;
    tok[0] = '\0';
    if (more)
        store_cursor_encode(pg.last_ms, pg.last_id, tok, sizeof(tok));
    out->page->next_page_token = rpc_arena_strndup(x->arena, tok, strlen(tok));
    return true;
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

bool store_list_secrets(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err)
{
    const Credex__V1__StoreListSecretsRequest *r =
        (const Credex__V1__StoreListSecretsRequest *)request;
    static const char *const gateway_kinds[] = {"api_key", "token", "password", "generic"};
    static const char *const live[] = {"active", "revoked"};
    bson_t filter = BSON_INITIALIZER, and_arr, or_doc, or_arr;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    unsigned idx = 0;
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
    if (r->kind && !store_peer_may_use(x->peer, r->kind, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER) &&
        !store_peer_may_use(x->peer, r->kind, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM)) {
        cx_error_set(err, CX_ERR_PERMISSION_DENIED, "this peer may not list this kind");
        goto out;
    }
    if (has_tok)
        store_append_after(&and_arr, idx++, "updated_at", "secret_id", cms, cid, true);
    bson_append_array_end(&filter, &and_arr);
    store_page_t pg;
    if (!store_page_query(x, MDB_COLL_SECRET_REFS, &filter, "updated_at", "secret_id", true,
                          r->page, store_meta_row, NULL, &pg, err))
        goto out;
    Credex__V1__StoreListSecretsResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_list_secrets_response__init(resp);
    resp->secrets = (Credex__V1__SecretMetadata **)pg.items;
    resp->n_secrets = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    return ok;
}

/* ctx: the secret's current version (uint32_t). */
static void *store_ver_row(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err)
{
    uint32_t current = *(const uint32_t *)ctx;
    store_payload_t p;
    if (!store_payload_decode(doc, &p, err))
        return NULL;
    return store_payload_version_info(x->arena, &p, p.version == current);
}

bool store_list_versions(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err)
{
    const Credex__V1__StoreListVersionsRequest *r =
        (const Credex__V1__StoreListVersionsRequest *)request;
    store_ref_t ref;
    bson_t filter = BSON_INITIALIZER, lt;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    if (!store_page_token(r->page, &cms, cid, &has_tok, err) || !store_load_secret(x, &ref, err))
        goto out;
    BSON_APPEND_UTF8(&filter, "secret_id", x->secret_id);
    if (has_tok) {
        /* Versions are unique per secret: the version alone is the cursor. */
        BSON_APPEND_DOCUMENT_BEGIN(&filter, "version", &lt);
        BSON_APPEND_INT64(&lt, "$lt", cms);
        bson_append_document_end(&filter, &lt);
    }
    store_page_t pg;
    uint32_t current = ref.meta->current_version;
    if (!store_page_query(x, MDB_COLL_PAYLOADS, &filter, "version", "payload_id", false, r->page,
                          store_ver_row, &current, &pg, err))
        goto out;
    Credex__V1__StoreListVersionsResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_list_versions_response__init(resp);
    resp->versions = (Credex__V1__VersionInfo **)pg.items;
    resp->n_versions = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    return ok;
}

static void *store_evt_row(store_ctx_t *x, const bson_t *doc, const void *ctx, cx_error_t *err)
{
    (void)ctx;
    Credex__V1__AuditEvent *e = rpc_arena_alloc(x->arena, sizeof(*e));
    if (!store_audit_decode(doc, x->arena, e)) {
        /* Not written by store: altered in the database, as a tampered secret document. */
        cx_error_set(err, CX_ERR_INTEGRITY, "stored audit event is malformed");
        return NULL;
    }
    return e;
}

bool store_query_audit(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err)
{
    const Credex__V1__StoreQueryAuditEventsRequest *r =
        (const Credex__V1__StoreQueryAuditEventsRequest *)request;
    static const char *const outcomes[] = {"", "success", "denied", "failed"};
    bson_t filter = BSON_INITIALIZER, and_arr, d, range;
    int64_t cms = 0;
    char cid[STORE_ID_BUF];
    bool has_tok = false, ok = false;
    const Credex__V1__AuditFilter *f = r->filter;
    if (!store_page_token(r->page, &cms, cid, &has_tok, err))
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
    if (!store_page_query(x, MDB_COLL_AUDIT_EVENTS, &filter, "created_at", "event_id", true,
                          r->page, store_evt_row, NULL, &pg, err))
        goto out;
    Credex__V1__StoreQueryAuditEventsResponse *resp = rpc_arena_alloc(x->arena, sizeof(*resp));
    credex__v1__store_query_audit_events_response__init(resp);
    resp->events = (Credex__V1__AuditEvent **)pg.items;
    resp->n_events = pg.n;
    resp->page = pg.page;
    *reply = &resp->base;
    ok = true;
out:
    bson_destroy(&filter);
    return ok;
}
