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

/* The fields the decoder reads, in the order it judges them: the first bad one in this order
 * is the one an error names. */
typedef enum store_ref_field {
    STORE_F_SECRET_ID,
    STORE_F_OWNER_TYPE,
    STORE_F_OWNER_ID,
    STORE_F_KIND,
    STORE_F_STATUS,
    STORE_F_DISPLAY_NAME,
    STORE_F_DESCRIPTION,
    STORE_F_PROVIDER,
    STORE_F_CONNECTOR_ID,
    STORE_F_ALLOWED_USES,
    STORE_F_CURRENT_VERSION,
    STORE_F_CURRENT_PAYLOAD_ID,
    STORE_F_VALUE_SET,
    STORE_F_CREATE_FINGERPRINT,
    STORE_F_CREATED_BY,
    STORE_F_UPDATED_BY,
    STORE_F_CREATED_AT,
    STORE_F_UPDATED_AT,
    STORE_F_ROTATED_AT,
    STORE_F_REVOKED_AT,
    STORE_F_DELETED_AT,
    STORE_F_COUNT
} store_ref_field_t;

#define STORE_F(name)                                                                              \
    {                                                                                              \
        name, sizeof(name) - 1                                                                     \
    }
static const struct {
    const char *name;
    uint32_t len;
} store_ref_fields[STORE_F_COUNT] = {
    STORE_F("secret_id"),       STORE_F("owner_type"),
    STORE_F("owner_id"),        STORE_F("kind"),
    STORE_F("status"),          STORE_F("display_name"),
    STORE_F("description"),     STORE_F("provider"),
    STORE_F("connector_id"),    STORE_F("allowed_uses"),
    STORE_F("current_version"), STORE_F("current_payload_id"),
    STORE_F("value_set"),       STORE_F("create_fingerprint"),
    STORE_F("created_by"),      STORE_F("updated_by"),
    STORE_F("created_at"),      STORE_F("updated_at"),
    STORE_F("rotated_at"),      STORE_F("revoked_at"),
    STORE_F("deleted_at"),
};

/* A field as the one pass over the document found it (type 0, BSON_TYPE_EOD: absent). */
typedef struct store_dec_value {
    bson_type_t type;
    const char *str; /* UTF-8: in the document, NUL-terminated there; len bytes */
    uint32_t len;
    int64_t num; /* int32, int64, date */
    bool flag;   /* bool */
} store_dec_value_t;

/* One pass over the document finds every field (the first of a repeated key, as a lookup by
 * name would): a lookup per field would walk the document once for each of them. */
typedef struct store_dec {
    rpc_arena_t *arena;
    store_dec_value_t v[STORE_F_COUNT];
    bson_iter_t uses; /* allowed_uses' elements, when it is an array */
    bool uses_ok;
    const char *bad; /* the first field found malformed */
} store_dec_t;

static void store_dec_take(store_dec_t *d, store_ref_field_t f, const bson_iter_t *it)
{
    store_dec_value_t *v = &d->v[f];
    v->type = bson_iter_type(it);
    switch (v->type) {
    case BSON_TYPE_UTF8:
        v->str = bson_iter_utf8(it, &v->len);
        break;
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        v->num = bson_iter_as_int64(it);
        break;
    case BSON_TYPE_DATE_TIME:
        v->num = bson_iter_date_time(it);
        break;
    case BSON_TYPE_BOOL:
        v->flag = bson_iter_bool(it);
        break;
    case BSON_TYPE_ARRAY:
        if (f == STORE_F_ALLOWED_USES)
            d->uses_ok = bson_iter_recurse(it, &d->uses);
        break;
    default:
        break;
    }
}

static void store_dec_scan(store_dec_t *d, const bson_t *doc)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc))
        return; /* every field is then absent */
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        uint32_t klen = bson_iter_key_len(&it);
        for (size_t f = 0; f < STORE_F_COUNT; f++) {
            if (store_ref_fields[f].len == klen && store_ref_fields[f].name[0] == key[0] &&
                memcmp(store_ref_fields[f].name, key, klen) == 0) {
                if (d->v[f].type == BSON_TYPE_EOD)
                    store_dec_take(d, (store_ref_field_t)f, &it);
                break;
            }
        }
    }
}

static bool store_dec_bad(store_dec_t *d, store_ref_field_t f)
{
    if (!d->bad)
        d->bad = store_ref_fields[f].name;
    return false;
}

/* The field when present with type t, else NULL. */
static const store_dec_value_t *store_dec_get(store_dec_t *d, store_ref_field_t f, bson_type_t t)
{
    return d->v[f].type == t ? &d->v[f] : NULL;
}

/* A string field without NUL (the C string must be the stored one), shape-checked by ok. It is
 * not checked for UTF-8 here: every caller holds it to something stricter that implies it (an
 * ASCII alphabet, one of the stored enum names, or its contract rule, which validates UTF-8).
 * Points into the document; *len its length. */
static const char *store_dec_raw(store_dec_t *d, store_ref_field_t f, bool (*ok)(const char *s),
                                 uint32_t *len)
{
    const store_dec_value_t *v = store_dec_get(d, f, BSON_TYPE_UTF8);
    const char *s = v ? v->str : NULL;
    *len = v ? v->len : 0;
    if (!s || memchr(s, '\0', *len) || (ok && !ok(s))) {
        store_dec_bad(d, f);
        return NULL;
    }
    return s;
}

/* store_dec_raw copied into the arena (the document does not outlive the decode). */
static const char *store_dec_str(store_dec_t *d, store_ref_field_t f, bool (*ok)(const char *s))
{
    uint32_t len = 0;
    const char *s = store_dec_raw(d, f, ok, &len);
    return s ? rpc_arena_strndup(d->arena, s, len) : NULL;
}

/* A string under the contract rule of its field name (what store accepts is what it reads
 * back): required fields must be non-empty. */
static const char *store_dec_field(store_dec_t *d, store_ref_field_t f, bool required)
{
    uint32_t len = 0;
    const char *s = store_dec_raw(d, f, NULL, &len);
    if (s && !cx_contract_check_value(store_ref_fields[f].name, s, required, NULL)) {
        store_dec_bad(d, f);
        return NULL;
    }
    return s ? rpc_arena_strndup(d->arena, s, len) : NULL;
}

/* One of the stored enum names: the parsed value, 0 when absent or unknown (read in place). */
static int store_dec_enum(store_dec_t *d, store_ref_field_t f, int (*parse)(const char *s))
{
    uint32_t len = 0;
    const char *s = store_dec_raw(d, f, NULL, &len);
    int v = s ? parse(s) : 0;
    if (s && !v)
        store_dec_bad(d, f);
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
static int64_t store_dec_date(store_dec_t *d, store_ref_field_t f, bool required)
{
    if (d->v[f].type == BSON_TYPE_EOD) {
        if (required)
            store_dec_bad(d, f);
        return 0;
    }
    const store_dec_value_t *v = store_dec_get(d, f, BSON_TYPE_DATE_TIME);
    if (!v || v->num < 0) {
        store_dec_bad(d, f);
        return 0;
    }
    return v->num;
}

static uint32_t store_dec_version(store_dec_t *d, store_ref_field_t f)
{
    const store_dec_value_t *v = store_dec_get(d, f, BSON_TYPE_INT32);
    if (!v)
        v = store_dec_get(d, f, BSON_TYPE_INT64);
    if (!v || v->num < 1 || v->num > UINT32_MAX) {
        store_dec_bad(d, f);
        return 0;
    }
    return (uint32_t)v->num;
}

static bool store_dec_bool(store_dec_t *d, store_ref_field_t f)
{
    const store_dec_value_t *v = store_dec_get(d, f, BSON_TYPE_BOOL);
    if (!v)
        return store_dec_bad(d, f);
    return v->flag;
}

/* allowed_uses: an array of at most 16 distinct uses; read one past the limit to refuse it. */
static void store_dec_uses(store_dec_t *d, Credex__V1__SecretMetadata *m)
{
    bson_iter_t child = d->uses;
    const size_t max = cx_contract_rule("allowed_uses")->max_items;
    char **uses = rpc_arena_alloc(d->arena, (max + 1) * sizeof(char *));
    size_t n = 0;
    if (!store_dec_get(d, STORE_F_ALLOWED_USES, BSON_TYPE_ARRAY) || !d->uses_ok) {
        store_dec_bad(d, STORE_F_ALLOWED_USES);
        return;
    }
    while (bson_iter_next(&child)) {
        uint32_t len = 0;
        if (n == max || !BSON_ITER_HOLDS_UTF8(&child)) {
            store_dec_bad(d, STORE_F_ALLOWED_USES);
            return;
        }
        const char *s = bson_iter_utf8(&child, &len);
        if (strlen(s) != len) {
            store_dec_bad(d, STORE_F_ALLOWED_USES);
            return;
        }
        uses[n++] = rpc_arena_strndup(d->arena, s, len);
    }
    for (size_t i = 0; i < n; i++) {
        bool repeated = false;
        for (size_t j = 0; j < i; j++)
            repeated = repeated || strcmp(uses[i], uses[j]) == 0;
        if (repeated || !cx_contract_check_value("allowed_uses", uses[i], true, NULL)) {
            store_dec_bad(d, STORE_F_ALLOWED_USES);
            return;
        }
    }
    m->allowed_uses = uses;
    m->n_allowed_uses = n;
}

bool store_ref_decode(rpc_arena_t *arena, const bson_t *doc, store_ref_t *out, cx_error_t *err)
{
    store_dec_t d = {.arena = arena};
    store_dec_scan(&d, doc);
    Credex__V1__SecretMetadata *m = rpc_arena_alloc(arena, sizeof(*m));
    Credex__V1__Owner *o = rpc_arena_alloc(arena, sizeof(*o));
    credex__v1__secret_metadata__init(m);
    credex__v1__owner__init(o);
    m->owner = o;
    /* Every field is read even after one failed, so that the first bad one is named. */
    m->secret_id = (char *)store_dec_str(&d, STORE_F_SECRET_ID, store_dec_secret_id);
    o->owner_type = store_dec_enum(&d, STORE_F_OWNER_TYPE, store_dec_owner_type);
    o->owner_id = (char *)store_dec_field(&d, STORE_F_OWNER_ID, true);
    /* store_validate_owner's rule, the contract of owner_id having held above: platform
     * secrets belong to "platform". */
    if (o->owner_type == CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM && o->owner_id &&
        strcmp(o->owner_id, "platform") != 0)
        store_dec_bad(&d, STORE_F_OWNER_ID);
    m->kind = store_dec_enum(&d, STORE_F_KIND, store_dec_kind);
    m->status = store_dec_enum(&d, STORE_F_STATUS, store_dec_status);
    m->display_name = (char *)store_dec_field(&d, STORE_F_DISPLAY_NAME, true);
    m->description = (char *)store_dec_field(&d, STORE_F_DESCRIPTION, false);
    m->provider = (char *)store_dec_field(&d, STORE_F_PROVIDER, false);
    m->connector_id = (char *)store_dec_field(&d, STORE_F_CONNECTOR_ID, false);
    store_dec_uses(&d, m);
    m->current_version = store_dec_version(&d, STORE_F_CURRENT_VERSION);
    const char *payload_id = store_dec_str(&d, STORE_F_CURRENT_PAYLOAD_ID, store_dec_payload_id);
    m->value_set = store_dec_bool(&d, STORE_F_VALUE_SET);
    const char *fingerprint = store_dec_str(&d, STORE_F_CREATE_FINGERPRINT, store_dec_fingerprint);
    m->created_by = (char *)store_dec_field(&d, STORE_F_CREATED_BY, true);
    m->updated_by = (char *)store_dec_field(&d, STORE_F_UPDATED_BY, true);
    m->created_at_ms = store_dec_date(&d, STORE_F_CREATED_AT, true);
    m->updated_at_ms = store_dec_date(&d, STORE_F_UPDATED_AT, true);
    m->rotated_at_ms = store_dec_date(&d, STORE_F_ROTATED_AT, false);
    m->revoked_at_ms = store_dec_date(&d, STORE_F_REVOKED_AT, false);
    m->deleted_at_ms = store_dec_date(&d, STORE_F_DELETED_AT, false);
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
