/*
 * store secret documents: the codec of credential_secret_refs (docs/DATA_MODEL.md). Field
 * names follow common.proto's SecretMetadata; masked state only: no length, no last
 * characters, nothing derived from the value.
 *
 * The database is outside input: anyone who can write to it can put anything in a document.
 * The decoder therefore reads nothing on trust. Every field it reads must be there with the
 * type and shape store itself writes (the shapes of request validation, validate.c), and
 * anything else is CX_ERR_INTEGRITY, the answer to a tampered payload too: a document that
 * store did not write is not a database outage, and must be neither answered around nor
 * reported as one. The message names the field, never its value.
 */
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/store/store_internal.h"

void store_ref_encode(const store_ref_new_t *n, bson_t *out)
{
    const Credex__V1__StoreCreateSecretRequest *r = n->req;
    bson_t arr;
    bson_init(out);
    BSON_APPEND_UTF8(out, "_id", n->secret_id); /* primary-key lookups, as for payloads */
    BSON_APPEND_UTF8(out, "secret_id", n->secret_id);
    BSON_APPEND_UTF8(out, "owner_type", store_owner_type_name(r->owner->owner_type));
    BSON_APPEND_UTF8(out, "owner_id", r->owner->owner_id);
    BSON_APPEND_UTF8(out, "kind", store_kind_name(r->kind));
    BSON_APPEND_UTF8(out, "status", "active");
    BSON_APPEND_UTF8(out, "display_name", r->display_name);
    BSON_APPEND_UTF8(out, "description", r->description);
    BSON_APPEND_UTF8(out, "provider", r->provider);
    BSON_APPEND_UTF8(out, "connector_id", r->connector_id);
    BSON_APPEND_ARRAY_BEGIN(out, "allowed_uses", &arr);
    for (size_t i = 0; i < r->n_allowed_uses; i++) {
        char k[16];
        const char *key;
        bson_uint32_to_string((uint32_t)i, &key, k, sizeof(k));
        BSON_APPEND_UTF8(&arr, key, r->allowed_uses[i]);
    }
    bson_append_array_end(out, &arr);
    BSON_APPEND_INT64(out, "current_version", 1);
    BSON_APPEND_UTF8(out, "current_payload_id", n->payload_id);
    BSON_APPEND_BOOL(out, "value_set", true);
    BSON_APPEND_UTF8(out, "create_fingerprint", n->fingerprint);
    BSON_APPEND_UTF8(out, "created_by", n->actor);
    BSON_APPEND_DATE_TIME(out, "created_at", n->now_ms);
    BSON_APPEND_UTF8(out, "updated_by", n->actor);
    BSON_APPEND_DATE_TIME(out, "updated_at", n->now_ms);
}

/* ---- decoding ------------------------------------------------------------------------- */

typedef struct store_dec {
    const bson_t *doc;
    rpc_arena_t *arena;
    const char *bad; /* the first field found malformed */
} store_dec_t;

static bool store_dec_bad(store_dec_t *d, const char *field)
{
    if (!d->bad)
        d->bad = field;
    return false;
}

/* A UTF-8 string field copied into the arena: valid UTF-8 without NUL (the C string must be
 * the stored one), then shape-checked by ok (NULL: any). */
static const char *store_dec_str(store_dec_t *d, const char *field, bool (*ok)(const char *s))
{
    bson_iter_t it;
    uint32_t len = 0;
    if (!bson_iter_init_find(&it, d->doc, field) || !BSON_ITER_HOLDS_UTF8(&it)) {
        store_dec_bad(d, field);
        return NULL;
    }
    const char *s = bson_iter_utf8(&it, &len);
    if (!bson_utf8_validate(s, len, false) || (ok && !ok(s))) {
        store_dec_bad(d, field);
        return NULL;
    }
    return rpc_arena_strndup(d->arena, s, len);
}

/* A string under the contract rule of its field name (what store accepts is what it reads
 * back): required fields must be non-empty. */
static const char *store_dec_field(store_dec_t *d, const char *field, bool required)
{
    const char *s = store_dec_str(d, field, NULL);
    if (s && !cx_contract_check_value(field, s, required, NULL)) {
        store_dec_bad(d, field);
        return NULL;
    }
    return s;
}

/* One of the stored enum names: the parsed value, 0 when unknown. */
static int store_dec_enum(store_dec_t *d, const char *field, int (*parse)(const char *s))
{
    const char *s = store_dec_str(d, field, NULL);
    int v = s ? parse(s) : 0;
    if (s && !v)
        store_dec_bad(d, field);
    return v;
}

static int store_dec_owner_type(const char *s)
{
    return (int)store_owner_type_parse(s);
}
static int store_dec_kind(const char *s)
{
    return (int)store_kind_parse(s);
}
static int store_dec_status(const char *s)
{
    return (int)store_status_parse(s);
}

static bool store_dec_secret_id(const char *s)
{
    return store_id_valid(s, "sec_");
}

static bool store_dec_payload_id(const char *s)
{
    return store_id_valid(s, "pay_");
}

/* SHA-256 in lower-case hex, as store_fingerprint writes it. */
static bool store_dec_fingerprint(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* A BSON date, not before the epoch; absent is 0 unless required. */
static int64_t store_dec_date(store_dec_t *d, const char *field, bool required)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d->doc, field)) {
        if (required)
            store_dec_bad(d, field);
        return 0;
    }
    if (!BSON_ITER_HOLDS_DATE_TIME(&it) || bson_iter_date_time(&it) < 0) {
        store_dec_bad(d, field);
        return 0;
    }
    return bson_iter_date_time(&it);
}

static uint32_t store_dec_version(store_dec_t *d, const char *field)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d->doc, field) ||
        !(BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)) ||
        bson_iter_as_int64(&it) < 1 || bson_iter_as_int64(&it) > UINT32_MAX) {
        store_dec_bad(d, field);
        return 0;
    }
    return (uint32_t)bson_iter_as_int64(&it);
}

static bool store_dec_bool(store_dec_t *d, const char *field)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, d->doc, field) || !BSON_ITER_HOLDS_BOOL(&it))
        return store_dec_bad(d, field);
    return bson_iter_bool(&it);
}

/* allowed_uses: an array of at most 16 distinct uses; read one past the limit to refuse it. */
static void store_dec_uses(store_dec_t *d, Credex__V1__SecretMetadata *m)
{
    bson_iter_t it, child;
    const size_t max = cx_contract_rule("allowed_uses")->max_items;
    char **uses = rpc_arena_alloc(d->arena, (max + 1) * sizeof(char *));
    size_t n = 0;
    if (!bson_iter_init_find(&it, d->doc, "allowed_uses") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &child)) {
        store_dec_bad(d, "allowed_uses");
        return;
    }
    while (bson_iter_next(&child)) {
        uint32_t len = 0;
        if (n == max || !BSON_ITER_HOLDS_UTF8(&child)) {
            store_dec_bad(d, "allowed_uses");
            return;
        }
        const char *s = bson_iter_utf8(&child, &len);
        if (strlen(s) != len) {
            store_dec_bad(d, "allowed_uses");
            return;
        }
        uses[n++] = rpc_arena_strndup(d->arena, s, len);
    }
    for (size_t i = 0; i < n; i++) {
        bool repeated = false;
        for (size_t j = 0; j < i; j++)
            repeated = repeated || strcmp(uses[i], uses[j]) == 0;
        if (repeated || !cx_contract_check_value("allowed_uses", uses[i], true, NULL)) {
            store_dec_bad(d, "allowed_uses");
            return;
        }
    }
    m->allowed_uses = uses;
    m->n_allowed_uses = n;
}

bool store_ref_decode(rpc_arena_t *arena, const bson_t *doc, store_ref_t *out, cx_error_t *err)
{
    store_dec_t d = {.doc = doc, .arena = arena};
    Credex__V1__SecretMetadata *m = rpc_arena_alloc(arena, sizeof(*m));
    Credex__V1__Owner *o = rpc_arena_alloc(arena, sizeof(*o));
    credex__v1__secret_metadata__init(m);
    credex__v1__owner__init(o);
    m->owner = o;
    /* Every field is read even after one failed, so that the first bad one is named. */
    m->secret_id = (char *)store_dec_str(&d, "secret_id", store_dec_secret_id);
    o->owner_type = store_dec_enum(&d, "owner_type", store_dec_owner_type);
    o->owner_id = (char *)store_dec_field(&d, "owner_id", true);
    if (o->owner_type && o->owner_id && !store_validate_owner(o, NULL))
        store_dec_bad(&d, "owner_id"); /* platform secrets belong to "platform" */
    m->kind = store_dec_enum(&d, "kind", store_dec_kind);
    m->status = store_dec_enum(&d, "status", store_dec_status);
    m->display_name = (char *)store_dec_field(&d, "display_name", true);
    m->description = (char *)store_dec_field(&d, "description", false);
    m->provider = (char *)store_dec_field(&d, "provider", false);
    m->connector_id = (char *)store_dec_field(&d, "connector_id", false);
    store_dec_uses(&d, m);
    m->current_version = store_dec_version(&d, "current_version");
    const char *payload_id = store_dec_str(&d, "current_payload_id", store_dec_payload_id);
    m->value_set = store_dec_bool(&d, "value_set");
    const char *fingerprint = store_dec_str(&d, "create_fingerprint", store_dec_fingerprint);
    m->created_by = (char *)store_dec_field(&d, "created_by", true);
    m->updated_by = (char *)store_dec_field(&d, "updated_by", true);
    m->created_at_ms = store_dec_date(&d, "created_at", true);
    m->updated_at_ms = store_dec_date(&d, "updated_at", true);
    m->rotated_at_ms = store_dec_date(&d, "rotated_at", false);
    m->revoked_at_ms = store_dec_date(&d, "revoked_at", false);
    m->deleted_at_ms = store_dec_date(&d, "deleted_at", false);
    if (d.bad)
        return cx_error_set(err, CX_ERR_INTEGRITY, "stored secret metadata is malformed (%s)",
                            d.bad);
    /* A constant, never derived from the value (common.proto). */
    m->masked_value =
        rpc_arena_strndup(arena, m->value_set ? "********" : "", m->value_set ? 8 : 0);
    out->meta = m;
    out->payload_id = payload_id;
    out->fingerprint = fingerprint;
    return true;
}

void store_bind_from_ref(const store_ref_t *ref, store_bind_t *b)
{
    b->secret_id = ref->meta->secret_id;
    b->version = ref->meta->current_version;
    b->owner_type = store_owner_type_name(ref->meta->owner->owner_type);
    b->owner_id = ref->meta->owner->owner_id;
    b->kind = store_kind_name(ref->meta->kind);
    b->payload_id = ref->payload_id;
}
