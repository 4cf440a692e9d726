/*
 * pjson: what encoding and decoding share (field names, map entries, presence, paths in error
 * messages, wiping) and the public helpers for generators. See pjson.h for the mapping.
 */
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson_internal.h"

/* ---- names ------------------------------------------------------------------------------- */

size_t pjson_json_name(const ProtobufCFieldDescriptor *field, char *buf, size_t bufsz)
{
    size_t n = 0;
    bool upper = false;
    if (bufsz == 0)
        return 0;
    for (const char *c = field->name; *c; c++) {
        if (*c == '_') {
            upper = true;
            continue;
        }
        if (n + 1 >= bufsz) {
            buf[0] = '\0';
            return 0;
        }
        buf[n++] = upper && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        upper = false;
    }
    buf[n] = '\0';
    return n;
}

const ProtobufCMessageDescriptor *pjson_map_entry(const ProtobufCMessageDescriptor *msg,
                                                  const ProtobufCFieldDescriptor *field)
{
    if (field->label != PROTOBUF_C_LABEL_REPEATED || field->type != PROTOBUF_C_TYPE_MESSAGE)
        return NULL;
    const ProtobufCMessageDescriptor *e = field->descriptor;
    if (e == NULL || e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
        strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0 ||
        e->fields[0].label == PROTOBUF_C_LABEL_REPEATED ||
        e->fields[1].label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    /* protoc names the entry <FieldInCamelCase>Entry and nests it in the map's message. */
    char want[256];
    size_t n = 0, plen = strlen(msg->name);
    bool upper = true;
    if (plen + 2 > sizeof want)
        return NULL;
    memcpy(want, msg->name, plen);
    n = plen;
    want[n++] = '.';
    for (const char *c = field->name; *c; c++) {
        if (*c == '_') {
            upper = true;
            continue;
        }
        if (n + 7 >= sizeof want)
            return NULL;
        want[n++] = upper && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        upper = false;
    }
    memcpy(want + n, "Entry", 6);
    return strcmp(e->name, want) == 0 ? e : NULL;
}

/* ---- paths and errors ------------------------------------------------------------------- */

static size_t path_append(pj_path_t *p, const char *s, size_t n)
{
    size_t old = p->len;
    if (p->len + n + 1 > sizeof p->buf) {
        /* Too deep to name in full: mark the cut once; pj_path_pop restores the length. */
        if (p->len + 4 <= sizeof p->buf &&
            (p->len < 3 || memcmp(p->buf + p->len - 3, "...", 3) != 0)) {
            memcpy(p->buf + p->len, "...", 4);
            p->len += 3;
        }
        return old;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
    return old;
}

size_t pj_path_field(pj_path_t *p, const ProtobufCFieldDescriptor *f, bool proto_names)
{
    char name[130];
    size_t n = 0;
    if (p->len > 0)
        name[n++] = '.';
    if (proto_names) {
        int w = snprintf(name + n, sizeof name - n, "%s", f->name);
        n = w > 0 && (size_t)w < sizeof name - n ? n + (size_t)w : n;
    } else {
        n += pjson_json_name(f, name + n, sizeof name - n);
    }
    return path_append(p, name, n);
}

size_t pj_path_index(pj_path_t *p, size_t i)
{
    char s[32];
    int n = snprintf(s, sizeof s, "[%zu]", i);
    return path_append(p, s, (size_t)n);
}

size_t pj_path_suffix(pj_path_t *p, const char *s)
{
    return path_append(p, s, strlen(s));
}

void pj_path_pop(pj_path_t *p, size_t len)
{
    p->len = len;
    p->buf[len] = '\0';
}

bool pj_fail(cx_error_t *err, cx_code_t code, const pj_path_t *p, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p == NULL || p->len == 0)
        return cx_error_set(err, code, "%s", msg);
    return cx_error_set(err, code, "%s: %s", p->buf, msg);
}

/* ---- options, sizes, presence ----------------------------------------------------------- */

pj_opts_t pj_opts(const pjson_options_t *o)
{
    pj_opts_t r = {.max_depth = PJSON_DEFAULT_MAX_DEPTH, .max_bytes = PJSON_DEFAULT_MAX_BYTES};
    if (o == NULL)
        return r;
    r.flags = o->flags;
    r.indent = o->indent > PJSON_MAX_INDENT ? PJSON_MAX_INDENT : o->indent;
    if (o->max_depth != 0)
        r.max_depth = o->max_depth < PJSON_MAX_DEPTH ? o->max_depth : PJSON_MAX_DEPTH;
    if (o->max_bytes != 0)
        r.max_bytes = o->max_bytes;
    return r;
}

size_t pj_elem_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return sizeof(uint32_t);
    }
}

bool pj_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *member = (const char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED)
        return true;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const void *ptr = *(const void *const *)member;
            return ptr != NULL && ptr != f->default_value;
        }
        return *(const protobuf_c_boolean *)((const char *)m + f->quantifier_offset) != 0;
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)member != 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)member != 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)member != 0.0f;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)member != 0.0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        return s != NULL && s[0] != '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)member)->len != 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(const void *const *)member != NULL;
    default: /* 32-bit integers and enums */
        return *(const uint32_t *)member != 0;
    }
}

/* ---- text ------------------------------------------------------------------------------- */

bool pj_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c == 0)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t k;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= k)
            return false;
        for (size_t i = 1; i <= k; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += k + 1;
    }
    return true;
}

/* ---- wiping ----------------------------------------------------------------------------- */

void pj_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

void pj_tree_wipe(json_t *v)
{
    const char *key;
    json_t *child;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_STRING:
        /* jansson's own heap copy: writable, and about to be freed. */
        pj_wipe((char *)json_string_value(v), json_string_length(v));
        break;
    case JSON_OBJECT:
        json_object_foreach(v, key, child) pj_tree_wipe(child);
        break;
    case JSON_ARRAY:
        json_array_foreach(v, i, child) pj_tree_wipe(child);
        break;
    default:
        break;
    }
}

void pjson_text_free(char *text, size_t len)
{
    if (text == NULL)
        return;
    pj_wipe(text, len);
    free(text);
}

void pjson_value_free(json_t *value)
{
    if (value == NULL)
        return;
    pj_tree_wipe(value);
    json_decref(value);
}

static void *sys_alloc(void *ud, size_t n)
{
    (void)ud;
    return malloc(n);
}

static void sys_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

ProtobufCAllocator pj_allocator(ProtobufCAllocator *given)
{
    if (given != NULL)
        return *given;
    return (ProtobufCAllocator){.alloc = sys_alloc, .free = sys_free, .allocator_data = NULL};
}

/* The strings, bytes and unknown fields of one message, nested messages included. Only
 * memory that belongs to the message is written: default values live in read-only data. */
static void message_wipe(ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *member = (char *)m + f->offset;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            char *arr = *(char **)member;
            for (size_t k = 0; arr != NULL && k < n; k++) {
                void *el = arr + k * pj_elem_size(f->type);
                if (f->type == PROTOBUF_C_TYPE_STRING && *(char **)el != NULL)
                    pj_wipe(*(char **)el, strlen(*(char **)el));
                else if (f->type == PROTOBUF_C_TYPE_BYTES)
                    pj_wipe(((ProtobufCBinaryData *)el)->data, ((ProtobufCBinaryData *)el)->len);
                else if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage **)el != NULL)
                    message_wipe(*(ProtobufCMessage **)el);
            }
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            char *s = *(char **)member;
            if (s != NULL && s != f->default_value && s != protobuf_c_empty_string)
                pj_wipe(s, strlen(s));
        } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
            ProtobufCBinaryData *b = (ProtobufCBinaryData *)member;
            const ProtobufCBinaryData *def = f->default_value;
            if (b->data != NULL && (def == NULL || def->data != b->data))
                pj_wipe(b->data, b->len);
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            ProtobufCMessage *sub = *(ProtobufCMessage **)member;
            if (sub != NULL && sub != f->default_value)
                message_wipe(sub);
        }
    }
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        pj_wipe(m->unknown_fields[i].data, m->unknown_fields[i].len);
}

void pjson_message_free(ProtobufCMessage *msg, ProtobufCAllocator *alloc)
{
    if (msg == NULL)
        return;
    message_wipe(msg);
    protobuf_c_message_free_unpacked(msg, alloc);
}

/* ---- jansson's allocator ---------------------------------------------------------------- */

static void *wiping_malloc(size_t n)
{
    return malloc(n);
}

static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    /* jansson does not tell the size; the block's usable size covers what it wrote. */
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

void pjson_jansson_wipe_frees(void)
{
    json_set_alloc_funcs(wiping_malloc, wiping_free);
}
