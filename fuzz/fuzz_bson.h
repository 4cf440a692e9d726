/*
 * fuzz_bson: BSON documents for the harnesses of stored documents (fuzz_secret_doc,
 * fuzz_audit_doc, fuzz_envelope). Part of fuzz_kit (see fuzz_kit.h).
 *
 * Every such harness reads its input in one of three forms, by its first byte:
 *  '!'  edits of a valid document (the one credex itself writes), one edit per line:
 *       "<field><type><value>", the field picked by its byte ('B' the first of the harness's
 *       field list, 'C' the second, ...; any byte picks one, modulo their number), the type one
 *       of s (string: the raw bytes), i (int64), n (int32), d (double), b (bool: "1" is true),
 *       t (date), a (array of strings split at ','), m (document "k=v,k2=v2"; a pair without
 *       '=' becomes an int32 entry), o (empty document), y (binary, the raw bytes), u (binary of
 *       the user-defined subtype), z (null), anything else removes the field. Mutations are then
 *       near-valid documents that reach every field check;
 *  '{'  extended JSON, parsed by libbson;
 *  else raw BSON, its length prefix and terminator fixed up so that random bytes reach the
 *       element parser.
 */
#ifndef CREDEX_FUZZ_FUZZ_BSON_H
#define CREDEX_FUZZ_FUZZ_BSON_H

#include <bson/bson.h>

#include "fuzz/fuzz_kit.h"

/* Apply the edit lines in data to *doc (an initialized document, rebuilt in place). */
void fuzz_bson_edits(bson_t *doc, const uint8_t *data, size_t size, const char *const *fields,
                     size_t nfields);

/* The input (without its first byte for '!' and with it otherwise) as a document of one of the
 * three forms; base is copied as the document to edit. false when the bytes are no valid BSON
 * (or JSON). *out is then uninitialized; else bson_destroy it. */
bool fuzz_bson_input(const uint8_t *data, size_t size, const bson_t *base,
                     const char *const *fields, size_t nfields, bson_t *out);

/* A harness of one kind of stored document: the valid document the '!' form edits, the fields
 * its edit lines name, and the check of each input's document. */
typedef struct fuzz_bson_target {
    void (*make_base)(bson_t *out);
    const char *const *fields;
    size_t nfields;
    void (*check)(const bson_t *doc);
} fuzz_bson_target_t;

/* The body of such a harness's LLVMFuzzerTestOneInput: the input as a document (any of the three
 * forms), checked. One target per process: its base document is made once and kept. */
void fuzz_bson_run(const fuzz_bson_target_t *t, const uint8_t *data, size_t size);

#endif
