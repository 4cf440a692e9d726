/*
 * cx_contract: the rules of every credex.v1 request field and the message walker that applies
 * them (the wire check is cx_wire.c). See cx_contract.h.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"

/* ---- alphabets (ASCII; "a-z" is a range) -------------------------------------------------- */

#define A_ID        "A-Za-z0-9_-"      /* server-made ids: sec_..., pay_..., evt_... */
#define A_PRINCIPAL "A-Za-z0-9_.@+-"   /* users, teams, services (OpenFGA object ids) */
#define A_AUDIENCE  "A-Za-z0-9_.@+*-"  /* team ids, or "*" for every user (connectors) */
#define A_USE       "a-z0-9_.:-"       /* intended uses */
#define A_IDENT     "A-Za-z0-9_.:@/-"  /* resource types and ids, labels, key ids */
#define A_CTXVAL    "A-Za-z0-9_.:@+/-" /* encryption-context values (ids, kinds, versions) */
#define A_TOKEN     "A-Za-z0-9_.-"     /* correlation ids, page tokens, peers */
#define A_NAME      "a-z_"             /* update_mask entries, reason codes */
#define A_EVENT     "a-z_."            /* audit event types */
#define A_KEY       "a-z0-9_-"         /* provider keys */
#define A_SCOPE     "!#-[]-~"          /* RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E */
#define A_VISIBLE   "!-~"              /* printable ASCII without space: URLs, codes */
#define A_STATE     "A-Za-z0-9_.~-"    /* OAuth state values */

#define ID(f, lo, hi, alpha, words)                                                                \
    {                                                                                              \
        .field = f, .cls = CX_CONTRACT_ID, .min = lo, .max = hi, .alphabet = alpha, .what = words  \
    }
#define TEXT(f, lo, hi)                                                                            \
    {                                                                                              \
        .field = f, .cls = CX_CONTRACT_TEXT, .min = lo, .max = hi, .what = "single-line text"      \
    }
#define LIST(f, lo, hi, alpha, words, items, uniq)                                                 \
    {                                                                                              \
        .field = f, .cls = CX_CONTRACT_ID, .min = lo, .max = hi, .alphabet = alpha, .what = words, \
        .max_items = items, .unique = uniq                                                         \
    }
#define ITEMS(f, items)                                                                            \
    {                                                                                              \
        .field = f, .cls = CX_CONTRACT_ID, .max_items = items, .what = "entries"                   \
    }
#define BYTES(f, lo, hi)                                                                           \
    {                                                                                              \
        .field = f, .cls = CX_CONTRACT_BYTES, .min = lo, .max = hi, .what = "bytes"                \
    }

/* Rules by field name, sorted by name (bsearch). "<message>.<field>" entries (full message
 * name) override a field's general rule where one name means two things. */
static const cx_contract_rule_t rules[] = {
    ID("account_id_field", 1, 128, A_TOKEN, "a JSON field path"),
    ID("account_name_field", 1, 128, A_TOKEN, "a JSON field path"),
    ID("actor_id", 1, 128, A_PRINCIPAL, "a principal id"),
    ID("after_payload_id", 1, 64, A_ID, "a payload id"),
    ID("agent_id", 1, 128, A_IDENT, "an identifier"),
    LIST("allowed_uses", 1, 64, A_USE, "an intended use", 16, true),
    ITEMS("attributes", 16),
    ID("attributes.key", 1, 64, A_IDENT, "an identifier"),
    TEXT("attributes.value", 0, 256),
    ITEMS("authorization_params", 16),
    ID("authorization_params.key", 1, 64, A_TOKEN, "a parameter name"),
    ID("authorization_params.value", 0, 512, A_VISIBLE, "printable ASCII"),
    ID("authorization_url", 1, 2048, A_VISIBLE, "a URL"),
    BYTES("ciphertext", 1, 4096),
    ID("client_auth_method", 1, 32, A_KEY, "client_secret_basic or client_secret_post"),
    ID("client_id", 1, 256, A_VISIBLE, "printable ASCII"),
    BYTES("client_secret", 1, 4096),
    ID("client_secret_id", 1, 64, A_ID, "an id"),
    ID("code", 1, 2048, A_VISIBLE, "printable ASCII"),
    ID("connection_id", 1, 64, A_ID, "an id"),
    ID("connector_id", 1, 64, A_ID, "an id"),
    ID("correlation_id", 1, 64, A_TOKEN, "a correlation id"),
    ID("created_by", 1, 128, A_PRINCIPAL, "a principal id"),
    /* AuditEvent.reason is a reason code; the revoke requests' reason is a human note. */
    ID("credex.v1.AuditEvent.reason", 1, 64, A_NAME, "a reason code"),
    {.field = "description",
     .cls = CX_CONTRACT_MULTILINE,
     .max = 1024,
     .what = "text (new lines allowed)"},
    TEXT("display_name", 1, 128),
    LIST("enabled_for", 1, 128, A_AUDIENCE, "a team id or *", 1000, true),
    ITEMS("encryption_context", 16),
    ID("encryption_context.key", 1, 64, A_IDENT, "an identifier"),
    ID("encryption_context.value", 0, 255, A_CTXVAL, "an identifier"),
    ID("error", 1, 128, A_VISIBLE, "printable ASCII"),
    TEXT("error_description", 0, 1024),
    ID("event_id", 1, 64, A_ID, "an id"),
    ID("event_type", 3, 64, A_EVENT, "an event type"),
    ITEMS("exclude_owners", 1024),
    ID("grantee_id", 1, 128, A_PRINCIPAL, "a principal id"),
    ID("idempotency_key", 1, 128, A_VISIBLE, "printable ASCII without spaces"),
    ID("intended_use", 1, 64, A_USE, "an intended use"),
    ID("iss", 1, 2048, A_VISIBLE, "an issuer URL"),
    ID("issuer_url", 1, 2048, A_VISIBLE, "a URL"),
    ID("key_id", 1, 255, A_IDENT, "a key id"),
    ID("key_version", 0, 64, A_IDENT, "a key version"),
    ID("oauth_state", 1, 512, A_STATE, "an OAuth state value"),
    ID("owner_id", 1, 128, A_PRINCIPAL, "a principal id"),
    ITEMS("owners", 64),
    ID("page_token", 1, 128, A_TOKEN, "a page token"),
    ID("peer", 1, 64, A_TOKEN, "a peer name"),
    ITEMS("probes", 64),
    ID("provider", 1, 64, A_IDENT, "a label"),
    ID("provider_key", 1, 64, A_KEY, "a provider key"),
    ID("provider_resource_id", 1, 128, A_IDENT, "an identifier"),
    TEXT("reason", 0, 256),
    ID("redirect_uri", 1, 2048, A_VISIBLE, "a URL"),
    LIST("required_scopes", 1, 256, A_SCOPE, "an OAuth scope", 64, true),
    ID("resource_id", 1, 128, A_IDENT, "an identifier"),
    ID("resource_type", 1, 64, A_IDENT, "an identifier"),
    ID("return_to", 1, 2048, A_VISIBLE, "a URL"),
    ID("revocation_url", 1, 2048, A_VISIBLE, "a URL"),
    ID("run_id", 1, 64, A_ID, "an id"),
    LIST("scopes", 1, 256, A_SCOPE, "an OAuth scope", 64, true),
    ID("secret_id", 1, 64, A_ID, "a secret id"),
    LIST("secret_ids", 1, 64, A_ID, "a secret id", 1000, false),
    ID("secret_ref", 1, 64, A_ID, "a secret id"),
    ID("service_id", 1, 128, A_PRINCIPAL, "a service id"),
    ID("source_id", 1, 128, A_IDENT, "an identifier"),
    ID("subject_user_id", 1, 128, A_PRINCIPAL, "a user id"),
    LIST("team_ids", 1, 128, A_AUDIENCE, "a team id or *", 1000, true),
    ID("token_url", 1, 2048, A_VISIBLE, "a URL"),
    LIST("update_mask", 1, 64, A_NAME, "a field name", 8, true),
    ID("updated_by", 1, 128, A_PRINCIPAL, "a principal id"),
    ID("userinfo_url", 1, 2048, A_VISIBLE, "a URL"),
    BYTES("value", 1, 65536),
};

#define NRULES (sizeof(rules) / sizeof(rules[0]))

/* A rule name as two parts, "<a>.<b>" (b NULL: just a), compared without building it: the
 * walker looks rules up for every field of every request. */
typedef struct rule_key {
    const char *a, *b;
} rule_key_t;

static int rule_cmp(const void *key, const void *elt)
{
    const rule_key_t *k = key;
    const unsigned char *f = (const unsigned char *)((const cx_contract_rule_t *)elt)->field;
    const unsigned char *p = (const unsigned char *)k->a;
    for (int part = 0; part < 3; part++) {
        for (; *p; p++, f++)
            if (*p != *f)
                return *p < *f ? -1 : 1;
        if (part == 0 && k->b) {
            if (*f != '.')
                return (unsigned char)'.' < *f ? -1 : 1;
            f++;
            p = (const unsigned char *)k->b;
        } else {
            break;
        }
    }
    return *f ? -1 : 0;
}

static const cx_contract_rule_t *rule_find(const char *a, const char *b)
{
    rule_key_t k = {a, b};
    return bsearch(&k, rules, NRULES, sizeof(rules[0]), rule_cmp);
}

const cx_contract_rule_t *cx_contract_rule(const char *field)
{
    return field ? rule_find(field, NULL) : NULL;
}

/* The fields each request message requires (full message name, then its fields). */
typedef struct required {
    const char *message;
    const char *fields[7];
} required_t;

static const required_t required_fields[] = {
    {"credex.v1.AuditEvent", {"event_type", "outcome", "resource_type"}},
    {"credex.v1.CallerContext", {"caller_kind"}},
    {"credex.v1.CreateSecretRequest", {"idempotency_key", "kind", "display_name", "value"}},
    {"credex.v1.DeleteSecretRequest", {"secret_id"}},
    {"credex.v1.ExchangeRequest", {"intended_use", "resource_context"}},
    {"credex.v1.GetSecretRequest", {"secret_id"}},
    {"credex.v1.Grantee", {"grantee_type", "grantee_id"}},
    {"credex.v1.ListSecretSharesRequest", {"secret_id"}},
    {"credex.v1.ListSecretVersionsRequest", {"secret_id"}},
    {"credex.v1.ResourceContext", {"resource_type", "resource_id"}},
    {"credex.v1.RetrieveRequest", {"secret_ref", "intended_use", "resource_context"}},
    {"credex.v1.RevokeSecretRequest", {"secret_id"}},
    {"credex.v1.RotateSecretRequest", {"secret_id", "value"}},
    {"credex.v1.ShareSecretRequest", {"secret_id", "grantee", "role"}},
    {"credex.v1.StoreAppendAuditEventRequest", {"event"}},
    {"credex.v1.StoreCheckDataKeysRequest", {"probes"}},
    {"credex.v1.StoreCreateSecretRequest",
     {"caller", "idempotency_key", "owner", "kind", "display_name", "value"}},
    {"credex.v1.StoreDataKeyProbe", {"secret_id", "owner", "kind", "wrapped_key"}},
    {"credex.v1.StoreDeleteSecretRequest", {"caller", "secret_id"}},
    {"credex.v1.StoreGetSecretRequest", {"caller", "secret_id"}},
    {"credex.v1.StoreListSecretsRequest", {"caller"}},
    {"credex.v1.StoreListVersionsRequest", {"caller", "secret_id"}},
    {"credex.v1.StoreResolveRequest", {"caller", "secret_id"}},
    {"credex.v1.StoreRevokeSecretRequest", {"caller", "secret_id"}},
    {"credex.v1.StoreRewrapDataKeysRequest", {"run_id"}},
    {"credex.v1.StoreRotateSecretRequest", {"caller", "secret_id", "value"}},
    {"credex.v1.StoreUpdateSecretRequest", {"caller", "secret_id", "update_mask"}},
    {"credex.v1.UnshareSecretRequest", {"secret_id", "grantee"}},
    {"credex.v1.UpdateSecretRequest", {"secret_id", "update_mask"}},
};

static int required_cmp(const void *key, const void *elt)
{
    return strcmp(key, ((const required_t *)elt)->message);
}

/* The required fields of a message (the table is sorted by message name), or NULL. */
static const required_t *required_of(const char *message_name)
{
    return bsearch(message_name, required_fields,
                   sizeof(required_fields) / sizeof(required_fields[0]), sizeof(required_fields[0]),
                   required_cmp);
}

static bool required_in(const required_t *r, const char *field)
{
    for (size_t j = 0; r && j < 7 && r->fields[j]; j++)
        if (strcmp(r->fields[j], field) == 0)
            return true;
    return false;
}

bool cx_contract_required(const char *message_name, const char *field)
{
    return required_in(required_of(message_name), field);
}

/* ---- characters ------------------------------------------------------------------------------ */

bool cx_contract_utf8(const uint8_t *s, size_t n, size_t *chars)
{
    size_t count = 0;
    for (size_t i = 0; i < n; count++) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false; /* continuation byte, overlong lead (C0, C1) or above U+10FFFF */
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    if (chars)
        *chars = count;
    return true;
}

/* The next code point of valid UTF-8 (checked beforehand). */
static uint32_t next_cp(const uint8_t **p)
{
    const uint8_t *s = *p;
    uint32_t cp;
    size_t len;
    if (s[0] < 0x80)
        cp = s[0], len = 1;
    else if (s[0] < 0xE0)
        cp = s[0] & 0x1F, len = 2;
    else if (s[0] < 0xF0)
        cp = s[0] & 0x0F, len = 3;
    else
        cp = s[0] & 0x07, len = 4;
    for (size_t k = 1; k < len; k++)
        cp = cp << 6 | (s[k] & 0x3F);
    *p = s + len;
    return cp;
}

/* Characters no text field may hold: C0 and C1 controls, DEL, line and paragraph separators,
 * bidirectional embeddings, overrides and isolates. multiline allows LF and TAB. */
static bool text_char_ok(uint32_t cp, bool multiline)
{
    if (multiline && (cp == '\n' || cp == '\t'))
        return true;
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
        return false;
    if (cp == 0x2028 || cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) ||
        (cp >= 0x2066 && cp <= 0x2069))
        return false;
    return true;
}

static bool in_alphabet(unsigned char c, const char *alpha)
{
    for (const char *a = alpha; *a; a++) {
        if (a[1] == '-' && a[2]) {
            if (c >= (unsigned char)a[0] && c <= (unsigned char)a[2])
                return true;
            a += 2;
        } else if (c == (unsigned char)*a) {
            return true;
        }
    }
    return false;
}

/* Each rule's alphabet as a 128-bit set of ASCII characters, built once (the walker tests every
 * character of every identifier of every request). Written before first use under
 * pthread_once, read-only afterwards: not mutable state once the process serves. */
static uint64_t alphabet_sets[NRULES][2];
static pthread_once_t alphabet_once = PTHREAD_ONCE_INIT;

static void alphabet_sets_build(void)
{
    for (size_t i = 0; i < NRULES; i++)
        for (unsigned c = 1; c < 128 && rules[i].alphabet; c++)
            if (in_alphabet((unsigned char)c, rules[i].alphabet))
                alphabet_sets[i][c >> 6] |= (uint64_t)1 << (c & 63);
}

/* Is c in rule r's alphabet? r is an element of rules[] (the fallback has no alphabet). */
static bool rule_allows(const cx_contract_rule_t *r, unsigned char c)
{
    if (r < rules || r >= rules + NRULES)
        return in_alphabet(c, r->alphabet);
    pthread_once(&alphabet_once, alphabet_sets_build);
    const uint64_t *set = alphabet_sets[r - rules];
    return c < 128 && (set[c >> 6] >> (c & 63) & 1);
}

/* Does s (NUL-terminated) satisfy r? Length 0 is judged by the caller. */
static bool value_ok(const cx_contract_rule_t *r, const char *s)
{
    size_t n = strlen(s), chars = 0;
    if (r->cls == CX_CONTRACT_ID) {
        if (n < r->min || n > r->max)
            return false;
        for (size_t i = 0; i < n; i++)
            if (!rule_allows(r, (unsigned char)s[i]))
                return false;
        return true;
    }
    if (!cx_contract_utf8((const uint8_t *)s, n, &chars) || chars < r->min || chars > r->max)
        return false;
    for (const uint8_t *p = (const uint8_t *)s; *p;)
        if (!text_char_ok(next_cp(&p), r->cls == CX_CONTRACT_MULTILINE))
            return false;
    return true;
}

static bool rule_error(const char *path, const cx_contract_rule_t *r, cx_error_t *err)
{
    if (r->cls == CX_CONTRACT_ID)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "%s: must be %zu..%zu characters of [%s] (%s)", path, r->min, r->max,
                            r->alphabet, r->what);
    if (r->cls == CX_CONTRACT_BYTES)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: must be %zu..%zu bytes", path,
                            r->min, r->max);
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                        "%s: must be %zu..%zu characters of %s without control characters", path,
                        r->min, r->max, r->what);
}

/* Fields without a rule: single-line text of at most 1024 characters. */
static const cx_contract_rule_t fallback = TEXT("", 0, 1024);

bool cx_contract_check_value(const char *field, const char *value, bool required, cx_error_t *err)
{
    const cx_contract_rule_t *r = cx_contract_rule(field);
    if (!r)
        r = &fallback;
    if (!value || !*value) {
        if (required)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is required", field);
        return true;
    }
    return value_ok(r, value) ? true : rule_error(field, r, err);
}

/* ---- the message walker ---------------------------------------------------------------------- */

/* The field path of the walk, kept as a stack of (name, index) frames and written out only
 * for an error message ("resource_context.attributes[2].value"). */
typedef struct walk_frame {
    const char *name;
    long index; /* -1: not an element */
} walk_frame_t;

typedef struct walk {
    walk_frame_t frames[2 * CX_CONTRACT_MAX_DEPTH + 4];
    size_t nframes;
    char buf[256];
    cx_error_t *err;
} walk_t;

static size_t path_push(walk_t *w, const char *name, long index)
{
    size_t at = w->nframes;
    if (at < sizeof(w->frames) / sizeof(w->frames[0]))
        w->frames[w->nframes++] = (walk_frame_t){name, index};
    return at;
}

static void path_pop(walk_t *w, size_t at)
{
    w->nframes = at;
}

static const char *path_str(walk_t *w)
{
    size_t at = 0;
    w->buf[0] = '\0';
    for (size_t i = 0; i < w->nframes && at < sizeof(w->buf); i++) {
        int n = w->frames[i].index >= 0
                    ? snprintf(w->buf + at, sizeof(w->buf) - at, "%s%s[%ld]", i ? "." : "",
                               w->frames[i].name, w->frames[i].index)
                    : snprintf(w->buf + at, sizeof(w->buf) - at, "%s%s", i ? "." : "",
                               w->frames[i].name);
        if (n < 0)
            break;
        at += (size_t)n; /* a truncated path only shortens the message */
    }
    return w->buf;
}

bool cx_contract_is_map_entry(const ProtobufCMessageDescriptor *d)
{
    return d->n_fields == 2 && strcmp(d->fields[0].name, "key") == 0 &&
           strcmp(d->fields[1].name, "value") == 0;
}

const cx_contract_rule_t *cx_contract_field_rule(const ProtobufCMessageDescriptor *d,
                                                 const ProtobufCFieldDescriptor *f,
                                                 const char *map_field)
{
    if (map_field)
        return rule_find(map_field, f->name);
    const cx_contract_rule_t *r = rule_find(d->name, f->name);
    return r ? r : rule_find(f->name, NULL);
}

static bool check_message(walk_t *w, const ProtobufCMessage *m, const char *map_field,
                          unsigned depth);

/* One value of field f (an element when repeated) at p. */
static bool check_one(walk_t *w, const ProtobufCMessageDescriptor *d,
                      const ProtobufCFieldDescriptor *f, const void *p, const char *map_field,
                      bool required, unsigned depth)
{
    const cx_contract_rule_t *r = cx_contract_field_rule(d, f, map_field);
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        if (!s || !*s)
            return required ? cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required",
                                           path_str(w))
                            : true;
        if (!r)
            r = &fallback;
        return value_ok(r, s) ? true : rule_error(path_str(w), r, w->err);
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        if (b->len == 0)
            return required ? cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required",
                                           path_str(w))
                            : true;
        size_t max = r && r->cls == CX_CONTRACT_BYTES ? r->max : 1024;
        size_t min = r && r->cls == CX_CONTRACT_BYTES ? r->min : 0;
        if (b->len < min || b->len > max)
            return cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s: must be %zu..%zu bytes",
                                path_str(w), min, max);
        return true;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        if (!protobuf_c_enum_descriptor_get_value(f->descriptor, v))
            return cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s: unknown value", path_str(w));
        if (required && v == 0)
            return cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required", path_str(w));
        return true;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (!sub)
            return required ? cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required",
                                           path_str(w))
                            : true;
        const ProtobufCMessageDescriptor *sd = f->descriptor;
        return check_message(w, sub, cx_contract_is_map_entry(sd) ? f->name : NULL, depth + 1);
    }
    default:
        return true; /* numbers and bools: the wire check saw their range */
    }
}

/* Size in bytes of one element of a repeated field of type t in protobuf-c's layout. */
static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 8;
    }
}

static bool check_repeated(walk_t *w, const ProtobufCMessageDescriptor *d,
                           const ProtobufCFieldDescriptor *f, const char *base,
                           const char *map_field, bool required, unsigned depth)
{
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)(base + f->offset);
    const cx_contract_rule_t *r = cx_contract_field_rule(d, f, map_field);
    unsigned max_items = r && r->max_items ? r->max_items : 1000;
    size_t at = path_push(w, f->name, -1);
    bool ok = true;
    if (required && n == 0)
        ok = cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required", path_str(w));
    else if (n > max_items)
        ok = cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s: at most %u entries", path_str(w),
                          max_items);
    path_pop(w, at);
    size_t es = elem_size(f->type);
    for (size_t i = 0; ok && i < n; i++) {
        at = path_push(w, f->name, (long)i);
        ok = check_one(w, d, f, arr + i * es, map_field, true, depth);
        if (ok && r && r->unique && f->type == PROTOBUF_C_TYPE_STRING) {
            char *const *sv = (char *const *)arr;
            for (size_t j = 0; ok && j < i; j++)
                if (strcmp(sv[i], sv[j]) == 0)
                    ok = cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT,
                                      "%s: repeats an earlier entry", path_str(w));
        }
        path_pop(w, at);
    }
    return ok;
}

/* Is field f of the message at base set? Only proto3 `optional` scalars and oneof members can
 * be absent in a way that differs from their zero value. */
static bool field_present(const ProtobufCFieldDescriptor *f, const char *base)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
        f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
    return true;
}

static bool check_message(walk_t *w, const ProtobufCMessage *m, const char *map_field,
                          unsigned depth)
{
    if (depth > CX_CONTRACT_MAX_DEPTH)
        return cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "message nested too deeply");
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    const required_t *needs = map_field ? NULL : required_of(d->name);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool req = required_in(needs, f->name);
        bool ok;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            ok = check_repeated(w, d, f, base, map_field, req, depth);
        } else {
            size_t at = path_push(w, f->name, -1);
            if (!field_present(f, base))
                ok = req ? cx_error_set(w->err, CX_ERR_INVALID_ARGUMENT, "%s is required",
                                        path_str(w))
                         : true;
            else
                ok = check_one(w, d, f, base + f->offset, map_field, req, depth);
            path_pop(w, at);
        }
        if (!ok)
            return false;
    }
    return true;
}

bool cx_contract_check(const ProtobufCMessage *msg, cx_error_t *err)
{
    if (!msg)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "request is missing");
    walk_t w = {.err = err};
    return check_message(&w, msg, NULL, 0);
}
