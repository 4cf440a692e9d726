/* Fuzz target: the proto3 JSON mapping (common/pjson), which reads request bodies from the HTTP
 * edge. Each input is read as several message types (credex.v1 requests and replies with maps,
 * bytes, enums, int64; a oneof; pjson's test types with every scalar, map key kind and proto2
 * presence). Whatever is accepted must write JSON that reads back to the same message (same
 * packed bytes) and writes the same JSON again: the mapping is stable. Refusals must carry a
 * code of the taxonomy's input errors. Messages use malloc/free, so ASan sees any leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson.h"
#include "fuzz/fuzz_pjson_types.h"

static uint8_t *packed(const ProtobufCMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(*n + 1);
    if (p == NULL || protobuf_c_message_pack(m, p) != *n)
        abort();
    return p;
}

/* m -> text -> message -> text -> message: both texts and both messages must be equal (the
 * message read from the input may differ from the first one read back only in the order of
 * its map entries, which the output sorts). */
static void round_trip(const ProtobufCMessage *m, unsigned flags, unsigned indent)
{
    pjson_options_t o = {.flags = flags, .indent = indent};
    char *t1 = NULL, *t2 = NULL;
    size_t n1 = 0, n2 = 0, p1 = 0, p2 = 0;
    ProtobufCMessage *b1 = NULL, *b2 = NULL;
    cx_error_t err;
    if (!pjson_encode(&t1, &n1, m, &o, &err) ||
        !pjson_decode(&b1, m->descriptor, t1, n1, NULL, &o, &err) ||
        !pjson_encode(&t2, &n2, b1, &o, &err) ||
        !pjson_decode(&b2, m->descriptor, t2, n2, NULL, &o, &err))
        abort(); /* what was read must write, and what was written must read */
    uint8_t *a = packed(b1, &p1), *b = packed(b2, &p2);
    if (n1 != n2 || strcmp(t1, t2) != 0 || p1 != p2 || memcmp(a, b, p1) != 0 ||
        protobuf_c_message_get_packed_size(m) != p1)
        abort();
    free(a);
    free(b);
    pjson_text_free(t1, n1);
    pjson_text_free(t2, n2);
    pjson_message_free(b1, NULL);
    pjson_message_free(b2, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < FUZZ_PJSON_NTYPES; i++) {
        ProtobufCMessage *m = NULL;
        cx_error_t err;
        pjson_options_t o = {.flags = size % 2 ? PJSON_IGNORE_UNKNOWN : 0, .max_depth = 12};
        if (!pjson_decode(&m, fuzz_pjson_types[i], (const char *)data, size, NULL, &o, &err)) {
            if (m != NULL ||
                (err.code != CX_ERR_INVALID_ARGUMENT && err.code != CX_ERR_RESOURCE_EXHAUSTED))
                abort();
            continue;
        }
        round_trip(m, 0, 0);
        round_trip(m, PJSON_PROTO_NAMES, 2);
        round_trip(m, PJSON_EMIT_DEFAULTS, 0);
        pjson_message_free(m, NULL);
    }
    return 0;
}
