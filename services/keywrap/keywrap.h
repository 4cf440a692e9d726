/*
 * keywrap: the root-key boundary. Serves credex.v1.KeyWrap to store (and Describe to gateway for
 * health); owns nothing persistent. docs/ENVELOPE.md "Key wrapping" describes the format.
 *
 * Provider local-cmk (alias dev-local), for development only:
 *  - root key: 32 bytes, 64 hex digits in CREDEX_LOCAL_CMK_KEY_FILE (mode 0600 or stricter);
 *  - KEK per CMK id = HKDF-SHA256(root, salt "credex-local-cmk",
 *                                 info "credex local-cmk v1|" + CMK id);
 *  - WrappedKey.ciphertext = 0x01 | nonce(12) | AES-256-GCM ciphertext(32) | tag(16), with
 *    associated data "credex-keywrap-v1" | canonical(encryption context) | be32(len) | key_id;
 *    key_id is the CMK id, key_version "1".
 *  - a retired root (CREDEX_LOCAL_CMK_RETIRED_KEY_FILE, a CMK rotation to a new root file) is
 *    tried after the current one when a key does not open (keywrap_local.h).
 * In production mode (CREDEX_PRODUCTION=true) the process starts but refuses every method except
 * Describe (failed_precondition) and reports NOT_SERVING.
 *
 * Provider aws-kms (keywrap_aws.h, docs/KMS.md): AWS KMS generates, decrypts and re-encrypts the
 * data keys under CREDENTIAL_KMS_CMK_ID with the encryption context as KMS EncryptionContext;
 * WrappedKey.ciphertext is KMS's CiphertextBlob, key_id the key ARN KMS reports, key_version "".
 * Rewrap is ReEncrypt, inside KMS. Describe asks DescribeKey (cached a few seconds).
 * With a retired local-cmk root (the move from local-cmk to aws-kms), local-cmk keys are
 * unwrapped under it, and Rewrap sends the data key to KMS Encrypt under the configured CMK.
 *
 * Thread-safety: after keywrap_setup returns, the state is read-only; handlers run on any
 * worker thread and find it through rpc_call_context (svc_main hands setup's state to
 * rpc_server_set_context), so several keywraps may share a process (tests do).
 */
#ifndef CREDEX_SERVICES_KEYWRAP_KEYWRAP_H
#define CREDEX_SERVICES_KEYWRAP_KEYWRAP_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config/cx_config.h"
#include "common/crypto/cx_crypto.h"
#include "common/rpc/rpc.h"

#define KEYWRAP_FORMAT_V1 0x01
#define KEYWRAP_BLOB_LEN  (1 + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN) /* 61 */
/* Encryption-context limits (keywrap.proto): entries, key bytes (1..64), value bytes. */
#define KEYWRAP_CONTEXT_MAX_PAIRS 16
#define KEYWRAP_CONTEXT_MAX_KEY   64
#define KEYWRAP_CONTEXT_MAX_VALUE 256
#define KEYWRAP_KEY_ID_MAX        255 /* as CREDENTIAL_KMS_CMK_ID */

/* Register keywrap's gRPC services on srv (svc_def_t.setup). local-cmk: loads and checks the root
 * key and derives the current KEK; fails (with a message naming the variable) when the key file
 * is unset, unreadable, not 64 hex digits, or open to group/others. aws-kms: reads the AWS_*
 * credential variables of the process environment; fails when the region, the CMK id or the
 * credentials are missing (the message names the variables); sends nothing to AWS. Either
 * provider loads CREDEX_LOCAL_CMK_RETIRED_KEY_FILE when set, with the same checks, refusing
 * it when it holds the current local-cmk root.
 * Describe reports the provider's configured name (cx_config_t.key_provider_name). */
bool keywrap_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* As keywrap_setup with the configured name given (NULL: as configured); for tests. */
bool keywrap_setup_named(rpc_server_t *srv, const cx_config_t *cfg, const char *configured_name,
                         void **state, cx_error_t *err);
/* Release what keywrap_setup kept (svc_def_t.cleanup), wiping the keys. Call only after the
 * server stopped. NULL-safe. */
void keywrap_cleanup(void *state);

/* ---- the wire format, exposed for tests and fuzzing ------------------------------------- */

/* Views into a WrappedKey.ciphertext of the local-cmk format. */
typedef struct keywrap_blob {
    const unsigned char *nonce; /* CX_GCM_NONCE_LEN */
    const unsigned char *ct;    /* CX_AES_KEY_LEN */
    const unsigned char *tag;   /* CX_GCM_TAG_LEN */
} keywrap_blob_t;

/* Split a ciphertext into its parts; INTEGRITY when its length or format byte is not the
 * local-cmk v1 format (a stored blob that changed is tampered). *out untouched on failure. */
bool keywrap_blob_parse(const unsigned char *data, size_t len, keywrap_blob_t *out,
                        cx_error_t *err);

/* Check an encryption context against the limits above (non-empty, no duplicate key) and key_id
 * (1..KEYWRAP_KEY_ID_MAX bytes), then build the associated data into *aad (malloc'd; free()).
 * INVALID_ARGUMENT on any violation; the message names the limit, never a value. */
bool keywrap_context_aad(const cx_kv_t *pairs, size_t n, const char *key_id, unsigned char **aad,
                         size_t *aadlen, cx_error_t *err);

#endif
