/* Fuzz target: AWS STS answers to AssumeRoleWithWebIdentity as keywrap's aws-kms provider reads
 * them (keywrap_aws_sts_parse, services/keywrap), and the KMS error mapping over the same bytes
 * read as an error __type. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/keywrap/keywrap_aws.h"

static void check(bool ok)
{
    if (!ok)
        abort();
}

/* A value of the answer: non-empty, of the characters AWS uses, and found in the input. */
static void check_value(const char *v, const uint8_t *data, size_t size)
{
    size_t n = strlen(v);
    check(n > 0 && strpbrk(v, "<>&\"' \t\r\n") == NULL);
    check(memmem(data, size, v, n) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024)
        return 0;
    keywrap_aws_creds_t c;
    memset(&c, 0x5a, sizeof(c));
    cx_error_t err;
    cx_error_clear(&err);
    if (keywrap_aws_sts_parse((const char *)data, size, &c, &err)) {
        check(err.code == CX_OK);
        check_value(c.access_key_id, data, size);
        check_value(c.secret_access_key, data, size);
        check_value(c.session_token, data, size);
        check(c.expires_ms >= 0);
    } else {
        /* Refused: an outage for the caller (fail closed), the output untouched. */
        check(err.code == CX_ERR_UNAVAILABLE && err.message[0] != '\0');
        check(c.access_key_id[0] == 0x5a && c.session_token[0] == 0x5a);
    }
    /* The error mapping: total, and never "retry" together with "our credentials refused". */
    char *type = malloc(size + 1);
    check(type != NULL);
    memcpy(type, data, size);
    type[size] = '\0';
    bool retry = false, auth = false;
    cx_code_t code = keywrap_aws_error_code(400, type, &retry, &auth);
    check(code == CX_ERR_INTEGRITY || code == CX_ERR_FAILED_PRECONDITION ||
          code == CX_ERR_UNAVAILABLE);
    check(!(retry && auth));
    check(!auth || code == CX_ERR_UNAVAILABLE);
    free(type);
    return 0;
}
