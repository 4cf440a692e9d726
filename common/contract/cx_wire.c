/*
 * cx_contract_wire_check: what only the wire form of a message shows (cx_contract.h): strings
 * that are not UTF-8 or hold a NUL, and varints wider than their field. One pass, no
 * allocation; nested messages are checked with their own descriptors up to
 * CX_CONTRACT_MAX_DEPTH.
 */
#include <string.h>

#include "common/contract/cx_contract.h"

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct reader {
    const uint8_t *p, *end;
} reader_t;

static bool read_varint(reader_t *r, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 70 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1)
            return false; /* more than 64 bits */
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

static bool malformed(const char *name, cx_error_t *err)
{
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: malformed message", name);
}

/* Does varint v fit a field of type t? */
static bool varint_fits(ProtobufCType t, uint64_t v)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM:
        /* Negative int32 values are sign-extended to ten bytes on the wire. */
        return v <= 0x7FFFFFFFu || v >= 0xFFFFFFFF80000000u;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_SINT32:
        return v <= 0xFFFFFFFFu;
    case PROTOBUF_C_TYPE_BOOL:
        return v <= 1;
    default:
        return true;
    }
}

static bool is_varint_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_BOOL:
    case PROTOBUF_C_TYPE_ENUM:
        return true;
    default:
        return false;
    }
}

static int fixed_wire_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return WT_I32;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return WT_I64;
    default:
        return -1;
    }
}

static bool check_wire(const ProtobufCMessageDescriptor *desc, reader_t *r, unsigned depth,
                       cx_error_t *err);

/* A length-delimited field f (or an unknown field when f is NULL) of len bytes at data. */
static bool check_len(const ProtobufCFieldDescriptor *f, const uint8_t *data, size_t len,
                      unsigned depth, cx_error_t *err)
{
    if (!f)
        return true;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (memchr(data, 0, len) || !cx_contract_utf8(data, len, NULL))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "%s: must be UTF-8 text without NUL characters", f->name);
        return true;
    case PROTOBUF_C_TYPE_BYTES:
        return true;
    case PROTOBUF_C_TYPE_MESSAGE: {
        reader_t sub = {data, data + len};
        return check_wire(f->descriptor, &sub, depth + 1, err);
    }
    default:
        break;
    }
    /* A packed repeated scalar. */
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return malformed(f->name, err);
    reader_t sub = {data, data + len};
    if (is_varint_type(f->type)) {
        while (sub.p < sub.end) {
            uint64_t v;
            if (!read_varint(&sub, &v))
                return malformed(f->name, err);
            if (!varint_fits(f->type, v))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: value out of range",
                                    f->name);
        }
        return true;
    }
    int wt = fixed_wire_type(f->type);
    size_t w = wt == WT_I32 ? 4 : 8;
    return wt >= 0 && len % w == 0 ? true : malformed(f->name, err);
}

static bool check_wire(const ProtobufCMessageDescriptor *desc, reader_t *r, unsigned depth,
                       cx_error_t *err)
{
    if (depth > CX_CONTRACT_MAX_DEPTH)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "message nested too deeply");
    while (r->p < r->end) {
        uint64_t tag, v;
        if (!read_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF)
            return malformed(desc->name, err);
        unsigned wt = (unsigned)(tag & 7);
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3));
        switch (wt) {
        case WT_VARINT:
            if (!read_varint(r, &v))
                return malformed(desc->name, err);
            if (f && !is_varint_type(f->type))
                return malformed(f->name, err);
            if (f && !varint_fits(f->type, v))
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: value out of range",
                                    f->name);
            break;
        case WT_I64:
        case WT_I32: {
            size_t w = wt == WT_I32 ? 4 : 8;
            if ((size_t)(r->end - r->p) < w)
                return malformed(desc->name, err);
            if (f && fixed_wire_type(f->type) != (int)wt)
                return malformed(f->name, err);
            r->p += w;
            break;
        }
        case WT_LEN: {
            if (!read_varint(r, &v) || v > (uint64_t)(r->end - r->p))
                return malformed(desc->name, err);
            if (!check_len(f, r->p, (size_t)v, depth, err))
                return false;
            r->p += v;
            break;
        }
        default:
            /* Groups are not used by proto3 and protobuf-c refuses them too. */
            return malformed(desc->name, err);
        }
    }
    return true;
}

bool cx_contract_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                            cx_error_t *err)
{
    if (!desc || (!data && len))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "request is missing");
    reader_t r = {data, data + len};
    return check_wire(desc, &r, 0, err);
}
