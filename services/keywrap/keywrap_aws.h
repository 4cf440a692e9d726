/*
 * keywrap_aws: the aws-kms provider's side of AWS (docs/KMS.md): credentials and the KMS calls
 * keywrap makes (GenerateDataKey, Decrypt, ReEncrypt, Encrypt, DescribeKey).
 *
 *  - Requests: the AWS JSON 1.1 protocol (POST /, X-Amz-Target: TrentService.<Op>), signed with
 *    SigV4 by common/http, to CREDEX_KMS_ENDPOINT or https://kms.<region>.amazonaws.com/.
 *  - Credentials: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), else a web
 *    identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, as Kubernetes IRSA sets them),
 *    exchanged with STS AssumeRoleWithWebIdentity (query API, unsigned, XML answer) at
 *    CREDEX_STS_ENDPOINT or https://sts.<region>.amazonaws.com/, and exchanged again
 *    KEYWRAP_AWS_REFRESH_AHEAD_MS before they expire (the token file is read at each exchange:
 *    the kubelet rotates it). Credentials never reach an error message or a log line.
 *  - The envelope encryption context is the KMS EncryptionContext of every operation, so KMS
 *    itself refuses to unwrap a data key under another secret's context.
 *  - Errors (one mapping, keywrap_aws_error_code): InvalidCiphertextException and
 *    IncorrectKeyException -> CX_ERR_INTEGRITY; DisabledException, KMSInvalidStateException,
 *    NotFoundException, InvalidKeyUsageException -> CX_ERR_FAILED_PRECONDITION; throttling,
 *    KMS-internal errors and HTTP 5xx, and refused connections -> retried (at most
 *    KEYWRAP_AWS_RETRIES times, jittered exponential backoff), then CX_ERR_UNAVAILABLE; timeouts
 *    -> CX_ERR_UNAVAILABLE at once; our own credentials or signature refused (AccessDenied,
 *    UnrecognizedClient, signature and token errors) -> CX_ERR_UNAVAILABLE: a deployment fault,
 *    not the caller's lack of permission (Describe reports it as permission_denied); anything
 *    else -> CX_ERR_UNAVAILABLE. Nothing ever falls back to another key or provider.
 *
 * Thread-safety: after keywrap_aws_new every function may run concurrently from any thread; the
 * credentials and the Describe cache are guarded by mutexes, never held across a KMS call; one
 * STS exchange at a time (others wait for it, or go on with credentials still valid).
 * Blocking: every call that reaches AWS blocks for at most about (KEYWRAP_AWS_RETRIES + 1)
 * times CREDEX_KMS_TIMEOUT_MS plus the backoff (under 2 s).
 */
#ifndef CREDEX_SERVICES_KEYWRAP_KEYWRAP_AWS_H
#define CREDEX_SERVICES_KEYWRAP_KEYWRAP_AWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config/cx_config.h"
#include "common/crypto/cx_crypto.h"

#define KEYWRAP_AWS_RETRIES          3
#define KEYWRAP_AWS_REFRESH_AHEAD_MS (5 * 60 * 1000)
#define KEYWRAP_AWS_DESCRIBE_TTL_MS  5000
#define KEYWRAP_AWS_BLOB_MAX         4096 /* bytes of a CiphertextBlob (what store keeps) */
#define KEYWRAP_AWS_KEY_ID_MAX       255
#define KEYWRAP_AWS_TOKEN_MAX        8192 /* bytes of a session token or web identity token */

typedef struct keywrap_aws keywrap_aws_t;

/* The AWS_* variables the provider reads (NULL or "" when unset). */
typedef struct keywrap_aws_env {
    const char *access_key_id;           /* AWS_ACCESS_KEY_ID */
    const char *secret_access_key;       /* AWS_SECRET_ACCESS_KEY */
    const char *session_token;           /* AWS_SESSION_TOKEN */
    const char *role_arn;                /* AWS_ROLE_ARN */
    const char *web_identity_token_file; /* AWS_WEB_IDENTITY_TOKEN_FILE */
    const char *role_session_name;       /* AWS_ROLE_SESSION_NAME, default "credex-keywrap" */
} keywrap_aws_env_t;

/* The process environment's AWS_* variables (pointers into the environment). */
keywrap_aws_env_t keywrap_aws_env_from_process(void);

/* Checks the configuration (region, CMK id, credentials: the message names the variables that
 * are missing, never a value) and creates the HTTP clients; nothing is sent. Strings are copied.
 * NULL with CX_ERR_FAILED_PRECONDITION for a configuration that cannot work. */
keywrap_aws_t *keywrap_aws_new(const cx_config_t *cfg, const keywrap_aws_env_t *env,
                               cx_error_t *err);
/* NULL-safe; wipes the credentials. No call may be running. */
void keywrap_aws_free(keywrap_aws_t *a);

/* What KMS wrapped: the CiphertextBlob and the key ARN KMS reports. */
typedef struct keywrap_aws_wrapped {
    unsigned char blob[KEYWRAP_AWS_BLOB_MAX];
    size_t len;
    char key_id[KEYWRAP_AWS_KEY_ID_MAX + 1];
} keywrap_aws_wrapped_t;

/* GenerateDataKey (AES_256) under the configured CMK with ctx as EncryptionContext: the
 * plaintext key in *dek (to free with cx_secret_free) and its wrapped form in *out. ctx must
 * already be checked (keywrap_context_aad). On failure nothing is set. */
bool keywrap_aws_generate(keywrap_aws_t *a, const cx_kv_t *ctx, size_t n, cx_secret_t **dek,
                          keywrap_aws_wrapped_t *out, cx_error_t *err);

/* Decrypt blob with KMS, naming key_id (so a blob of another key is refused) and ctx: the
 * 32-byte data key, or NULL. */
cx_secret_t *keywrap_aws_decrypt(keywrap_aws_t *a, const char *key_id, const unsigned char *blob,
                                 size_t len, const cx_kv_t *ctx, size_t n, cx_error_t *err);

/* ReEncrypt blob (of key_id, under ctx) to the configured CMK under the same ctx, inside KMS:
 * the data key never leaves it. */
bool keywrap_aws_reencrypt(keywrap_aws_t *a, const char *key_id, const unsigned char *blob,
                           size_t len, const cx_kv_t *ctx, size_t n, keywrap_aws_wrapped_t *out,
                           cx_error_t *err);

/* Encrypt dek (32 bytes, from a retired local-cmk root) under the configured CMK with ctx as
 * EncryptionContext: the move of a data key from local-cmk to aws-kms (Rewrap), so it leaves
 * keywrap only to KMS. ctx must already be checked. The request text holding the key is wiped;
 * on failure nothing useful is in *out. */
bool keywrap_aws_encrypt(keywrap_aws_t *a, const cx_secret_t *dek, const cx_kv_t *ctx, size_t n,
                         keywrap_aws_wrapped_t *out, cx_error_t *err);

/* The configured CMK's health from DescribeKey, cached KEYWRAP_AWS_DESCRIBE_TTL_MS. */
typedef struct keywrap_aws_health {
    bool healthy;     /* the key exists, is enabled and our credentials may describe it */
    char reason[32];  /* "" when healthy, else a credex reason code */
    char detail[160]; /* a non-secret sentence */
    char key_arn[KEYWRAP_AWS_KEY_ID_MAX + 1]; /* "" when unknown */
    int64_t checked_at_ms;                    /* wall clock of the DescribeKey call */
} keywrap_aws_health_t;
void keywrap_aws_describe(keywrap_aws_t *a, keywrap_aws_health_t *out);

const char *keywrap_aws_region(const keywrap_aws_t *a);
const char *keywrap_aws_cmk_id(const keywrap_aws_t *a);
/* "static" (environment keys) or "web_identity", for logs. */
const char *keywrap_aws_credential_source(const keywrap_aws_t *a);

/* ---- exposed for tests and fuzzing ------------------------------------------------------ */

/* Temporary credentials from STS. */
typedef struct keywrap_aws_creds {
    char access_key_id[129];
    char secret_access_key[129];
    char session_token[KEYWRAP_AWS_TOKEN_MAX + 1];
    int64_t expires_ms; /* wall clock; INT64_MAX for static credentials */
} keywrap_aws_creds_t;

/* Read an AssumeRoleWithWebIdentity answer (the Credentials element: AccessKeyId,
 * SecretAccessKey, SessionToken, Expiration as YYYY-MM-DDTHH:MM:SS[.fff]Z), each exactly once,
 * values of the characters AWS uses (no markup, no entities). False (*out untouched):
 * CX_ERR_UNAVAILABLE, the message naming the STS error code of an ErrorResponse when there is
 * one, never a value. Pure, any thread. */
bool keywrap_aws_sts_parse(const char *xml, size_t len, keywrap_aws_creds_t *out, cx_error_t *err);

/* The cx code of a KMS error answer: its HTTP status and __type (with or without the
 * "namespace#" prefix); *retry says whether it is worth another attempt, *auth whether our own
 * credentials were refused. */
cx_code_t keywrap_aws_error_code(long status, const char *type, bool *retry, bool *auth);

/* STS exchanges made so far (tests). */
uint64_t keywrap_aws_sts_exchanges(keywrap_aws_t *a);

#endif
