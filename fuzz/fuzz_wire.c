/*
 * Fuzz target: the request contract (common/contract). The first byte picks a request type,
 * the rest is its wire form. Invariants: the wire check and the message walk never crash; a
 * message that passes the wire check and unpacks packs again into bytes that pass it too (no
 * string protobuf-c builds can hold a NUL or invalid UTF-8 the check let through).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"

/* Printable seeds (the driver measures them with strlen): wire forms without NUL bytes. */
const char *const fuzz_seeds[] = {
    "\x01\x0a\x0bsec_ABCDEFG",                                      /* GetSecretRequest */
    "\x02\x0a\x03sec\x12\x04mcp_\x1a\x0c\x0a\x03mcp\x12\x05github", /* RetrieveRequest */
    "\x03\x0a\x01k\x18\x01\x22\x02nm\x3a\x01u\x42\x01v",            /* CreateSecretRequest */
    "\x04\x0a\x02\x08\x01\x12\x03sec",                              /* StoreResolveRequest */
    NULL};

static const ProtobufCMessageDescriptor *const types[] = {
    &credex__v1__store_append_audit_event_request__descriptor,
    &credex__v1__get_secret_request__descriptor,
    &credex__v1__retrieve_request__descriptor,
    &credex__v1__create_secret_request__descriptor,
    &credex__v1__store_resolve_request__descriptor,
    &credex__v1__store_list_secrets_request__descriptor,
    &credex__v1__update_secret_request__descriptor,
    &credex__v1__share_secret_request__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const ProtobufCMessageDescriptor *d = types[data[0] % (sizeof(types) / sizeof(types[0]))];
    data++, size--;
    cx_error_t err;
    if (!cx_contract_wire_check(d, data, size, &err))
        return 0;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size, data);
    if (!m)
        return 0;
    (void)cx_contract_check(m, &err);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *again = malloc(n ? n : 1);
    if (!again || protobuf_c_message_pack(m, again) != n ||
        !cx_contract_wire_check(d, again, n, &err))
        abort();
    free(again);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
