/*
 * Fuzz target: the store's decoders of outside input.
 *  - stored payload documents (BSON read back from the database, which an attacker with
 *    database access controls): store_payload_decode, then store_envelope_open, which must
 *    refuse (integrity) and never crash; stored audit documents: store_audit_decode;
 *  - requests from peers (protobuf): the contract, then store_validate_create / _resolve /
 *    _update / _audit_event, and page cursors.
 * The first byte picks the mode; mode 1 builds a well-formed-looking payload document from
 * the input so the field checks, not just the BSON parser, are exercised.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/store/store_internal.h"

const char *const fuzz_seeds[] = {
    "\x01payload_id\nsec_5NPKMVKYTE6Z2RVKV37EW1BN4H\n3\nAES-256-GCM\nlocal-cmk\nalias/x\n1\n"
    "wrappedkey\n123456789012\nciphertext\n1234567890123456",
    "\x02\x0a\x04\x08\x01\x10\x02\x12\x05idem1",
    "\x03\x0a\x02\x08\x02\x12\x1esec_5NPKMVKYTE6Z2RVKV37EW1BN4H",
    "\x04"
    "1700000000123.evt_0123456789ABCDEFGHJKMNPQRS",
    "\x00\x05\x00\x00\x00\x00",
    NULL};

static void fuzz_open(const bson_t *doc)
{
    store_payload_t p;
    cx_error_t err;
    rpc_arena_t *arena = rpc_arena_new(1024);
    Credex__V1__AuditEvent e;
    (void)store_audit_decode(doc, arena, &e);
    rpc_arena_free(arena);
    if (!store_payload_decode(doc, &p, &err)) {
        if (err.code != CX_ERR_INTEGRITY)
            abort();
        return;
    }
    if (p.ct_len < 1 || p.ct_len > STORE_VALUE_MAX || p.wrapped_len < 1 ||
        p.wrapped_len > STORE_WRAPPED_MAX || p.version < 1)
        abort();
    unsigned char k[CX_AES_KEY_LEN] = {7};
    cx_secret_t *dek = cx_secret_from(k, sizeof(k));
    store_bind_t b = {.secret_id = p.secret_id,
                      .version = p.version,
                      .owner_type = "user",
                      .owner_id = "alice",
                      .kind = "api_key",
                      .payload_id = p.payload_id};
    cx_secret_t *plain = store_envelope_open(dek, &b, &p, &err);
    /* Forging a GCM tag by chance does not happen: success means the check is broken. */
    if (plain || err.code != CX_ERR_INTEGRITY)
        abort();
    cx_secret_free(dek);
}

/* Mode 1: newline-separated fields become a payload document. */
static void fuzz_structured(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"payload_id",   "secret_id",  "version",     "alg",
                                       "key_provider", "key_id",     "key_version", "wrapped_key",
                                       "nonce",        "ciphertext", "tag"};
    const uint8_t *parts[11] = {0};
    size_t lens[11] = {0}, n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 11; i++)
        if (i == size || data[i] == '\n') {
            parts[n] = data + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    bson_t doc = BSON_INITIALIZER;
    for (size_t i = 0; i < n; i++) {
        if (i == 2) {
            char num[24] = {0};
            memcpy(num, parts[i], lens[i] < 20 ? lens[i] : 20);
            BSON_APPEND_INT64(&doc, keys[i], strtoll(num, NULL, 10));
        } else if (i >= 7) {
            BSON_APPEND_BINARY(&doc, keys[i], BSON_SUBTYPE_BINARY, parts[i], (uint32_t)lens[i]);
        } else {
            bson_append_utf8(&doc, keys[i], -1, (const char *)parts[i], (int)lens[i]);
        }
    }
    fuzz_open(&doc);
    bson_destroy(&doc);
}

static void fuzz_request(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size)
{
    rpc_arena_t *arena = rpc_arena_new(4096);
    ProtobufCAllocator alloc = rpc_arena_allocator(arena);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, size, data);
    cx_error_t err;
    if (m) {
        if (desc == &credex__v1__store_create_secret_request__descriptor) {
            const Credex__V1__StoreCreateSecretRequest *r = (const void *)m;
            /* As the dispatch does: the contract, then store's policy; together they never let
             * an empty or oversized value, or a missing owner, through. */
            if (cx_contract_check(m, &err) && store_validate_create(r, "gateway", &err) &&
                (r->value.len == 0 || r->value.len > STORE_VALUE_MAX || !r->owner))
                abort();
            (void)store_validate_create(r, "oauth", &err);
        } else if (desc == &credex__v1__store_resolve_request__descriptor) {
            (void)store_validate_resolve((const void *)m, "gateway", &err);
        } else if (desc == &credex__v1__store_update_secret_request__descriptor) {
            (void)store_validate_update((const void *)m, &err);
        } else {
            (void)store_validate_audit_event(
                ((const Credex__V1__StoreAppendAuditEventRequest *)m)->event, &err);
        }
    }
    rpc_arena_free(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 7;
    data++;
    size--;
    switch (mode) {
    case 0: {
        /* Fix up the length prefix and terminator so that random bytes reach the element
         * parser instead of failing the framing check every time. */
        bson_t doc;
        size_t n = size + 5;
        uint8_t *buf = malloc(n);
        for (int i = 0; i < 4; i++)
            buf[i] = (uint8_t)((n >> (8 * i)) & 0xff); /* BSON lengths are little-endian */
        memcpy(buf + 4, data, size);
        buf[n - 1] = 0;
        if (bson_init_static(&doc, buf, n) && bson_validate(&doc, BSON_VALIDATE_NONE, NULL))
            fuzz_open(&doc);
        free(buf);
        break;
    }
    case 1:
        fuzz_structured(data, size);
        break;
    case 2:
        fuzz_request(&credex__v1__store_create_secret_request__descriptor, data, size);
        break;
    case 3:
        fuzz_request(&credex__v1__store_resolve_request__descriptor, data, size);
        break;
    case 4: {
        char *tok = malloc(size + 1), id[STORE_ID_BUF];
        int64_t ms;
        memcpy(tok, data, size);
        tok[size] = '\0';
        if (store_cursor_decode(tok, &ms, id) && (ms < 0 || strlen(id) != STORE_ID_LEN))
            abort();
        free(tok);
        break;
    }
    case 5:
        fuzz_request(&credex__v1__store_update_secret_request__descriptor, data, size);
        break;
    default:
        fuzz_request(&credex__v1__store_append_audit_event_request__descriptor, data, size);
        break;
    }
    return 0;
}
