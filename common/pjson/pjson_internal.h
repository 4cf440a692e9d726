/*
 * pjson internals shared by pjson.c (names, maps, wiping), pjson_encode.c and pjson_decode.c.
 * Not a public header: nothing outside common/pjson includes it.
 */
#ifndef CREDEX_COMMON_PJSON_PJSON_INTERNAL_H
#define CREDEX_COMMON_PJSON_PJSON_INTERNAL_H

#include <stdint.h>

#include "common/pjson/pjson.h"

/* The field path of an error, in JSON names: "resourceContext.attributes", "allowedUses[2]". */
typedef struct pj_path {
    char buf[200];
    size_t len;
} pj_path_t;

/* Append ".name" (or "name" at the root) / "[i]" / a literal suffix; each returns the length
 * to give pj_path_pop. A path that does not fit ends in "...". */
size_t pj_path_field(pj_path_t *p, const ProtobufCFieldDescriptor *f, bool proto_names);
size_t pj_path_index(pj_path_t *p, size_t i);
size_t pj_path_suffix(pj_path_t *p, const char *s);
void pj_path_pop(pj_path_t *p, size_t len);

/* cx_error_set with "<path>: <message>" (the message alone at the root); returns false. */
bool pj_fail(cx_error_t *err, cx_code_t code, const pj_path_t *p, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The options with defaults filled in. */
typedef struct pj_opts {
    unsigned flags, indent, max_depth;
    size_t max_bytes;
} pj_opts_t;
pj_opts_t pj_opts(const pjson_options_t *o);

/* Bytes one element of a repeated field of this type takes in its array. */
size_t pj_elem_size(ProtobufCType type);
/* Whether a non-repeated, non-oneof field is present the way protobuf-c decides whether to
 * pack it (so "written as JSON" is "sent on the wire"). */
bool pj_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) without NUL. */
bool pj_utf8_ok(const char *s, size_t n);

/* Memory wiping the compiler keeps. */
void pj_wipe(void *p, size_t n);
/* Wipe every string value of a jansson tree in place (the tree stays valid to free). */
void pj_tree_wipe(json_t *v);

/* The malloc/free allocator standing in for a NULL ProtobufCAllocator. */
ProtobufCAllocator pj_allocator(ProtobufCAllocator *given);

#endif
