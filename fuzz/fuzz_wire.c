/*
 * Fuzz target: the request contract (common/contract). The first byte picks a request type
 * (modulo 8, '0'..'7' in the corpus: types[] below), the rest is its wire form. Invariants: the
 * wire check and the message walk never crash; a message that passes the wire check and unpacks
 * packs again into bytes that pass it too (no string protobuf-c builds can hold a NUL or invalid
 * UTF-8 the check let through).
 */
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/store.pb-c.h"

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
