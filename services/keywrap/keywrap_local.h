/*
 * keywrap_local: the local-cmk key material of keywrap (docs/ENVELOPE.md): root key files, the
 * KEK of each CMK id, and the table of readable roots a local-cmk wrapped key is tried against.
 *
 * Roots, tried in this order:
 *  - "current": CREDEX_LOCAL_CMK_KEY_FILE, with provider local-cmk only; it wraps new keys;
 *  - "retired": CREDEX_LOCAL_CMK_RETIRED_KEY_FILE, with either provider, during a CMK rotation
 *    (docs/KEY_ROTATION.md); keys under it are unwrapped (and so rewrapped), never wrapped.
 * Every CMK id derives its KEK from a root, so a wrapped key names its CMK id and the root is
 * found by trying: GCM authentication decides, and a wrong root is indistinguishable from
 * tampering, which is why a key that opens under none is integrity_error.
 *
 * Thread-safety: read-only after keywrap_local_new; every function may run concurrently.
 * Nothing blocks but the key file reads of keywrap_local_new.
 */
#ifndef CREDEX_SERVICES_KEYWRAP_KEYWRAP_LOCAL_H
#define CREDEX_SERVICES_KEYWRAP_KEYWRAP_LOCAL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/crypto/cx_crypto.h"
#include "services/keywrap/keywrap.h"

typedef struct keywrap_local keywrap_local_t;

/* Load the roots. current_file: the current root's file (NULL: no current root, as for
 * aws-kms; "": refused, the variable is not set) and cmk_id its CMK id (ignored without a
 * current root). retired_file: NULL or "" for none. Each file: 64 hex digits and an optional
 * newline, a regular file of mode 0600 or stricter; a retired root with the same key as the
 * current one is refused (a configuration mistake, not a rotation). NULL on failure with
 * FAILED_PRECONDITION, the message naming the variable and the path, never content. Blocks
 * on the file reads. Free with keywrap_local_free. */
keywrap_local_t *keywrap_local_new(const char *current_file, const char *cmk_id,
                                   const char *retired_file, cx_error_t *err);
/* Wipe and free the keys. NULL-safe. */
void keywrap_local_free(keywrap_local_t *l);

/* Whether a retired root is loaded (Describe.retired_local_cmk). */
bool keywrap_local_has_retired(const keywrap_local_t *l);

/* Wrap dek under the current root's KEK of its CMK id with ctx into blob (the local-cmk v1
 * format). FAILED_PRECONDITION without a current root; INVALID_ARGUMENT for a context over
 * the limits. */
bool keywrap_local_wrap(const keywrap_local_t *l, const cx_secret_t *dek, const cx_kv_t *ctx,
                        size_t n, unsigned char blob[KEYWRAP_BLOB_LEN], cx_error_t *err);

/* Unwrap the ciphertext of a local-cmk WrappedKey of CMK key_id (version already checked)
 * under ctx, trying each root in order. The data key (cx_secret_free), and *root ("current" or
 * "retired", for logs) set; NULL: INVALID_ARGUMENT for a malformed context or key id,
 * INTEGRITY when it opens under no root. */
cx_secret_t *keywrap_local_unwrap(const keywrap_local_t *l, const char *key_id,
                                  const unsigned char *ct, size_t len, const cx_kv_t *ctx, size_t n,
                                  const char **root, cx_error_t *err);

#endif
