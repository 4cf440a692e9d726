/*
 * pjson: the one JSON mapping of protobuf messages in credex (docs/DESIGN.md: the edge, the CLI and
 * the OpenAPI document agree on one shape). It follows the proto3 JSON mapping published with
 * protobuf ("ProtoJSON", what grpcurl and every protojson-based client print) and is driven by
 * the protobuf-c descriptors alone, so it serves any message type, generated or not.
 *
 * The mapping, output side (what pjson_encode writes):
 *  - field names in lowerCamelCase computed from the proto name (protobuf-c keeps no json_name:
 *    "secret_id" -> "secretId"), fields in field-number order;
 *  - a field is written when it would be on the wire: proto3 scalars when not zero, repeated
 *    fields when not empty, messages when set, proto2/proto3-optional fields when present, the
 *    selected member of a oneof always; PJSON_EMIT_DEFAULTS also writes the rest (unset
 *    messages and absent fields with explicit presence as null, so that they read back
 *    absent; unselected oneof members never);
 *  - enums as the value's name (a number when the value has no name); int64, uint64, sint64,
 *    fixed64, sfixed64 as decimal strings; 32-bit integers as numbers; float and double as
 *    numbers, or "NaN", "Infinity", "-Infinity" (17 significant digits: exact, though longer
 *    than protojson's shortest form); bytes as standard base64 with padding; strings as UTF-8
 *    with only '"', '\' and control characters escaped (the latter as \u00XX in upper case,
 *    where protojson writes lower case: the only difference in text from grpcurl's output);
 *  - repeated fields as arrays; map fields as objects with the key as a string ("true",
 *    "42"), keys sorted (bytewise, numerically, false before true) as protojson does;
 *  - nested messages as objects. Well-known types (Timestamp, Any, ...) get no special form:
 *    credex.v1 imports none (common.proto).
 *
 * Input side (pjson_decode, pjson_from_value): outside input, strict and bounded.
 *  - Both the lowerCamelCase and the proto field name are accepted; the same field under both
 *    names, a duplicate key, two members of one oneof, or an unknown field is refused
 *    (PJSON_IGNORE_UNKNOWN skips unknown fields instead);
 *  - null means "default" for every field (an unset oneof member, an empty list), except as a
 *    map value or an array element;
 *  - integers: a JSON number, or a string holding one ("12", "-3", "1e2"); a non-integral
 *    value or one out of the field's range is refused (numbers beyond the signed 64-bit range
 *    must be written as strings: jansson holds integers as long long);
 *  - enums: the value's name, or an int32 number (proto3 enums are open); an unknown name is
 *    refused; bool: true or false only; float/double: a number, a numeric string, or "NaN",
 *    "Infinity", "-Infinity" (a finite value outside float's range is refused);
 *  - strings must be valid UTF-8 without NUL; bytes: standard or URL-safe base64, padded or
 *    not, one alphabet per value, unused bits zero;
 *  - text larger than max_bytes and nesting deeper than max_depth are refused before jansson
 *    builds its tree; required proto2 fields must be present.
 * Errors are CX_ERR_INVALID_ARGUMENT (CX_ERR_RESOURCE_EXHAUSTED for the size limit and out of
 * memory) and name the field path in JSON names, e.g. "resourceContext.attributes: expected an
 * object", "allowedUses[2]: expected a string"; they never contain an input value or key.
 *
 * Credential material. The module is generic: whether a message type with credential bytes
 * (RetrieveResponse.value, CreateSecretRequest.value, ...) may be written at all is the
 * caller's decision. What it does to keep material from lingering:
 *  - decode writes every field, bytes included, into memory from the caller's allocator (give
 *    an arena that wipes on free, rpc_arena_allocator in credex), base64 decoding directly
 *    into the field's buffer, no intermediate copy; pjson_message_free wipes strings and bytes
 *    before freeing a message made with a plain allocator;
 *  - pjson_encode and pjson_decode wipe every string of the jansson tree they build (the
 *    base64 of bytes fields included) before freeing it, and encode's temporary base64 buffer;
 *    pjson_encode's text is written straight into one buffer (no growing copies) that
 *    pjson_text_free wipes;
 *  - what jansson keeps: its parser copies each string token into a lexer buffer that it grows
 *    and frees without wiping, so after pjson_decode fragments of the input text (the base64 of
 *    a bytes field) may remain in freed heap memory. A process that parses credential material
 *    calls pjson_jansson_wipe_frees once at start-up to make every jansson free wipe first.
 *
 * Thread-safety: every function is reentrant except pjson_jansson_wipe_frees (call it once,
 * before other threads use jansson). Blocking: none; no function does I/O or logs. Out-params
 * are untouched on failure.
 */
#ifndef CREDEX_COMMON_PJSON_PJSON_H
#define CREDEX_COMMON_PJSON_PJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error/cx_error.h"

#define PJSON_DEFAULT_MAX_BYTES (256u * 1024u) /* a 64 KiB secret in base64 is ~87 KiB */
#define PJSON_DEFAULT_MAX_DEPTH 32u            /* objects and arrays, the outermost being 1 */
#define PJSON_MAX_DEPTH         100u /* larger limits are clamped: the walk recurses per level */
#define PJSON_MAX_INDENT        8u

enum {
    PJSON_EMIT_DEFAULTS = 1u << 0,  /* encode: write fields that hold their default too */
    PJSON_PROTO_NAMES = 1u << 1,    /* encode: proto field names instead of lowerCamelCase */
    PJSON_IGNORE_UNKNOWN = 1u << 2, /* decode: skip unknown fields instead of refusing them */
};

/* Options; a NULL pointer or a zeroed struct means the defaults (compact text, limits above). */
typedef struct pjson_options {
    unsigned flags;     /* PJSON_* */
    unsigned indent;    /* encode: spaces per level, 0..PJSON_MAX_INDENT; 0 = one line */
    size_t max_bytes;   /* decode: largest JSON text; 0 = PJSON_DEFAULT_MAX_BYTES */
    unsigned max_depth; /* nesting limit of input and output; 0 = PJSON_DEFAULT_MAX_DEPTH,
                           at most PJSON_MAX_DEPTH */
} pjson_options_t;

/* ---- message -> JSON ------------------------------------------------------------------------ */

/* JSON text of msg into *out (malloc'd, NUL-terminated, *outlen bytes without the NUL), no
 * trailing newline. The caller owns the text and releases it with pjson_text_free (which wipes
 * it: it holds the base64 of any bytes field). Fails on a string field that is not UTF-8
 * (INVALID_ARGUMENT naming the field), on nesting deeper than max_depth, or out of memory. */
bool pjson_encode(char **out, size_t *outlen, const ProtobufCMessage *msg,
                  const pjson_options_t *opts, cx_error_t *err);

/* The same mapping as a jansson value (a new reference to an object) into *out, for callers
 * that embed it in a larger document. The caller owns it; pjson_value_free wipes and frees. */
bool pjson_to_value(json_t **out, const ProtobufCMessage *msg, const pjson_options_t *opts,
                    cx_error_t *err);

/* Wipe and free text from pjson_encode. NULL-safe. */
void pjson_text_free(char *text, size_t len);

/* Wipe every string value of a jansson tree in place, then drop the reference. Only for a tree
 * the caller holds the sole reference to (others would see the wiped strings). NULL-safe. */
void pjson_value_free(json_t *value);

/* ---- JSON -> message ------------------------------------------------------------------------ */

/* Parse text (len bytes, no NUL needed) as a message of type desc into *out, allocated with
 * alloc (NULL: malloc/free). On success the caller owns *out: with an arena allocator it lives
 * as long as the arena; otherwise release it with pjson_message_free(*out, alloc). On failure
 * everything allocated is wiped and released and *out is untouched. The text itself stays the
 * caller's (to wipe when it held material). */
bool pjson_decode(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, ProtobufCAllocator *alloc, const pjson_options_t *opts,
                  cx_error_t *err);

/* The same from a jansson value the caller built or parsed (it is only read; max_bytes does
 * not apply, max_depth does). The caller keeps its reference. */
bool pjson_from_value(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                      const json_t *value, ProtobufCAllocator *alloc, const pjson_options_t *opts,
                      cx_error_t *err);

/* Wipe the strings and bytes of a message (nested ones included), then free it with
 * protobuf_c_message_free_unpacked(msg, alloc). For messages from pjson_decode or
 * protobuf_c_message_unpack with the same allocator (NULL: malloc/free). NULL-safe. */
void pjson_message_free(ProtobufCMessage *msg, ProtobufCAllocator *alloc);

/* ---- the mapping, for generators (OpenAPI) ----------------------------------------------- */

/* The JSON name of a field (lowerCamelCase of the proto name, as protoc computes json_name)
 * into buf; returns its length, or 0 (buf "") when it does not fit in bufsz. */
size_t pjson_json_name(const ProtobufCFieldDescriptor *field, char *buf, size_t bufsz);

/* The map entry type of field (of message type msg) when it is a map field (the entry's
 * fields[0] is the key, fields[1] the value), else NULL. protobuf-c does not mark map entries:
 * a map field is a repeated message field whose type is msg's nested <FieldName>Entry with
 * exactly key = 1 and value = 2, the shape protoc gives map entries and forbids for any other
 * nested type of that name. */
const ProtobufCMessageDescriptor *pjson_map_entry(const ProtobufCMessageDescriptor *msg,
                                                  const ProtobufCFieldDescriptor *field);

/* ---- process set-up ------------------------------------------------------------------------- */

/* Make jansson wipe every block before freeing it (json_set_alloc_funcs; process-wide, so that
 * the copies its parser makes of string tokens are wiped too). Call once at start-up before
 * any thread uses jansson; idempotent. */
void pjson_jansson_wipe_frees(void);

#endif
