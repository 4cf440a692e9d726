/* Request validation: the limits of common.proto, checked before anything goes downstream. */
#include <string.h>

#include "services/gateway/gateway_internal.h"

#define VALUE_MAX        65536
#define DISPLAY_NAME_MAX 128
#define DESCRIPTION_MAX  1024
#define USES_MAX         16
#define CONTEXT_MAX      128

bool gateway_valid_secret_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool gateway_valid_use(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == ':' || c == '-'))
            return false;
    }
    return true;
}

bool gateway_validate_allowed_uses(char **uses, size_t n, cx_error_t *err)
{
    if (n > USES_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "at most %d allowed_uses", USES_MAX);
    for (size_t i = 0; i < n; i++)
        if (!gateway_valid_use(uses[i]))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "allowed_uses entries are 1..64 chars of [a-z0-9_.:-]");
    return true;
}

bool gateway_validate_value(size_t len, cx_error_t *err)
{
    if (len == 0 || len > VALUE_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "value must be 1..%d bytes", VALUE_MAX);
    return true;
}

/* Characters, not bytes: the limits of common.proto count UTF-8 code points. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

bool gateway_validate_display_name(const char *s, cx_error_t *err)
{
    size_t n = s ? utf8_chars(s) : 0;
    if (n == 0 || n > DISPLAY_NAME_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "display_name must be 1..%d chars",
                            DISPLAY_NAME_MAX);
    return true;
}

bool gateway_validate_description(const char *s, cx_error_t *err)
{
    if (s && utf8_chars(s) > DESCRIPTION_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "description must be at most %d chars",
                            DESCRIPTION_MAX);
    return true;
}

static bool context_field_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= CONTEXT_MAX;
}

bool gateway_validate_use_context(const char *intended_use, const Credex__V1__ResourceContext *rc,
                                  cx_error_t *err)
{
    if (!intended_use || !*intended_use)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "intended_use is required");
    if (!gateway_valid_use(intended_use))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "intended_use must be 1..64 chars of [a-z0-9_.:-]");
    if (!rc || !context_field_ok(rc->resource_type) || !context_field_ok(rc->resource_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "resource_context with resource_type and resource_id (1..%d chars) "
                            "is required",
                            CONTEXT_MAX);
    if (rc->n_attributes > 16)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "resource_context has more than 16 attributes");
    return true;
}
