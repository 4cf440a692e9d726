/* fuzz_bson: see fuzz_bson.h. */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_bson.h"

static int64_t fuzz_num(const uint8_t *v, size_t len)
{
    char num[32];
    size_t n = len < sizeof(num) - 1 ? len : sizeof(num) - 1;
    memcpy(num, v, n);
    num[n] = '\0';
    return strtoll(num, NULL, 10);
}

/* "k=v,k2=v2" as a sub-document of out. */
static void fuzz_append_map(bson_t *out, const char *field, const uint8_t *v, size_t len)
{
    bson_t sub;
    fuzz_part_t pairs[32];
    size_t n = fuzz_split(v, len, ',', pairs, 32);
    bson_append_document_begin(out, field, -1, &sub);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *eq = memchr(pairs[i].data, '=', pairs[i].len);
        size_t klen = eq ? (size_t)(eq - pairs[i].data) : pairs[i].len;
        char *key = fuzz_strndup(pairs[i].data, klen);
        if (eq)
            bson_append_utf8(&sub, key, -1, (const char *)eq + 1, (int)(pairs[i].len - klen - 1));
        else
            bson_append_int32(&sub, key, -1, (int32_t)i);
        free(key);
    }
    bson_append_document_end(out, &sub);
}

static void fuzz_append_array(bson_t *out, const char *field, const uint8_t *v, size_t len)
{
    bson_t arr;
    fuzz_part_t items[32];
    size_t n = fuzz_split(v, len, ',', items, 32);
    bson_append_array_begin(out, field, -1, &arr);
    for (size_t i = 0; i < n; i++) {
        char k[16];
        const char *key;
        bson_uint32_to_string((uint32_t)i, &key, k, sizeof(k));
        bson_append_utf8(&arr, key, -1, (const char *)items[i].data, (int)items[i].len);
    }
    bson_append_array_end(out, &arr);
}

/* doc with one field set to a value made of (type, v[0..len)), into out. */
static void fuzz_edit(const bson_t *doc, const char *field, uint8_t type, const uint8_t *v,
                      size_t len, bson_t *out)
{
    bson_iter_t it;
    bson_init(out);
    if (bson_iter_init(&it, doc))
        while (bson_iter_next(&it))
            if (strcmp(bson_iter_key(&it), field) != 0)
                bson_append_iter(out, bson_iter_key(&it), -1, &it);
    switch (type) {
    case 's':
        bson_append_utf8(out, field, -1, (const char *)v, (int)len);
        break;
    case 'i':
        bson_append_int64(out, field, -1, fuzz_num(v, len));
        break;
    case 'n':
        bson_append_int32(out, field, -1, (int32_t)fuzz_num(v, len));
        break;
    case 'd':
        bson_append_double(out, field, -1, (double)fuzz_num(v, len) / 3.0);
        break;
    case 'b':
        bson_append_bool(out, field, -1, len > 0 && v[0] == '1');
        break;
    case 't':
        bson_append_date_time(out, field, -1, fuzz_num(v, len));
        break;
    case 'a':
        fuzz_append_array(out, field, v, len);
        break;
    case 'm':
        fuzz_append_map(out, field, v, len);
        break;
    case 'o': {
        bson_t sub;
        bson_append_document_begin(out, field, -1, &sub);
        bson_append_document_end(out, &sub);
        break;
    }
    case 'y':
        bson_append_binary(out, field, -1, BSON_SUBTYPE_BINARY, v, (uint32_t)len);
        break;
    case 'u':
        bson_append_binary(out, field, -1, BSON_SUBTYPE_USER, v, (uint32_t)len);
        break;
    case 'z':
        bson_append_null(out, field, -1);
        break;
    default: /* removed */
        break;
    }
}

void fuzz_bson_edits(bson_t *doc, const uint8_t *data, size_t size, const char *const *fields,
                     size_t nfields)
{
    fuzz_part_t lines[64];
    size_t n = fuzz_split(data, size, '\n', lines, 64);
    for (size_t i = 0; i < n; i++) {
        if (lines[i].len < 2)
            continue;
        const char *field = fields[(lines[i].data[0] + nfields - 'B' % nfields) % nfields];
        bson_t next;
        fuzz_edit(doc, field, lines[i].data[1], lines[i].data + 2, lines[i].len - 2, &next);
        bson_destroy(doc);
        bson_copy_to(&next, doc);
        bson_destroy(&next);
    }
}

bool fuzz_bson_input(const uint8_t *data, size_t size, const bson_t *base,
                     const char *const *fields, size_t nfields, bson_t *out)
{
    if (size > 0 && data[0] == '!') {
        bson_copy_to(base, out);
        fuzz_bson_edits(out, data + 1, size - 1, fields, nfields);
        return true;
    }
    if (size > 0 && data[0] == '{')
        return bson_init_from_json(out, (const char *)data, (ssize_t)size, NULL);
    bson_t doc;
    size_t n = size + 5;
    uint8_t *buf = malloc(n);
    if (buf == NULL)
        abort();
    for (int i = 0; i < 4; i++)
        buf[i] = (uint8_t)((n >> (8 * i)) & 0xff); /* BSON lengths are little-endian */
    if (size > 0)
        memcpy(buf + 4, data, size);
    buf[n - 1] = 0;
    bool ok = bson_init_static(&doc, buf, n) && bson_validate(&doc, BSON_VALIDATE_NONE, NULL);
    if (ok)
        bson_copy_to(&doc, out);
    free(buf);
    return ok;
}

void fuzz_bson_run(const fuzz_bson_target_t *t, const uint8_t *data, size_t size)
{
    static bson_t base;
    static bool have_base;
    if (!have_base) {
        t->make_base(&base);
        have_base = true;
    }
    bson_t doc;
    if (fuzz_bson_input(data, size, &base, t->fields, t->nfields, &doc)) {
        t->check(&doc);
        bson_destroy(&doc);
    }
}
