/*
 * pjson, message -> JSON: a jansson tree built from the descriptors, then written with
 * json_dumpb into a buffer of ours (jansson's own dumps grow a buffer through copies it frees
 * unwiped, and the text holds the base64 of bytes fields).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson_internal.h"

typedef struct enc {
    pj_opts_t o;
    cx_error_t *err;
    pj_path_t path;
} enc_t;

static json_t *enc_message(enc_t *e, const ProtobufCMessage *m, unsigned depth);

static json_t *oom(enc_t *e)
{
    pj_fail(e->err, CX_ERR_RESOURCE_EXHAUSTED, &e->path, "out of memory");
    return NULL;
}

static json_t *enc_double(enc_t *e, double d)
{
    json_t *v = isnan(d)   ? json_string("NaN")
                : isinf(d) ? json_string(d > 0 ? "Infinity" : "-Infinity")
                           : json_real(d);
    return v != NULL ? v : oom(e);
}

static json_t *enc_bytes(enc_t *e, const ProtobufCBinaryData *b)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (b->len > (SIZE_MAX - 4) / 4 * 3)
        return oom(e);
    size_t outlen = (b->len + 2) / 3 * 4;
    char *out = malloc(outlen + 1), *o = out;
    if (out == NULL)
        return oom(e);
    const unsigned char *in = b->data;
    size_t i = 0;
    for (; i + 2 < b->len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        *o++ = tbl[v >> 18 & 63];
        *o++ = tbl[v >> 12 & 63];
        *o++ = tbl[v >> 6 & 63];
        *o++ = tbl[v & 63];
    }
    if (i < b->len) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < b->len ? (unsigned)in[i + 1] << 8 : 0);
        *o++ = tbl[v >> 18 & 63];
        *o++ = tbl[v >> 12 & 63];
        *o++ = i + 1 < b->len ? tbl[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    json_t *s = json_stringn_nocheck(out, outlen);
    pj_wipe(out, outlen);
    free(out);
    return s != NULL ? s : oom(e);
}

static json_t *enc_string(enc_t *e, const char *s)
{
    if (s == NULL)
        s = "";
    size_t n = strlen(s);
    if (!pj_utf8_ok(s, n)) {
        pj_fail(e->err, CX_ERR_INVALID_ARGUMENT, &e->path, "string is not valid UTF-8");
        return NULL;
    }
    json_t *v = json_stringn_nocheck(s, n);
    return v != NULL ? v : oom(e);
}

/* One value of field f stored at member, inside a container at depth. */
static json_t *enc_value(enc_t *e, const ProtobufCFieldDescriptor *f, const void *member,
                         unsigned depth)
{
    char num[32];
    json_t *v = NULL;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        v = json_integer(*(const int32_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        v = json_integer(*(const uint32_t *)member);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)member);
        v = json_string(num);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)member);
        v = json_string(num);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        return enc_double(e, *(const float *)member);
    case PROTOBUF_C_TYPE_DOUBLE:
        return enc_double(e, *(const double *)member);
    case PROTOBUF_C_TYPE_BOOL:
        v = json_boolean(*(const protobuf_c_boolean *)member);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int n = *(const int *)member;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, n);
        v = ev != NULL ? json_string(ev->name) : json_integer(n);
        break;
    }
    case PROTOBUF_C_TYPE_STRING:
        return enc_string(e, *(const char *const *)member);
    case PROTOBUF_C_TYPE_BYTES:
        return enc_bytes(e, member);
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(const ProtobufCMessage *const *)member;
        if (m != NULL)
            return enc_message(e, m, depth + 1);
        v = json_null();
        break;
    }
    }
    return v != NULL ? v : oom(e);
}

static json_t *enc_array(enc_t *e, const ProtobufCFieldDescriptor *f, const char *arr, size_t n,
                         unsigned depth)
{
    if (depth + 1 > e->o.max_depth) {
        pj_fail(e->err, CX_ERR_INVALID_ARGUMENT, &e->path, "nesting deeper than %u",
                e->o.max_depth);
        return NULL;
    }
    json_t *a = json_array();
    if (a == NULL)
        return oom(e);
    size_t size = pj_elem_size(f->type);
    for (size_t i = 0; i < n; i++) {
        size_t at = pj_path_index(&e->path, i);
        json_t *v = enc_value(e, f, arr + i * size, depth + 1);
        pj_path_pop(&e->path, at);
        if (v == NULL || json_array_append_new(a, v) != 0) {
            pjson_value_free(a);
            return v == NULL ? NULL : oom(e);
        }
    }
    return a;
}

/* ---- maps: an object whose keys are sorted as protojson sorts them ----------------------- */

typedef struct map_item {
    const ProtobufCMessage *entry;
    size_t index; /* wire order: the last of equal keys wins, as in a parsed message */
} map_item_t;

static int key_cmp(const void *pa, const void *pb, void *ctx)
{
    const map_item_t *a = pa, *b = pb;
    const ProtobufCFieldDescriptor *k = ctx;
    const char *ma = (const char *)a->entry + k->offset, *mb = (const char *)b->entry + k->offset;
    int c = 0;
    switch (k->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *sa = *(const char *const *)ma, *sb = *(const char *const *)mb;
        c = strcmp(sa ? sa : "", sb ? sb : "");
        break;
    }
    case PROTOBUF_C_TYPE_BOOL:
        c = (*(const protobuf_c_boolean *)ma != 0) - (*(const protobuf_c_boolean *)mb != 0);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t x = *(const int64_t *)ma, y = *(const int64_t *)mb;
        c = (x > y) - (x < y);
        break;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t x = *(const uint64_t *)ma, y = *(const uint64_t *)mb;
        c = (x > y) - (x < y);
        break;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint32_t x = *(const uint32_t *)ma, y = *(const uint32_t *)mb;
        c = (x > y) - (x < y);
        break;
    }
    default: {
        int32_t x = *(const int32_t *)ma, y = *(const int32_t *)mb;
        c = (x > y) - (x < y);
        break;
    }
    }
    return c != 0 ? c : (a->index > b->index) - (a->index < b->index);
}

/* The key of a map entry as JSON object key text into buf (string keys: the string itself). */
static const char *key_text(const ProtobufCFieldDescriptor *k, const ProtobufCMessage *entry,
                            char *buf, size_t bufsz)
{
    const char *m = (const char *)entry + k->offset;
    switch (k->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)m;
        return s ? s : "";
    }
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)m ? "true" : "false";
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, bufsz, "%" PRId64, *(const int64_t *)m);
        return buf;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, bufsz, "%" PRIu64, *(const uint64_t *)m);
        return buf;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, bufsz, "%" PRIu32, *(const uint32_t *)m);
        return buf;
    default:
        snprintf(buf, bufsz, "%" PRId32, *(const int32_t *)m);
        return buf;
    }
}

static json_t *enc_map(enc_t *e, const ProtobufCMessageDescriptor *ed,
                       const ProtobufCMessage *const *arr, size_t n, unsigned depth)
{
    if (depth + 1 > e->o.max_depth) {
        pj_fail(e->err, CX_ERR_INVALID_ARGUMENT, &e->path, "nesting deeper than %u",
                e->o.max_depth);
        return NULL;
    }
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    json_t *obj = json_object();
    map_item_t *items = n > 0 ? calloc(n, sizeof *items) : NULL;
    if (obj == NULL || (n > 0 && items == NULL)) {
        json_decref(obj);
        free(items);
        return oom(e);
    }
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (arr[i] != NULL)
            items[count++] = (map_item_t){arr[i], i};
    if (count > 1)
        qsort_r(items, count, sizeof *items, key_cmp, (void *)kf);
    for (size_t i = 0; i < count; i++) {
        char kb[32];
        const char *key = key_text(kf, items[i].entry, kb, sizeof kb);
        if (!pj_utf8_ok(key, strlen(key))) {
            pj_fail(e->err, CX_ERR_INVALID_ARGUMENT, &e->path, "a map key is not valid UTF-8");
            goto fail;
        }
        const char *member = (const char *)items[i].entry + vf->offset;
        json_t *v;
        /* An entry without a value means the value's default: {} for a message, never null. */
        if (vf->type == PROTOBUF_C_TYPE_MESSAGE && *(const void *const *)member == NULL) {
            if ((v = json_object()) == NULL)
                oom(e);
        } else {
            size_t at = pj_path_suffix(&e->path, " (a map value)");
            v = enc_value(e, vf, member, depth + 1);
            pj_path_pop(&e->path, at);
        }
        if (v == NULL)
            goto fail;
        if (json_object_set_new_nocheck(obj, key, v) != 0) {
            oom(e);
            goto fail;
        }
    }
    free(items);
    return obj;
fail:
    free(items);
    pjson_value_free(obj);
    return NULL;
}

/* ---- messages --------------------------------------------------------------------------- */

static json_t *enc_field(enc_t *e, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                         unsigned depth)
{
    const char *member = (const char *)m + f->offset;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return enc_value(e, f, member, depth);
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    const char *arr = *(const char *const *)member;
    if (arr == NULL)
        n = 0;
    const ProtobufCMessageDescriptor *ed = pjson_map_entry(m->descriptor, f);
    if (ed != NULL)
        return enc_map(e, ed, (const ProtobufCMessage *const *)arr, n, depth);
    return enc_array(e, f, arr, n, depth);
}

static json_t *enc_message(enc_t *e, const ProtobufCMessage *m, unsigned depth)
{
    if (depth > e->o.max_depth) {
        pj_fail(e->err, CX_ERR_INVALID_ARGUMENT, &e->path, "nesting deeper than %u",
                e->o.max_depth);
        return NULL;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *obj = json_object();
    if (obj == NULL)
        return oom(e);
    bool proto_names = (e->o.flags & PJSON_PROTO_NAMES) != 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool present;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            present = *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
        else if (f->label == PROTOBUF_C_LABEL_REPEATED)
            present = *(const size_t *)((const char *)m + f->quantifier_offset) > 0;
        else
            present = pj_present(m, f);
        if (!present &&
            (!(e->o.flags & PJSON_EMIT_DEFAULTS) || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)))
            continue;
        char name[128];
        if (proto_names)
            snprintf(name, sizeof name, "%s", f->name);
        else
            pjson_json_name(f, name, sizeof name);
        size_t at = pj_path_field(&e->path, f, proto_names);
        /* An absent field with explicit presence is null, which reads back as absent. */
        json_t *v = !present && f->label == PROTOBUF_C_LABEL_OPTIONAL ? json_null()
                                                                      : enc_field(e, m, f, depth);
        pj_path_pop(&e->path, at);
        if (v == NULL || json_object_set_new_nocheck(obj, name, v) != 0) {
            pjson_value_free(obj);
            return v == NULL ? NULL : oom(e);
        }
    }
    return obj;
}

bool pjson_to_value(json_t **out, const ProtobufCMessage *msg, const pjson_options_t *opts,
                    cx_error_t *err)
{
    enc_t e = {.o = pj_opts(opts), .err = err};
    json_t *v = enc_message(&e, msg, 1);
    if (v == NULL)
        return false;
    *out = v;
    return true;
}

bool pjson_encode(char **out, size_t *outlen, const ProtobufCMessage *msg,
                  const pjson_options_t *opts, cx_error_t *err)
{
    pj_opts_t o = pj_opts(opts);
    json_t *v = NULL;
    if (!pjson_to_value(&v, msg, opts, err))
        return false;
    size_t flags = o.indent > 0 ? JSON_INDENT(o.indent) : JSON_COMPACT;
    /* One pass into a buffer that fits most replies; a larger text is written again into one
     * of its exact size (json_dumpb reports the size it needed). */
    size_t cap = 65536, need = 0;
    char *buf = malloc(cap + 1);
    if (buf != NULL && (need = json_dumpb(v, buf, cap, flags)) > cap) {
        pjson_text_free(buf, cap);
        cap = need;
        buf = malloc(cap + 1);
        if (buf != NULL && json_dumpb(v, buf, cap, flags) != need)
            need = 0;
    }
    if (buf == NULL || need == 0) {
        pjson_text_free(buf, cap);
        pjson_value_free(v);
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "out of memory writing JSON");
    }
    buf[need] = '\0';
    pjson_value_free(v);
    *out = buf;
    *outlen = need;
    return true;
}
