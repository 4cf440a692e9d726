/*
 * credexctl output: enum names and times for the human-readable form; for --json, the reply in
 * the canonical JSON mapping (common/pjson: the shape grpcurl prints, and the edge serves).
 * Output that may hold material (retrieve) goes to the stdout file descriptor directly, so no
 * stdio buffer keeps a copy, and every buffer it was formatted in is wiped.
 */
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/pjson/pjson.h"

#include "tools/credexctl/credexctl.h"

/* The prefix every value of a credex enum shares: the name of value 0 minus "UNSPECIFIED". */
static size_t enum_prefix_len(const ProtobufCEnumDescriptor *desc)
{
    const ProtobufCEnumValue *zero = protobuf_c_enum_descriptor_get_value(desc, 0);
    if (zero == NULL)
        return 0;
    size_t n = strlen(zero->name), s = strlen("UNSPECIFIED");
    if (n >= s && strcmp(zero->name + n - s, "UNSPECIFIED") == 0)
        return n - s;
    return 0;
}

const char *cli_enum_name(const ProtobufCEnumDescriptor *desc, int value, char *buf, size_t bufsz)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(desc, value);
    if (v == NULL) {
        snprintf(buf, bufsz, "unknown(%d)", value);
        return buf;
    }
    const char *name = v->name + enum_prefix_len(desc);
    size_t i = 0;
    for (; name[i] && i + 1 < bufsz; i++)
        buf[i] = (char)tolower((unsigned char)name[i]);
    buf[i] = '\0';
    return buf;
}

bool cli_enum_value(const ProtobufCEnumDescriptor *desc, const char *name, int *value)
{
    char buf[96];
    for (unsigned i = 0; i < desc->n_values; i++) {
        int v = desc->values[i].value;
        if (v == 0)
            continue;
        if (strcmp(cli_enum_name(desc, v, buf, sizeof buf), name) == 0) {
            *value = v;
            return true;
        }
    }
    return false;
}

const char *cli_time(int64_t ms, char *buf, size_t bufsz)
{
    if (ms <= 0) {
        snprintf(buf, bufsz, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* ---- JSON and raw output ------------------------------------------------------------------ */

bool cli_write_stdout(const void *data, size_t len)
{
    const char *p = data;
    if (fflush(stdout) != 0)
        return false;
    while (len > 0) {
        ssize_t w = write(STDOUT_FILENO, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

int cli_print_message(const ProtobufCMessage *msg)
{
    char *text = NULL;
    size_t len = 0;
    cx_error_t err;
    pjson_options_t o = {.indent = 2}; /* grpcurl's layout */
    if (!pjson_encode(&text, &len, msg, &o, &err))
        return cli_fail(&err);
    bool ok = cli_write_stdout(text, len) && cli_write_stdout("\n", 1);
    pjson_text_free(text, len);
    if (!ok) {
        fprintf(stderr, "credexctl: internal: could not write to stdout\n");
        return CLI_FAIL;
    }
    return CLI_OK;
}
