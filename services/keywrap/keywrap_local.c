/* keywrap_local: local-cmk root keys, KEKs and the readable roots (see keywrap_local.h). */
#include "services/keywrap/keywrap_local.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCAL_HKDF_SALT   "credex-local-cmk"
#define LOCAL_HKDF_INFO   "credex local-cmk v1|"
#define LOCAL_CURRENT_VAR "CREDEX_LOCAL_CMK_KEY_FILE"
#define LOCAL_RETIRED_VAR "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE"
#define LOCAL_MAX_ROOTS   2

typedef struct local_root {
    cx_secret_t *key; /* never encrypts anything itself: only derives KEKs */
    const char *name; /* "current" or "retired" */
    cx_secret_t *kek; /* the KEK of cmk_id, derived once; current root only */
} local_root_t;

struct keywrap_local {
    local_root_t roots[LOCAL_MAX_ROOTS]; /* tried in order */
    size_t nroots;
    bool has_current;
    char cmk_id[KEYWRAP_KEY_ID_MAX + 1];
};

static cx_secret_t *local_derive_kek(const cx_secret_t *root, const char *cmk_id, cx_error_t *err)
{
    char info[sizeof(LOCAL_HKDF_INFO) + KEYWRAP_KEY_ID_MAX];
    size_t ilen = sizeof(LOCAL_HKDF_INFO) - 1;
    size_t idlen = strnlen(cmk_id, KEYWRAP_KEY_ID_MAX + 1);
    if (idlen == 0 || idlen > KEYWRAP_KEY_ID_MAX) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "key_id must be 1..%d bytes",
                     KEYWRAP_KEY_ID_MAX);
        return NULL;
    }
    memcpy(info, LOCAL_HKDF_INFO, ilen);
    memcpy(info + ilen, cmk_id, idlen);
    return cx_crypto_hkdf_sha256(root, LOCAL_HKDF_SALT, sizeof(LOCAL_HKDF_SALT) - 1, info,
                                 ilen + idlen, CX_AES_KEY_LEN, err);
}

/* A root key file: 64 hex digits and an optional final newline, as scripts/lib/pki.sh writes
 * it. Anything else is refused rather than guessed at: a mis-read root key would silently
 * make every stored secret unreadable. Errors name the variable and the path, never content. */
static cx_secret_t *local_load_root(const char *var, const char *path, cx_error_t *err)
{
    enum { HEX_LEN = 2 * CX_AES_KEY_LEN };
    unsigned char buf[HEX_LEN + 2];
    unsigned char raw[CX_AES_KEY_LEN];
    cx_secret_t *root = NULL;
    struct stat st;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "%s: cannot open %s: %s", var, path,
                     strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "%s: %s is not a regular file", var, path);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "%s: %s is accessible by group or others (mode %04o); it must be 0600 or "
                     "stricter",
                     var, path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "%s: cannot read %s: %s", var, path,
                         strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf))
            break; /* already too long to be a key file */
    }
    if (len == HEX_LEN + 1 && buf[HEX_LEN] == '\n')
        len = HEX_LEN;
    if (len != HEX_LEN ||
        !cx_crypto_hex_decode((const char *)buf, HEX_LEN, raw, sizeof(raw), NULL)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "%s: %s must hold exactly 32 bytes as 64 hex digits (and an optional "
                     "newline)",
                     var, path);
        goto out;
    }
    root = cx_secret_from(raw, sizeof(raw));
    if (root == NULL)
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
out:
    cx_crypto_wipe(buf, sizeof(buf));
    cx_crypto_wipe(raw, sizeof(raw));
    close(fd);
    return root;
}

static bool local_add_root(keywrap_local_t *l, const char *var, const char *path, const char *name,
                           cx_error_t *err)
{
    local_root_t *r = &l->roots[l->nroots];
    r->key = local_load_root(var, path, err);
    if (r->key == NULL)
        return false;
    r->name = name;
    l->nroots++;
    return true;
}

keywrap_local_t *keywrap_local_new(const char *current_file, const char *cmk_id,
                                   const char *retired_file, cx_error_t *err)
{
    keywrap_local_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (current_file != NULL) {
        size_t idlen = cmk_id != NULL ? strnlen(cmk_id, KEYWRAP_KEY_ID_MAX + 1) : 0;
        if (idlen == 0 || idlen > KEYWRAP_KEY_ID_MAX) {
            cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                         "CREDENTIAL_KMS_CMK_ID must be 1..%d bytes for local-cmk",
                         KEYWRAP_KEY_ID_MAX);
            goto out_fail;
        }
        memcpy(l->cmk_id, cmk_id, idlen);
        if (current_file[0] == '\0') {
            cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                         LOCAL_CURRENT_VAR " is not set: the local-cmk key provider needs its "
                                           "root key file (scripts/run creates "
                                           ".run/pki/local-cmk.key)");
            goto out_fail;
        }
        if (!local_add_root(l, LOCAL_CURRENT_VAR, current_file, "current", err))
            goto out_fail;
        l->has_current = true;
        l->roots[0].kek = local_derive_kek(l->roots[0].key, l->cmk_id, err);
        if (l->roots[0].kek == NULL)
            goto out_fail;
    }
    if (retired_file != NULL && retired_file[0] != '\0') {
        if (!local_add_root(l, LOCAL_RETIRED_VAR, retired_file, "retired", err))
            goto out_fail;
        /* The same key twice would only hide that the intended new root was never installed. */
        if (l->has_current && cx_secret_equal(l->roots[0].key, l->roots[1].key)) {
            cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                         LOCAL_RETIRED_VAR ": %s holds the same key as " LOCAL_CURRENT_VAR
                                           ": a retired root must be the previous key, not "
                                           "the current one",
                         retired_file);
            goto out_fail;
        }
    }
    return l;
out_fail:
    keywrap_local_free(l);
    return NULL;
}

void keywrap_local_free(keywrap_local_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nroots; i++) {
        cx_secret_free(l->roots[i].key);
        cx_secret_free(l->roots[i].kek);
    }
    cx_crypto_wipe(l, sizeof(*l));
    free(l);
}

bool keywrap_local_has_retired(const keywrap_local_t *l)
{
    return l != NULL && l->nroots > (l->has_current ? 1u : 0u);
}

bool keywrap_local_wrap(const keywrap_local_t *l, const cx_secret_t *dek, const cx_kv_t *ctx,
                        size_t n, unsigned char blob[KEYWRAP_BLOB_LEN], cx_error_t *err)
{
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (!l->has_current)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "a retired local-cmk root never wraps new keys");
    if (!keywrap_context_aad(ctx, n, l->cmk_id, &aad, &aadlen, err))
        return false;
    blob[0] = KEYWRAP_FORMAT_V1;
    bool ok = cx_crypto_seal(l->roots[0].kek, aad, aadlen, cx_secret_bytes(dek), cx_secret_len(dek),
                             blob + 1, blob + 1 + CX_GCM_NONCE_LEN,
                             blob + 1 + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN, err);
    free(aad);
    return ok;
}

/* The data key under one root, or NULL with *e set. */
static cx_secret_t *local_open(const keywrap_local_t *l, const local_root_t *r, const char *key_id,
                               const keywrap_blob_t *blob, const unsigned char *aad, size_t aadlen,
                               cx_error_t *e)
{
    if (r->kek != NULL && strcmp(key_id, l->cmk_id) == 0)
        return cx_crypto_open(r->kek, aad, aadlen, blob->nonce, blob->ct, CX_AES_KEY_LEN, blob->tag,
                              e);
    cx_secret_t *kek = local_derive_kek(r->key, key_id, e);
    if (kek == NULL)
        return NULL;
    cx_secret_t *dek =
        cx_crypto_open(kek, aad, aadlen, blob->nonce, blob->ct, CX_AES_KEY_LEN, blob->tag, e);
    cx_secret_free(kek);
    return dek;
}

cx_secret_t *keywrap_local_unwrap(const keywrap_local_t *l, const char *key_id,
                                  const unsigned char *ct, size_t len, const cx_kv_t *ctx, size_t n,
                                  const char **root, cx_error_t *err)
{
    keywrap_blob_t blob = {0};
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    cx_secret_t *dek = NULL;
    cx_error_t e;

    cx_error_clear(&e);
    if (l->nroots == 0) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "no local-cmk root is configured");
        return NULL;
    }
    /* Context and key id first: a malformed request is the caller's bug, not tampering. */
    if (!keywrap_context_aad(ctx, n, key_id, &aad, &aadlen, err))
        return NULL;
    if (!keywrap_blob_parse(ct, len, &blob, err))
        goto out;
    for (size_t i = 0; i < l->nroots && dek == NULL; i++) {
        dek = local_open(l, &l->roots[i], key_id, &blob, aad, aadlen, &e);
        if (dek != NULL)
            *root = l->roots[i].name;
        else if (e.code != CX_ERR_INTEGRITY)
            break; /* not a question of which root: no other one would do better */
    }
    if (dek == NULL && e.code == CX_ERR_INTEGRITY)
        cx_error_set(err, CX_ERR_INTEGRITY,
                     "wrapped key does not authenticate: tampered, swapped, or a different "
                     "encryption context, key id or root key");
    else if (dek == NULL)
        cx_error_copy(err, &e);
out:
    free(aad);
    return dek;
}
