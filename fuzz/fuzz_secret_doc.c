/*
 * Fuzz target: the decoder of stored secret metadata documents (store_ref_decode), outside
 * input to the store (anyone who can write to the database controls them).
 *
 * The input becomes a BSON document in one of three ways, by its first byte:
 *  '!'  edits of a valid document (the one CreateSecret writes): one edit per line,
 *       "<field><type><value>", the field picked by its byte, the type one of s (string, the
 *       raw bytes), i (int64), n (int32), d (double), b (bool), t (date), a (array of strings
 *       split at ','), o (empty document), z (null), x (field removed). Mutations of the seeds
 *       are then near-valid documents that reach every field check;
 *  '{'  extended JSON, parsed by libbson;
 *  else raw BSON, its length prefix and terminator fixed up so that random bytes reach the
 *       element parser.
 * The decoder must not crash or leak, must refuse with integrity_error (leaving its output
 * alone), and when it accepts, must only answer what store itself could have written.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/store/store_internal.h"

/* Fields by letter in the edit lines: 'B' secret_id, 'C' owner_type, 'D' owner_id, 'E' kind,
 * 'F' status, 'G' display_name, ... 'K' allowed_uses, 'L' current_version, ... (fuzz_fields
 * from 'B' on; any byte picks one, modulo their number). */
const char *const fuzz_seeds[] = {
    "!",                                                        /* the valid document itself */
    "!Csbogus",                                                 /* owner_type unknown */
    "!EsAPI_KEY",                                               /* kind: not a stored name */
    "!Fsrevoked\nTt1700000000002",                              /* revoked, with its date */
    "!Kamcp.tool,agent:run,ci.deploy",                          /* three uses */
    "!Kau0,u1,u2,u3,u4,u5,u6,u7,u8,u9,ua,ub,uc,ud,ue,uf,ug",    /* seventeen */
    "!KaUPPER",                                                 /* a malformed use */
    "!Li0",                                                     /* current_version out of range */
    "!Li4294967295",                                            /* ... and its upper limit */
    "!Ln7",                                                     /* an int32 version */
    "!Lsone",                                                   /* a string version */
    "!Mspay_short",                                             /* a malformed payload id */
    "!Csplatform\nDsplatform\nEsoauth_client_secret\nJsconn_1", /* a connector secret */
    "!Dsa|b",                                                   /* the id derivation's separator */
    "!Gstab\there",                                             /* a control character */
    "!Nb1\nVx",                                                 /* no fingerprint */
    "!Qi1700000000000",                                         /* a date that is an integer */
    "{\"secret_id\":\"sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\",\"current_version\":{\"$numberLong\":\"1\"}"
    "}",
    NULL};

static const char *const fuzz_fields[] = {"secret_id",    "owner_type",      "owner_id",
                                          "kind",         "status",          "display_name",
                                          "description",  "provider",        "connector_id",
                                          "allowed_uses", "current_version", "current_payload_id",
                                          "value_set",    "created_by",      "updated_by",
                                          "created_at",   "updated_at",      "rotated_at",
                                          "revoked_at",   "deleted_at",      "create_fingerprint",
                                          "_id"};
#define FUZZ_NFIELDS (sizeof(fuzz_fields) / sizeof(fuzz_fields[0]))

static void fuzz_base(bson_t *out)
{
    static char *uses[] = {"mcp.tool"};
    Credex__V1__StoreCreateSecretRequest r = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    o.owner_id = "alice";
    r.owner = &o;
    r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    r.display_name = "OpenAI";
    r.provider = "openai";
    r.n_allowed_uses = 1;
    r.allowed_uses = uses;
    store_ref_new_t n = {.req = &r,
                         .secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H",
                         .payload_id = "pay_0123456789ABCDEFGHJKMNPQRS",
                         .fingerprint =
                             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                         .actor = "alice",
                         .now_ms = 1700000000000};
    store_ref_encode(&n, out);
}

static int64_t fuzz_num(const uint8_t *v, size_t len)
{
    char num[32];
    size_t n = len < sizeof(num) - 1 ? len : sizeof(num) - 1;
    memcpy(num, v, n);
    num[n] = '\0';
    return strtoll(num, NULL, 10);
}

/* doc with one field set to a value made of (type, v[0..len)), into out. */
static void fuzz_edit(const bson_t *doc, const char *field, uint8_t type, const uint8_t *v,
                      size_t len, bson_t *out)
{
    bson_iter_t it;
    bson_init(out);
    if (bson_iter_init(&it, doc))
        while (bson_iter_next(&it))
            if (strcmp(bson_iter_key(&it), field) != 0)
                bson_append_iter(out, bson_iter_key(&it), -1, &it);
    switch (type) {
    case 's':
        bson_append_utf8(out, field, -1, (const char *)v, (int)len);
        break;
    case 'i':
        bson_append_int64(out, field, -1, fuzz_num(v, len));
        break;
    case 'n':
        bson_append_int32(out, field, -1, (int32_t)fuzz_num(v, len));
        break;
    case 'd':
        bson_append_double(out, field, -1, (double)fuzz_num(v, len) / 3.0);
        break;
    case 'b':
        bson_append_bool(out, field, -1, len > 0 && v[0] == '1');
        break;
    case 't':
        bson_append_date_time(out, field, -1, fuzz_num(v, len));
        break;
    case 'a': {
        bson_t arr;
        size_t start = 0;
        uint32_t idx = 0;
        bson_append_array_begin(out, field, -1, &arr);
        for (size_t i = 0; i <= len; i++)
            if (i == len || v[i] == ',') {
                char k[16];
                const char *key;
                bson_uint32_to_string(idx++, &key, k, sizeof(k));
                bson_append_utf8(&arr, key, -1, (const char *)v + start, (int)(i - start));
                start = i + 1;
            }
        bson_append_array_end(out, &arr);
        break;
    }
    case 'o': {
        bson_t sub;
        bson_append_document_begin(out, field, -1, &sub);
        bson_append_document_end(out, &sub);
        break;
    }
    case 'z':
        bson_append_null(out, field, -1);
        break;
    default: /* removed */
        break;
    }
}

/* What store reads back must be what it would have accepted: its own id formats, known enum
 * names, and the request contract over the whole decoded message. */
static void fuzz_check_accepted(const store_ref_t *ref)
{
    const Credex__V1__SecretMetadata *m = ref->meta;
    cx_error_t err;
    if (!store_id_valid(m->secret_id, "sec_") || !store_id_valid(ref->payload_id, "pay_") ||
        !store_owner_type_name(m->owner->owner_type) || !store_kind_name(m->kind) ||
        !store_status_name(m->status) || m->current_version < 1 || !m->display_name[0] ||
        !m->owner->owner_id[0] || strlen(ref->fingerprint) != 64 ||
        !cx_contract_check(&m->base, &err))
        abort();
}

static void fuzz_decode(const bson_t *doc)
{
    store_ref_t ref = {0};
    cx_error_t err;
    rpc_arena_t *arena = rpc_arena_new(1024);
    if (store_ref_decode(arena, doc, &ref, &err))
        fuzz_check_accepted(&ref);
    else if (err.code != CX_ERR_INTEGRITY || ref.meta != NULL)
        abort();
    rpc_arena_free(arena);
}

static void fuzz_edits(const uint8_t *data, size_t size)
{
    bson_t doc, next;
    size_t start = 0;
    fuzz_base(&doc);
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        if (i - start >= 2) {
            const char *field =
                fuzz_fields[(data[start] + FUZZ_NFIELDS - 'B' % FUZZ_NFIELDS) % FUZZ_NFIELDS];
            fuzz_edit(&doc, field, data[start + 1], data + start + 2, i - start - 2, &next);
            bson_destroy(&doc);
            bson_copy_to(&next, &doc);
            bson_destroy(&next);
        }
        start = i + 1;
    }
    fuzz_decode(&doc);
    bson_destroy(&doc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bson_t doc;
    if (size > 0 && data[0] == '!') {
        fuzz_edits(data + 1, size - 1);
        return 0;
    }
    if (size > 0 && data[0] == '{') {
        if (bson_init_from_json(&doc, (const char *)data, (ssize_t)size, NULL)) {
            fuzz_decode(&doc);
            bson_destroy(&doc);
        }
        return 0;
    }
    size_t n = size + 5;
    uint8_t *buf = malloc(n);
    for (int i = 0; i < 4; i++)
        buf[i] = (uint8_t)((n >> (8 * i)) & 0xff); /* BSON lengths are little-endian */
    if (size)
        memcpy(buf + 4, data, size);
    buf[n - 1] = 0;
    if (bson_init_static(&doc, buf, n) && bson_validate(&doc, BSON_VALIDATE_NONE, NULL))
        fuzz_decode(&doc);
    free(buf);
    return 0;
}
