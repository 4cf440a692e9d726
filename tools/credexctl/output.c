/*
 * credexctl output: enum names, times, and a generic protobuf-c -> JSON rendering for --json.
 * Bytes fields are never rendered: the only command that outputs material is `retrieve`, which
 * writes the raw value itself.
 */
#include <ctype.h>
#include <string.h>
#include <time.h>

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

/* ---- JSON ----------------------------------------------------------------------------- */

static json_t *value_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[96];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return json_string(cli_enum_name(f->descriptor, *(const int *)p, buf, sizeof buf));
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? cli_message_json(m) : json_null();
    }
    case PROTOBUF_C_TYPE_BYTES:
    default:
        return NULL;
    }
}

static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
    return d->n_fields == 2 && strcmp(d->fields[0].name, "key") == 0 &&
           strcmp(d->fields[1].name, "value") == 0 && strstr(d->name, "Entry") != NULL;
}

json_t *cli_message_json(const ProtobufCMessage *msg)
{
    json_t *obj = json_object();
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_BYTES)
            continue;
        const char *base = (const char *)msg + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            const char *arr = *(char *const *)base;
            size_t elem =
                f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE
                    ? sizeof(void *)
                : f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_UINT64 ||
                        f->type == PROTOBUF_C_TYPE_SINT64 || f->type == PROTOBUF_C_TYPE_FIXED64 ||
                        f->type == PROTOBUF_C_TYPE_SFIXED64 || f->type == PROTOBUF_C_TYPE_DOUBLE
                    ? 8
                : f->type == PROTOBUF_C_TYPE_BOOL ? sizeof(protobuf_c_boolean)
                                                  : 4;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(f->descriptor)) {
                json_t *map = json_object();
                for (size_t k = 0; k < n; k++) {
                    const ProtobufCMessage *e = ((ProtobufCMessage *const *)arr)[k];
                    json_t *kv = cli_message_json(e);
                    const char *key = json_string_value(json_object_get(kv, "key"));
                    json_t *val = json_object_get(kv, "value");
                    if (key != NULL && val != NULL)
                        json_object_set(map, key, val);
                    json_decref(kv);
                }
                json_object_set_new(obj, f->name, map);
                continue;
            }
            json_t *list = json_array();
            for (size_t k = 0; k < n; k++) {
                json_t *v = value_json(f, arr + k * elem);
                if (v != NULL)
                    json_array_append_new(list, v);
            }
            json_object_set_new(obj, f->name, list);
            continue;
        }
        json_t *v = value_json(f, base);
        if (v != NULL)
            json_object_set_new(obj, f->name, v);
    }
    return obj;
}

void cli_json_print(json_t *v)
{
    if (v == NULL)
        return;
    json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(v);
}
