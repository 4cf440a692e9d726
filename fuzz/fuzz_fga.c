/* Fuzz target: OpenFGA's answers (common/fga), the policy engine's responses that every
 * authorization decision is read from. The first byte picks the answer kind
 * (modulo 4, so that the printable seeds of fuzz_driver.c reach every kind). */
#include <stdint.h>
#include <stdlib.h>

#include "common/fga/cx_fga.h"

const char *const fuzz_seeds[] = {
    "\x04{\"allowed\":true,\"resolution\":\"\"}",
    "\x01{\"tuples\":[{\"key\":{\"user\":\"user:a\",\"relation\":\"owner\",\"object\":"
    "\"secret_ref:s\"},\"timestamp\":\"2026-01-01T00:00:00Z\"}],\"continuation_token\":\"abc\"}",
    "\x02{\"objects\":[\"secret_ref:a\",\"team:b\",\"secret_ref:\"]}",
    "\x03{\"changes\":[{\"tuple_key\":{\"user\":\"user:a\",\"relation\":\"user\",\"object\":"
    "\"secret_ref:s\"},\"operation\":\"TUPLE_OPERATION_DELETE\"}],\"continuation_token\":\"x\"}",
    NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cx_error_t err;
    bool ok = cx_fga_decode_answer((cx_fga_answer_t)(data[0] % 4), (const char *)data + 1, size - 1,
                                   &err);
    /* A refusal always says why, in the taxonomy's fail-closed code or a resource limit. */
    if (!ok && err.code != CX_ERR_UNAVAILABLE && err.code != CX_ERR_RESOURCE_EXHAUSTED &&
        err.code != CX_ERR_INTERNAL)
        abort();
    return 0;
}
