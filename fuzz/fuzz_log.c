/* Fuzz target: log line formatting, escaping and redaction with hostile values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size + 1);
    memcpy(v, data, size);
    v[size] = '\0';
    char line[CX_LOG_LINE_MAX];
    cx_log_field_t f[3] = {CX_LOG_STR("value", v), CX_LOG_INT("n", (int64_t)size),
                           CX_LOG_STR("again", v)};
    size_t n = cx_log_format(line, sizeof(line), CX_LOG_ERROR, v, "fuzz.event", f, 3);
    /* Invariants: one line, NUL-terminated, ends with a newline, no raw control bytes. */
    if (n >= sizeof(line) || line[n] != '\0' || n == 0 || line[n - 1] != '\n')
        abort();
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)line[i] < 0x20)
            abort();
    (void)cx_log_value_is_sensitive(v);
    free(v);
    return 0;
}
