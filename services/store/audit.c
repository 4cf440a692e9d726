/* store audit: credential_audit_events documents. Events carry ids, kinds, outcomes and reason
 * codes only; nothing here ever sees a secret value (the AuditEvent message has no field for
 * one). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "services/store/store_internal.h"

static const char *const store_outcome_names[] = {"", "success", "denied", "failed"};
static const char *const store_caller_kind_names[] = {"", "browser", "service",
                                                      "service_on_behalf_of_user", "system"};

static const char *store_nz(const char *s)
{
    return s ? s : "";
}

static void store_append_kvs(bson_t *parent, const char *key, size_t n, const char *const *keys,
                             const char *const *vals)
{
    bson_t sub;
    BSON_APPEND_DOCUMENT_BEGIN(parent, key, &sub);
    for (size_t i = 0; i < n; i++)
        BSON_APPEND_UTF8(&sub, keys[i], store_nz(vals[i]));
    bson_append_document_end(parent, &sub);
}

void store_audit_encode(const Credex__V1__AuditEvent *e, bson_t *out)
{
    bson_init(out);
    BSON_APPEND_UTF8(out, "event_id", store_nz(e->event_id));
    BSON_APPEND_DATE_TIME(out, "created_at", e->created_at_ms);
    BSON_APPEND_UTF8(out, "event_type", store_nz(e->event_type));
    BSON_APPEND_UTF8(out, "outcome",
                     (unsigned)e->outcome < 4 ? store_outcome_names[e->outcome] : "");
    BSON_APPEND_UTF8(out, "reason", store_nz(e->reason));
    BSON_APPEND_UTF8(out, "resource_type", store_nz(e->resource_type));
    BSON_APPEND_UTF8(out, "resource_id", store_nz(e->resource_id));
    BSON_APPEND_UTF8(out, "subject_user_id", store_nz(e->subject_user_id));
    BSON_APPEND_UTF8(out, "caller_kind",
                     (unsigned)e->caller_kind < 5 ? store_caller_kind_names[e->caller_kind] : "");
    BSON_APPEND_UTF8(out, "actor_id", store_nz(e->actor_id));
    BSON_APPEND_UTF8(out, "peer", store_nz(e->peer));
    BSON_APPEND_UTF8(out, "correlation_id", store_nz(e->correlation_id));
    BSON_APPEND_UTF8(out, "intended_use", store_nz(e->intended_use));
    if (e->owner && e->owner->owner_type) {
        BSON_APPEND_UTF8(out, "owner_type", store_nz(store_owner_type_name(e->owner->owner_type)));
        BSON_APPEND_UTF8(out, "owner_id", store_nz(e->owner->owner_id));
    }
    if (e->resource_context) {
        const Credex__V1__ResourceContext *r = e->resource_context;
        bson_t rc;
        const char *ks[16], *vs[16];
        size_t n = r->n_attributes < 16 ? r->n_attributes : 16;
        BSON_APPEND_DOCUMENT_BEGIN(out, "resource_context", &rc);
        BSON_APPEND_UTF8(&rc, "resource_type", store_nz(r->resource_type));
        BSON_APPEND_UTF8(&rc, "resource_id", store_nz(r->resource_id));
        BSON_APPEND_UTF8(&rc, "agent_id", store_nz(r->agent_id));
        BSON_APPEND_UTF8(&rc, "provider_resource_id", store_nz(r->provider_resource_id));
        for (size_t i = 0; i < n; i++) {
            ks[i] = r->attributes[i]->key;
            vs[i] = r->attributes[i]->value;
        }
        store_append_kvs(&rc, "attributes", n, ks, vs);
        bson_append_document_end(out, &rc);
    }
    const char *ks[16], *vs[16];
    size_t n = e->n_attributes < 16 ? e->n_attributes : 16;
    for (size_t i = 0; i < n; i++) {
        ks[i] = e->attributes[i]->key;
        vs[i] = e->attributes[i]->value;
    }
    store_append_kvs(out, "attributes", n, ks, vs);
}

char *store_adup(rpc_arena_t *arena, const bson_t *doc, const char *key)
{
    bson_iter_t it;
    uint32_t len = 0;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it)) {
        const char *s = bson_iter_utf8(&it, &len);
        return rpc_arena_strndup(arena, s, len);
    }
    return rpc_arena_strndup(arena, "", 0);
}

static int store_name_index(const char *const *tbl, size_t n, const char *s)
{
    for (size_t i = 1; i < n; i++)
        if (strcmp(tbl[i], s) == 0)
            return (int)i;
    return 0;
}

/* Map entries from a sub-document, at most 16. */
static bool store_decode_map(rpc_arena_t *arena, bson_iter_t *parent, size_t *n_out, void ***out,
                             const ProtobufCMessageDescriptor *desc)
{
    bson_iter_t it;
    size_t n = 0;
    if (!BSON_ITER_HOLDS_DOCUMENT(parent) || !bson_iter_recurse(parent, &it))
        return false;
    /* AuditEvent and ResourceContext map entries share the {base, key, value} layout. */
    Credex__V1__AuditEvent__AttributesEntry **arr = rpc_arena_alloc(arena, 16 * sizeof(*arr));
    while (bson_iter_next(&it) && n < 16) {
        if (!BSON_ITER_HOLDS_UTF8(&it))
            continue;
        Credex__V1__AuditEvent__AttributesEntry *e = rpc_arena_alloc(arena, sizeof(*e));
        protobuf_c_message_init(desc, e);
        uint32_t len = 0;
        const char *v = bson_iter_utf8(&it, &len);
        e->key = rpc_arena_strndup(arena, bson_iter_key(&it), strlen(bson_iter_key(&it)));
        e->value = rpc_arena_strndup(arena, v, len);
        arr[n++] = e;
    }
    *n_out = n;
    *out = (void **)arr;
    return true;
}

bool store_audit_decode(const bson_t *doc, rpc_arena_t *arena, Credex__V1__AuditEvent *out)
{
    bson_iter_t it;
    credex__v1__audit_event__init(out);
    out->event_id = store_adup(arena, doc, "event_id");
    if (!out->event_id[0])
        return false;
    if (bson_iter_init_find(&it, doc, "created_at") && BSON_ITER_HOLDS_DATE_TIME(&it))
        out->created_at_ms = bson_iter_date_time(&it);
    out->event_type = store_adup(arena, doc, "event_type");
    out->outcome = (Credex__V1__AuditOutcome)store_name_index(store_outcome_names, 4,
                                                              store_adup(arena, doc, "outcome"));
    out->reason = store_adup(arena, doc, "reason");
    out->resource_type = store_adup(arena, doc, "resource_type");
    out->resource_id = store_adup(arena, doc, "resource_id");
    out->subject_user_id = store_adup(arena, doc, "subject_user_id");
    out->caller_kind = (Credex__V1__CallerKind)store_name_index(
        store_caller_kind_names, 5, store_adup(arena, doc, "caller_kind"));
    out->actor_id = store_adup(arena, doc, "actor_id");
    out->peer = store_adup(arena, doc, "peer");
    out->correlation_id = store_adup(arena, doc, "correlation_id");
    out->intended_use = store_adup(arena, doc, "intended_use");
    Credex__V1__OwnerType ot = store_owner_type_parse(store_adup(arena, doc, "owner_type"));
    if (ot) {
        Credex__V1__Owner *o = rpc_arena_alloc(arena, sizeof(*o));
        credex__v1__owner__init(o);
        o->owner_type = ot;
        o->owner_id = store_adup(arena, doc, "owner_id");
        out->owner = o;
    }
    if (bson_iter_init_find(&it, doc, "resource_context") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        uint32_t len = 0;
        const uint8_t *data = NULL;
        bson_t sub;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&sub, data, len)) {
            Credex__V1__ResourceContext *r = rpc_arena_alloc(arena, sizeof(*r));
            credex__v1__resource_context__init(r);
            r->resource_type = store_adup(arena, &sub, "resource_type");
            r->resource_id = store_adup(arena, &sub, "resource_id");
            r->agent_id = store_adup(arena, &sub, "agent_id");
            r->provider_resource_id = store_adup(arena, &sub, "provider_resource_id");
            bson_iter_t a;
            if (bson_iter_init_find(&a, &sub, "attributes"))
                store_decode_map(arena, &a, &r->n_attributes, (void ***)&r->attributes,
                                 &credex__v1__resource_context__attributes_entry__descriptor);
            out->resource_context = r;
        }
    }
    if (bson_iter_init_find(&it, doc, "attributes"))
        store_decode_map(arena, &it, &out->n_attributes, (void ***)&out->attributes,
                         &credex__v1__audit_event__attributes_entry__descriptor);
    return true;
}

bool store_audit_insert(store_t *st, mongoc_client_t *c, Credex__V1__AuditEvent *e,
                        rpc_arena_t *arena, cx_error_t *err)
{
    char id[STORE_ID_BUF];
    bson_t doc;
    if (!store_random_id("evt_", id, err))
        return false;
    e->event_id = rpc_arena_strndup(arena, id, strlen(id));
    e->created_at_ms = mdb_now_ms();
    store_audit_encode(e, &doc);
    bool ok = store_audit_batch_write(st->audit, st->db, c, &doc, err);
    bson_destroy(&doc);
    return ok;
}

void store_cursor_encode(int64_t ms, const char *id, char *out, size_t outsz)
{
    snprintf(out, outsz, "%" PRId64 ".%s", ms, id);
}

bool store_cursor_decode(const char *tok, int64_t *ms, char id[STORE_ID_BUF])
{
    int64_t v = 0;
    const char *p = tok;
    if (!tok || !*tok)
        return false;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    if (p == tok || *p != '.' || strlen(p + 1) != STORE_ID_LEN)
        return false;
    /* Any of our id kinds: "sec_", "evt_", "pay_". */
    if (!store_id_valid(p + 1, "sec_") && !store_id_valid(p + 1, "evt_") &&
        !store_id_valid(p + 1, "pay_"))
        return false;
    *ms = v;
    memcpy(id, p + 1, STORE_ID_BUF);
    return true;
}
