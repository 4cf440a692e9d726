/*
 * pjson, JSON -> message. The input is outside input: every check of pjson.h happens here, and
 * the message under construction is kept valid for protobuf_c_message_free_unpacked at every
 * step (a pointer is stored in its parent before it is filled, a repeated count covers every
 * slot that may hold memory), so a failure anywhere is cleaned up by one pjson_message_free.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pjson/pjson_internal.h"

typedef struct dec {
    pj_opts_t o;
    ProtobufCAllocator a;
    cx_error_t *err;
    pj_path_t path;
} dec_t;

static bool dec_message(dec_t *d, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                        unsigned depth, ProtobufCMessage **slot);

static bool bad(dec_t *d, const char *what)
{
    return pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "%s", what);
}

static void *dalloc(dec_t *d, size_t n)
{
    void *p = d->a.alloc(d->a.allocator_data, n);
    if (p == NULL)
        pj_fail(d->err, CX_ERR_RESOURCE_EXHAUSTED, &d->path, "out of memory");
    else
        memset(p, 0, n);
    return p;
}

/* ---- numbers ------------------------------------------------------------------------------ */

/* Whether s is exactly a JSON number (RFC 8259 grammar); *integral: no fraction, no exponent. */
static bool number_text(const char *s, size_t n, bool *integral)
{
    size_t i = 0;
    *integral = true;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return false;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return false;
    }
    if (i < n && s[i] == '.') {
        *integral = false;
        if (++i >= n || s[i] < '0' || s[i] > '9')
            return false;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *integral = false;
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || s[i] < '0' || s[i] > '9')
            return false;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return i == n;
}

/* Digits of an integral number text (optional '-') as sign and magnitude; false on overflow. */
static bool digits_value(const char *s, size_t n, bool *neg, uint64_t *mag)
{
    size_t i = 0;
    uint64_t v = 0;
    *neg = n > 0 && s[0] == '-';
    if (*neg)
        i++;
    for (; i < n; i++) {
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10)
            return false;
        v = v * 10 + dgt;
    }
    *mag = v;
    return true;
}

/* 2^53: the largest magnitude up to which every integer is a double. */
#define EXACT_DOUBLE 9007199254740992.0

/* An integral double as sign and magnitude; refuses fractions and inexact magnitudes. */
static bool double_integral(dec_t *d, double x, bool *neg, uint64_t *mag)
{
    if (!isfinite(x) || x != floor(x))
        return bad(d, "expected an integer");
    if (fabs(x) > EXACT_DOUBLE)
        return bad(d, "number too large to be exact: write it as an integer or a string");
    *neg = x < 0;
    *mag = (uint64_t)fabs(x);
    return true;
}

/* Any integer form the mapping accepts: a number, or a string holding a JSON number. */
static bool integer_of(dec_t *d, const json_t *v, bool *neg, uint64_t *mag)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        *neg = x < 0;
        *mag = x < 0 ? (uint64_t)(-(x + 1)) + 1u : (uint64_t)x;
        return true;
    }
    if (json_is_real(v))
        return double_integral(d, json_real_value(v), neg, mag);
    if (!json_is_string(v))
        return bad(d, "expected an integer (a number or a numeric string)");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    bool integral;
    if (!number_text(s, n, &integral))
        return bad(d, "expected an integer (a number or a numeric string)");
    if (integral) {
        if (!digits_value(s, n, neg, mag))
            return bad(d, "integer out of range");
        return true;
    }
    return double_integral(d, strtod(s, NULL), neg, mag);
}

/* Range of each integer type as [-neg_max, pos_max] in magnitudes. */
static void int_range(ProtobufCType t, uint64_t *neg_max, uint64_t *pos_max)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        *neg_max = (uint64_t)INT32_MAX + 1, *pos_max = INT32_MAX;
        return;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *neg_max = 0, *pos_max = UINT32_MAX;
        return;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *neg_max = 0, *pos_max = UINT64_MAX;
        return;
    default: /* 64-bit signed */
        *neg_max = (uint64_t)INT64_MAX + 1, *pos_max = INT64_MAX;
        return;
    }
}

/* Store sign and magnitude (already range-checked) as type t at member. */
static void store_int(ProtobufCType t, bool neg, uint64_t mag, void *member)
{
    int64_t sv = neg ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    if (neg && mag == 0)
        sv = 0;
    switch (t) {
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)member = (uint32_t)mag;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)member = mag;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)member = sv;
        break;
    case PROTOBUF_C_TYPE_ENUM:
        *(int *)member = (int)sv;
        break;
    default:
        *(int32_t *)member = (int32_t)sv;
        break;
    }
}

static bool dec_int(dec_t *d, ProtobufCType t, const json_t *v, void *member)
{
    bool neg;
    uint64_t mag, neg_max, pos_max;
    if (!integer_of(d, v, &neg, &mag))
        return false;
    int_range(t, &neg_max, &pos_max);
    if (mag > (neg ? neg_max : pos_max) && mag != 0)
        return bad(d, "integer out of range for the field");
    store_int(t, neg, mag, member);
    return true;
}

static bool dec_float(dec_t *d, const ProtobufCFieldDescriptor *f, const json_t *v, void *member)
{
    double x;
    if (json_is_integer(v)) {
        x = (double)json_integer_value(v);
    } else if (json_is_real(v)) {
        x = json_real_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        bool integral;
        if (strcmp(s, "NaN") == 0)
            x = NAN;
        else if (strcmp(s, "Infinity") == 0)
            x = INFINITY;
        else if (strcmp(s, "-Infinity") == 0)
            x = -INFINITY;
        else if (number_text(s, n, &integral))
            x = strtod(s, NULL);
        else
            return bad(d, "expected a number, a numeric string, \"NaN\" or \"Infinity\"");
        if (isinf(x) && number_text(s, n, &integral))
            return bad(d, "number out of range for the field");
    } else {
        return bad(d, "expected a number");
    }
    if (f->type == PROTOBUF_C_TYPE_FLOAT) {
        if (isfinite(x) && fabs(x) > FLT_MAX)
            return bad(d, "number out of range for the field");
        *(float *)member = (float)x;
    } else {
        *(double *)member = x;
    }
    return true;
}

/* ---- strings and bytes ------------------------------------------------------------------- */

static bool text_of(dec_t *d, const json_t *v, const char **s, size_t *n)
{
    if (!json_is_string(v))
        return bad(d, "expected a string");
    *s = json_string_value(v);
    *n = json_string_length(v);
    if (!pj_utf8_ok(*s, *n))
        return bad(d, "string is not valid UTF-8 or contains NUL");
    return true;
}

/* A copy of n bytes of s with a NUL, from the message's allocator. */
static char *dup_text(dec_t *d, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = dalloc(d, n + 1);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

static int b64_digit(char c, int *alphabet)
{
    int std = c == '+' || c == '/', url = c == '-' || c == '_';
    if ((std && *alphabet == 2) || (url && *alphabet == 1))
        return -1; /* the two alphabets mixed in one value */
    if (std)
        *alphabet = 1;
    if (url)
        *alphabet = 2;
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Standard or URL-safe base64, padded or not, decoded straight into the field's buffer. */
static bool dec_bytes(dec_t *d, const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v))
        return bad(d, "expected a base64 string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n % 4 == 0 && n > 0 && s[n - 1] == '=')
        n -= n > 1 && s[n - 2] == '=' ? 2 : 1;
    if (n % 4 == 1)
        return bad(d, "not valid base64");
    size_t len = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    if (len == 0)
        return true;
    unsigned char *buf = dalloc(d, len);
    if (buf == NULL)
        return false;
    int alphabet = 0;
    size_t o = 0;
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < n; i++) {
        int x = b64_digit(s[i], &alphabet);
        if (x < 0)
            goto invalid;
        acc = (acc << 6 | (unsigned)x) & 0xffffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits);
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0)
        goto invalid; /* the unused low bits of the last digit must be zero */
    out->data = buf;
    out->len = len;
    return true;
invalid:
    pj_wipe(buf, len);
    d->a.free(d->a.allocator_data, buf);
    return bad(d, "not valid base64");
}

/* ---- values ------------------------------------------------------------------------------ */

/* One non-null value of field f into member (inside a container at depth). in_array: the slot
 * is an element of a repeated field, whose strings are always allocated. */
static bool dec_value(dec_t *d, const ProtobufCFieldDescriptor *f, const json_t *v, void *member,
                      unsigned depth, bool in_array)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return dec_float(d, f, v, member);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return bad(d, "expected true or false");
        *(protobuf_c_boolean *)member = json_is_true(v);
        return true;
    case PROTOBUF_C_TYPE_ENUM:
        if (json_is_string(v)) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, json_string_value(v));
            if (ev == NULL || strlen(json_string_value(v)) != json_string_length(v))
                return bad(d, "unknown enum value name");
            *(int *)member = ev->value;
            return true;
        }
        if (!json_is_number(v))
            return bad(d, "expected an enum value name or number");
        return dec_int(d, f->type, v, member);
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = NULL;
        size_t n = 0;
        if (!text_of(d, v, &s, &n))
            return false;
        if (n == 0 && !in_array && f->label == PROTOBUF_C_LABEL_NONE &&
            !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            return true; /* keeps the default "" the message was initialised with */
        char *p = dup_text(d, s, n);
        if (p == NULL)
            return false;
        *(char **)member = p;
        return true;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return dec_bytes(d, v, member);
    case PROTOBUF_C_TYPE_MESSAGE:
        return dec_message(d, f->descriptor, v, depth + 1, member);
    default:
        return dec_int(d, f->type, v, member);
    }
}

static bool dec_array(dec_t *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                      const json_t *v, unsigned depth)
{
    if (!json_is_array(v))
        return bad(d, "expected an array");
    if (depth + 1 > d->o.max_depth)
        return pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "nesting deeper than %u",
                       d->o.max_depth);
    size_t n = json_array_size(v), size = pj_elem_size(f->type);
    if (n == 0)
        return true;
    if (n > SIZE_MAX / size)
        return pj_fail(d->err, CX_ERR_RESOURCE_EXHAUSTED, &d->path, "array too long");
    char *arr = dalloc(d, n * size);
    if (arr == NULL)
        return false;
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(char **)((char *)m + f->offset) = arr;
    for (size_t i = 0; i < n; i++) {
        const json_t *el = json_array_get(v, i);
        size_t at = pj_path_index(&d->path, i);
        *count = i + 1; /* before filling: the slot may hold memory on failure */
        bool ok = !json_is_null(el) ? dec_value(d, f, el, arr + i * size, depth + 1, true)
                                    : bad(d, "null is not a valid array element");
        pj_path_pop(&d->path, at);
        if (!ok)
            return false;
    }
    return true;
}

/* A map key (JSON object keys are strings) into the entry's key field. */
static bool dec_key(dec_t *d, const ProtobufCFieldDescriptor *kf, const char *key, size_t n,
                    void *member)
{
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING: {
        if (!pj_utf8_ok(key, n))
            return bad(d, "a map key is not valid UTF-8 or contains NUL");
        char *p = dup_text(d, key, n);
        if (p == NULL)
            return false;
        *(char **)member = p;
        return true;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
            return bad(d, "a map key is not true or false");
        *(protobuf_c_boolean *)member = key[0] == 't';
        return true;
    default: {
        /* Canonical decimal only, so that two spellings never name one key. */
        bool integral, neg;
        uint64_t mag, neg_max, pos_max;
        if (!number_text(key, n, &integral) || !integral ||
            (n > 1 && key[0] == '-' && key[1] == '0') || !digits_value(key, n, &neg, &mag))
            return bad(d, "a map key is not a decimal integer");
        int_range(kf->type, &neg_max, &pos_max);
        if (mag > (neg ? neg_max : pos_max))
            return bad(d, "a map key is out of range");
        store_int(kf->type, neg, mag, member);
        return true;
    }
    }
}

static bool dec_map(dec_t *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                    const ProtobufCMessageDescriptor *ed, const json_t *v, unsigned depth)
{
    if (!json_is_object(v))
        return bad(d, "expected an object");
    if (depth + 1 > d->o.max_depth)
        return pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "nesting deeper than %u",
                       d->o.max_depth);
    size_t n = json_object_size(v);
    if (n == 0)
        return true;
    ProtobufCMessage **arr = dalloc(d, n * sizeof *arr);
    if (arr == NULL)
        return false;
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    void *it = json_object_iter((json_t *)v);
    for (size_t i = 0; it != NULL && i < n; i++, it = json_object_iter_next((json_t *)v, it)) {
        const char *key = json_object_iter_key(it);
        const json_t *val = json_object_iter_value(it);
        ProtobufCMessage *e = dalloc(d, ed->sizeof_message);
        if (e == NULL)
            return false;
        protobuf_c_message_init(ed, e);
        arr[i] = e;
        *count = i + 1;
        if (!dec_key(d, kf, key, json_object_iter_key_len(it), (char *)e + kf->offset))
            return false;
        size_t at = pj_path_suffix(&d->path, " (a map value)");
        bool ok = !json_is_null(val)
                      ? dec_value(d, vf, val, (char *)e + vf->offset, depth + 1, false)
                      : bad(d, "null is not a valid map value");
        pj_path_pop(&d->path, at);
        if (!ok)
            return false;
        if (vf->label == PROTOBUF_C_LABEL_OPTIONAL && vf->type != PROTOBUF_C_TYPE_STRING &&
            vf->type != PROTOBUF_C_TYPE_MESSAGE)
            *(protobuf_c_boolean *)((char *)e + vf->quantifier_offset) = 1;
        if (kf->label == PROTOBUF_C_LABEL_OPTIONAL && kf->type != PROTOBUF_C_TYPE_STRING)
            *(protobuf_c_boolean *)((char *)e + kf->quantifier_offset) = 1;
    }
    return true;
}

/* ---- messages ---------------------------------------------------------------------------- */

/* Whether key is the JSON name of proto field name f (pjson_json_name without building it). */
static bool is_json_name(const char *f, const char *key)
{
    bool upper = false;
    for (; *f; f++) {
        if (*f == '_') {
            upper = true;
            continue;
        }
        char c = upper && *f >= 'a' && *f <= 'z' ? (char)(*f - 'a' + 'A') : *f;
        if (*key++ != c)
            return false;
        upper = false;
    }
    return *key == '\0';
}

/* The field a key names (proto name first, then JSON name); *other: the field's other name
 * when it differs from the key, so that one field given under both names is refused. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *key, char *other, size_t othersz)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    other[0] = '\0';
    if (f != NULL) {
        if (pjson_json_name(f, other, othersz) > 0 && strcmp(other, key) == 0)
            other[0] = '\0';
        return f;
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        f = &desc->fields[i];
        if (is_json_name(f->name, key)) {
            snprintf(other, othersz, "%s", f->name);
            return f;
        }
    }
    return NULL;
}

static bool dec_field(dec_t *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                      const json_t *val, unsigned depth)
{
    char *member = (char *)m + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *which = (uint32_t *)((char *)m + f->quantifier_offset);
        if (*which != 0 && *which != f->id)
            return bad(d, "more than one field of the same oneof");
        *which = f->id; /* first, so that cleanup frees what the member gets */
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        const ProtobufCMessageDescriptor *ed = pjson_map_entry(m->descriptor, f);
        return ed != NULL ? dec_map(d, m, f, ed, val, depth) : dec_array(d, m, f, val, depth);
    }
    if (!dec_value(d, f, val, member, depth, false))
        return false;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
    return true;
}

static bool dec_message(dec_t *d, const ProtobufCMessageDescriptor *desc, const json_t *obj,
                        unsigned depth, ProtobufCMessage **slot)
{
    if (!json_is_object(obj))
        return bad(d, "expected an object");
    if (depth > d->o.max_depth)
        return pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "nesting deeper than %u",
                       d->o.max_depth);
    ProtobufCMessage *m = dalloc(d, desc->sizeof_message);
    if (m == NULL)
        return false;
    protobuf_c_message_init(desc, m);
    *slot = m; /* in its parent before it is filled: one free cleans up any failure */
    void *it = json_object_iter((json_t *)obj);
    for (; it != NULL; it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        const json_t *val = json_object_iter_value(it);
        char other[128];
        const ProtobufCFieldDescriptor *f = strlen(key) == json_object_iter_key_len(it)
                                                ? find_field(desc, key, other, sizeof other)
                                                : NULL;
        if (f == NULL) {
            if (d->o.flags & PJSON_IGNORE_UNKNOWN)
                continue;
            return pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path,
                           "unknown field (%s has no such field)", desc->name);
        }
        size_t at = pj_path_field(&d->path, f, false);
        bool ok;
        if (other[0] != '\0' && json_object_get(obj, other) != NULL)
            ok = pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "given twice (as %s and %s)",
                         key, other);
        else
            ok = json_is_null(val) || dec_field(d, m, f, val, depth);
        pj_path_pop(&d->path, at);
        if (!ok)
            return false;
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        char name[128];
        if (f->label != PROTOBUF_C_LABEL_REQUIRED)
            continue;
        const json_t *a = json_object_get(obj, f->name), *b = NULL;
        if (pjson_json_name(f, name, sizeof name) > 0)
            b = json_object_get(obj, name);
        if ((a == NULL || json_is_null(a)) && (b == NULL || json_is_null(b))) {
            size_t at = pj_path_field(&d->path, f, false);
            pj_fail(d->err, CX_ERR_INVALID_ARGUMENT, &d->path, "required field missing");
            pj_path_pop(&d->path, at);
            return false;
        }
    }
    return true;
}

bool pjson_from_value(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                      const json_t *value, ProtobufCAllocator *alloc, const pjson_options_t *opts,
                      cx_error_t *err)
{
    dec_t d = {.o = pj_opts(opts), .a = pj_allocator(alloc), .err = err};
    ProtobufCMessage *m = NULL;
    if (value == NULL || !json_is_object(value))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "expected a JSON object");
    if (!dec_message(&d, desc, value, 1, &m)) {
        pjson_message_free(m, alloc);
        return false;
    }
    *out = m;
    return true;
}

/* Nesting of objects and arrays outside strings, so that jansson (which recurses) never sees
 * a document deeper than the limit. */
static bool depth_ok(const char *text, size_t len, unsigned max)
{
    unsigned depth = 0;
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return false;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return true;
}

static const char *parse_error(const json_error_t *je)
{
    switch (json_error_code(je)) {
    case json_error_duplicate_key:
        return "duplicate key";
    case json_error_invalid_utf8:
        return "invalid UTF-8";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "NUL in a string";
    case json_error_numeric_overflow:
        return "number out of range (write 64-bit integers as strings)";
    case json_error_premature_end_of_input:
        return "unexpected end of input";
    case json_error_end_of_input_expected:
        return "text after the JSON value";
    case json_error_out_of_memory:
        return "out of memory";
    default:
        return "syntax error";
    }
}

bool pjson_decode(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, ProtobufCAllocator *alloc, const pjson_options_t *opts,
                  cx_error_t *err)
{
    pj_opts_t o = pj_opts(opts);
    if (len > o.max_bytes)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "JSON text larger than %zu bytes",
                            o.max_bytes);
    if (!depth_ok(text, len, o.max_depth))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "JSON nesting deeper than %u",
                            o.max_depth);
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL)
        /* je.text quotes the input near the error: only the position is passed on. */
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "invalid JSON at line %d, column %d: %s",
                            je.line, je.column, parse_error(&je));
    bool ok = pjson_from_value(out, desc, v, alloc, opts, err);
    pjson_value_free(v);
    return ok;
}
