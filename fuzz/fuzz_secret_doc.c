/*
 * Fuzz target: the decoder of stored secret metadata documents (store_ref_decode), outside
 * input to the store (anyone who can write to the database controls them). The input forms are
 * fuzz_bson.h's: '!' edits of the valid document CreateSecret writes, '{' extended JSON, else
 * raw BSON.
 * The decoder must not crash or leak, must refuse with integrity_error (leaving its output
 * alone), and when it accepts, must only answer what store itself could have written.
 */
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "fuzz/fuzz_bson.h"
#include "services/store/store_internal.h"

/* 'B' secret_id, 'C' owner_type, 'D' owner_id, ... in the edit lines. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_bson_target_t target = {fuzz_base, fuzz_fields, FUZZ_NFIELDS, fuzz_decode};
    fuzz_bson_run(&target, data, size);
    return 0;
}
