/*
 * cx_contract: the input contract of every credex.v1 request, defined once.
 *
 * The gateway, store, oauth and credexctl all check requests through this module, so that a
 * request the gateway accepts is one store accepts (and one credexctl lets a user send). Two
 * layers, both driven by the protobuf-c descriptors, so that a new field is covered the day it
 * is added to a .proto:
 *
 *  1. The wire (cx_contract_wire_check): the bytes of a received message before protobuf-c
 *     unpacks them. protobuf-c checks neither UTF-8 nor embedded NULs (a NUL silently truncates
 *     the C string it builds), and it truncates a varint that is too wide for its field (a
 *     uint32 "version" of 2^32 + 1 arrives as 1). So: every string field is valid UTF-8 with no
 *     NUL, and every varint fits its field's type.
 *
 *  2. The message (cx_contract_check): the unpacked message, walked recursively. Every string,
 *     bytes and repeated field of every request has a rule keyed by its field name (the same
 *     name means the same thing in gateway.proto and store.proto, so one rule serves both), a
 *     message may require some fields, and every enum field must hold a value its enum defines
 *     (proto3 enums are open: unknown numbers arrive as they were sent).
 *
 * Rules. Lengths of text are counted in Unicode code points (characters) of valid UTF-8;
 * identifiers are ASCII, so characters and bytes agree. Text classes:
 *   - single-line text: no C0 or C1 control character, no DEL, no line or paragraph separator,
 *     no bidirectional embedding, override or isolate (they make an audit trail read other
 *     than it is written);
 *   - multi-line text (description only): the same, except that LF and TAB are allowed.
 * Secret values are bytes and stay byte-exact: only their length is checked.
 *
 * Errors are CX_ERR_INVALID_ARGUMENT with a message naming the field path and the rule (e.g.
 * "resource_context.resource_id: 1..128 characters of [A-Za-z0-9_.:@/-]"), never the value.
 *
 * Pure functions: no allocation, no logging; thread-safe.
 */
#ifndef CREDEX_COMMON_CONTRACT_CX_CONTRACT_H
#define CREDEX_COMMON_CONTRACT_CX_CONTRACT_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

/* Nesting depth of messages accepted (credex requests are at most 4 deep). */
#define CX_CONTRACT_MAX_DEPTH 16

/* The kinds of string rule. */
typedef enum cx_contract_class {
    CX_CONTRACT_ID,        /* ASCII of the rule's alphabet */
    CX_CONTRACT_TEXT,      /* single-line text */
    CX_CONTRACT_MULTILINE, /* text where LF and TAB are allowed */
    CX_CONTRACT_BYTES,     /* bytes: length only */
} cx_contract_class_t;

/* One field's rule (exposed for tests, docs and credexctl's help texts). */
typedef struct cx_contract_rule {
    const char *field; /* proto field name; "<map>.key" / "<map>.value" for map entries */
    cx_contract_class_t cls;
    size_t min, max;      /* characters (text, ids) or bytes (bytes); min applies when set */
    const char *alphabet; /* CX_CONTRACT_ID: the allowed characters, ranges as "a-z" */
    const char *what;     /* the rule in words, used in error messages */
    unsigned max_items;   /* repeated fields: most entries (0: not repeated / no rule) */
    bool unique;          /* repeated fields: entries must differ */
} cx_contract_rule_t;

/* The rule for a field name ("attributes.key" for a map's keys), or NULL when none. */
const cx_contract_rule_t *cx_contract_rule(const char *field);

/* The rule of field f of message d (a "<message>.<field>" override first, then the field's
 * name); map_field names the map when d is a map entry (its "key" and "value" are then ruled as
 * "<map_field>.key" and "<map_field>.value"). NULL when none. */
const cx_contract_rule_t *cx_contract_field_rule(const ProtobufCMessageDescriptor *d,
                                                 const ProtobufCFieldDescriptor *f,
                                                 const char *map_field);

/* A map entry message (protobuf-c keeps no flag for it): exactly the fields key and value. */
bool cx_contract_is_map_entry(const ProtobufCMessageDescriptor *d);

/* Check one value against the rule of `field` (for credexctl and handlers that build values
 * themselves). A value of length 0 passes unless the rule's min is > 0 and required is set. */
bool cx_contract_check_value(const char *field, const char *value, bool required, cx_error_t *err);

/* Check a whole unpacked message: every string, bytes and repeated field against its rule,
 * required fields of the message (cx_contract_required), enum values, nesting depth. A field
 * without a rule is checked as single-line text of at most 1024 characters (a unit test keeps
 * every request field ruled). */
bool cx_contract_check(const ProtobufCMessage *msg, cx_error_t *err);

/* Is `field` required in messages of type `message_name` (full proto name, e.g.
 * "credex.v1.CreateSecretRequest")? Required means: non-empty string or bytes, enum not 0,
 * message present. */
bool cx_contract_required(const char *message_name, const char *field);

/* Check the wire form of a message of type `desc` (see the header comment). Unknown fields are
 * skipped (their wire shape must still be valid). Does not unpack; cost is one pass. */
bool cx_contract_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                            cx_error_t *err);

/* Valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) of n bytes; *chars (may be
 * NULL) receives the number of code points. */
bool cx_contract_utf8(const uint8_t *s, size_t n, size_t *chars);

#endif
