/*
 * Fuzz target: the store's decoders of outside input other than metadata and audit documents
 * (fuzz_secret_doc, fuzz_audit_doc). The first byte (modulo 6; '0'..'5' in the corpus) picks:
 *  0  a stored payload document (BSON read back from the database, which an attacker with
 *     database access controls), in one of fuzz_bson.h's forms: '!' edits of a payload the
 *     harness sealed itself, '{' extended JSON, else raw BSON. store_payload_decode, then
 *     store_envelope_open under the sealing key and binding;
 *  1-4  requests from peers (protobuf wire): the contract, then store_validate_create,
 *     _resolve, _update and _audit_event;
 *  5  a page cursor (store_cursor_decode).
 * Invariants (abort on violation): a payload refusal is integrity_error; an accepted payload
 * is within the limits and (when it names its creator, as store always writes it) encodes
 * into a document that decodes to the same payload; it opens
 * iff its ids, version, nonce, ciphertext and tag are the sealed ones, and then to the sealed
 * value; an accepted create (contract and store policy) has a value and an owner; an accepted
 * cursor is well-formed.
 */
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "fuzz/fuzz_bson.h"
#include "services/store/store_internal.h"

/* 'B' payload_id, 'C' secret_id, 'D' version, ... in the edit lines. */
static const char *const fields[] = {
    "payload_id",  "secret_id", "version",    "alg", "key_provider", "key_id",     "key_version",
    "wrapped_key", "nonce",     "ciphertext", "tag", "created_by",   "created_at", "_id"};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

static const char value[] = "demo-value-0123456789abc";

static struct {
    cx_secret_t *dek;
    store_bind_t bind;
    bson_t doc;        /* the sealed payload's document */
    store_payload_t p; /* decoded from doc */
} s;

static void fuzz_init(void)
{
    static const unsigned char key[CX_AES_KEY_LEN] = {7, 7, 7};
    static const uint8_t wrapped[61] = {1};
    static unsigned char nonce[CX_GCM_NONCE_LEN], ct[sizeof(value) - 1], tag[CX_GCM_TAG_LEN];
    s.dek = cx_secret_from(key, sizeof(key));
    s.bind = (store_bind_t){.secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H",
                            .version = 3,
                            .owner_type = "user",
                            .owner_id = "alice",
                            .kind = "api_key",
                            .payload_id = "pay_0123456789ABCDEFGHJKMNPQRS"};
    if (!store_envelope_seal(s.dek, &s.bind, (const unsigned char *)value, sizeof(ct), nonce, ct,
                             tag, NULL))
        abort();
    store_payload_t p = {.payload_id = s.bind.payload_id,
                         .secret_id = s.bind.secret_id,
                         .version = s.bind.version,
                         .key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK,
                         .key_id = "alias/credex-dev",
                         .key_version = "1",
                         .wrapped = wrapped,
                         .wrapped_len = sizeof(wrapped),
                         .nonce = nonce,
                         .ct = ct,
                         .ct_len = sizeof(ct),
                         .tag = tag,
                         .created_by = "alice",
                         .created_at_ms = 1700000000000};
    store_payload_encode(&p, &s.doc);
    if (!store_payload_decode(&s.doc, &s.p, NULL))
        abort();
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_payload(const store_payload_t *a, const store_payload_t *b)
{
    return same_str(a->payload_id, b->payload_id) && same_str(a->secret_id, b->secret_id) &&
           a->version == b->version && a->key_provider == b->key_provider &&
           same_str(a->key_id, b->key_id) && same_str(a->key_version, b->key_version) &&
           a->wrapped_len == b->wrapped_len &&
           memcmp(a->wrapped, b->wrapped, a->wrapped_len) == 0 &&
           memcmp(a->nonce, b->nonce, CX_GCM_NONCE_LEN) == 0 && a->ct_len == b->ct_len &&
           memcmp(a->ct, b->ct, a->ct_len) == 0 && memcmp(a->tag, b->tag, CX_GCM_TAG_LEN) == 0 &&
           same_str(a->created_by, b->created_by) && a->created_at_ms == b->created_at_ms;
}

static void fuzz_payload(const uint8_t *data, size_t size)
{
    bson_t doc;
    store_payload_t p;
    cx_error_t err;
    if (!fuzz_bson_input(data, size, &s.doc, fields, NFIELDS, &doc))
        return;
    if (!store_payload_decode(&doc, &p, &err)) {
        if (err.code != CX_ERR_INTEGRITY)
            abort();
        bson_destroy(&doc);
        return;
    }
    if (p.ct_len < 1 || p.ct_len > STORE_VALUE_MAX || p.wrapped_len < 1 ||
        p.wrapped_len > STORE_WRAPPED_MAX || p.version < 1)
        abort();
    /* The encoder writes what store writes, created_by included (it has no absent form). */
    if (p.created_by != NULL) {
        bson_t again;
        store_payload_t p2;
        store_payload_encode(&p, &again);
        if (!store_payload_decode(&again, &p2, &err) || !same_payload(&p, &p2))
            abort();
        bson_destroy(&again);
    }
    bool sealed = strcmp(p.secret_id, s.p.secret_id) == 0 &&
                  strcmp(p.payload_id, s.p.payload_id) == 0 && p.version == s.p.version &&
                  p.ct_len == s.p.ct_len && memcmp(p.ct, s.p.ct, p.ct_len) == 0 &&
                  memcmp(p.nonce, s.p.nonce, CX_GCM_NONCE_LEN) == 0 &&
                  memcmp(p.tag, s.p.tag, CX_GCM_TAG_LEN) == 0;
    cx_secret_t *plain = store_envelope_open(s.dek, &s.bind, &p, &err);
    /* Forging a GCM tag by chance does not happen: anything else opening means the check is
     * broken; the sealed payload not opening means the decoder damaged it. */
    if (sealed != (plain != NULL) || (!plain && err.code != CX_ERR_INTEGRITY) ||
        (plain && (cx_secret_len(plain) != sizeof(value) - 1 ||
                   memcmp(cx_secret_bytes(plain), value, sizeof(value) - 1) != 0)))
        abort();
    cx_secret_free(plain);
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

static void fuzz_cursor(const uint8_t *data, size_t size)
{
    char *tok = fuzz_strndup(data, size), id[STORE_ID_BUF];
    int64_t ms;
    if (store_cursor_decode(tok, &ms, id) && (ms < 0 || strlen(id) != STORE_ID_LEN))
        abort();
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ProtobufCMessageDescriptor *const requests[] = {
        &credex__v1__store_create_secret_request__descriptor,
        &credex__v1__store_resolve_request__descriptor,
        &credex__v1__store_update_secret_request__descriptor,
        &credex__v1__store_append_audit_event_request__descriptor};
    if (s.dek == NULL)
        fuzz_init();
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 6;
    if (mode == 0)
        fuzz_payload(data + 1, size - 1);
    else if (mode == 5)
        fuzz_cursor(data + 1, size - 1);
    else
        fuzz_request(requests[mode - 1], data + 1, size - 1);
    return 0;
}
