/* Fuzz target: the local-cmk wrapped-key decoder (keywrap_blob_parse, then AES-GCM open of what
 * it accepts), the encryption-context encoders (cx_crypto_context_encode, keywrap_context_aad)
 * and the hex decoder of the root key file. Properties, not just absence of crashes: a blob
 * parses iff it is 61 bytes with format 1; a forged blob never opens; the canonical encoding is
 * independent of pair order and has the documented length; hex decoding matches a plain
 * reference decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto/cx_crypto.h"
#include "fuzz/fuzz_kit.h"
#include "services/keywrap/keywrap.h"

#define MAX_PAIRS 80 /* beyond both limits, to reach the refusals */

static void fuzz_hex(const uint8_t *data, size_t size)
{
    unsigned char out[64], want[64];
    if (size == 0 || size % 2 != 0 || size > 2 * sizeof(out))
        return;
    bool ok = true;
    for (size_t i = 0; i < size / 2; i++) {
        int hi = fuzz_hex_nibble(data[2 * i]), lo = fuzz_hex_nibble(data[2 * i + 1]);
        if (hi < 0 || lo < 0)
            ok = false;
        else
            want[i] = (unsigned char)(hi << 4 | lo);
    }
    bool got = cx_crypto_hex_decode((const char *)data, size, out, size / 2, NULL);
    if (got != ok || (ok && memcmp(out, want, size / 2) != 0))
        abort();
}

static void fuzz_blob(const uint8_t *data, size_t size)
{
    keywrap_blob_t b = {0};
    bool ok = keywrap_blob_parse(data, size, &b, NULL);
    if (ok != (size == KEYWRAP_BLOB_LEN && data[0] == KEYWRAP_FORMAT_V1))
        abort();
    if (!ok)
        return;
    static const unsigned char kek[CX_AES_KEY_LEN] = {1, 2, 3};
    cx_secret_t *key = cx_secret_from(kek, sizeof(kek));
    cx_error_t err;
    cx_secret_t *p = cx_crypto_open(key, data, 17, b.nonce, b.ct, CX_AES_KEY_LEN, b.tag, &err);
    /* A forgery would need the key: 2^-128 per try. */
    if (p != NULL || err.code != CX_ERR_INTEGRITY)
        abort();
    cx_secret_free(key);
}

static void fuzz_context(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    size_t want = data[0] % (MAX_PAIRS + 1);
    char *buf = malloc(size);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    /* Split on '\n' into key, value, key, value, ..., then the key id. */
    char *fields[2 * MAX_PAIRS + 1];
    size_t nf = 0;
    char *p = buf;
    fields[nf++] = p;
    while (nf < 2 * want + 1 && (p = strchr(p, '\n')) != NULL) {
        *p++ = '\0';
        fields[nf++] = p;
    }
    size_t n = (nf - 1) / 2;
    const char *key_id = fields[nf - 1];
    cx_kv_t kv[MAX_PAIRS], rev[MAX_PAIRS];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        kv[i] = (cx_kv_t){fields[2 * i], fields[2 * i + 1]};
        rev[n - 1 - i] = kv[i];
        total += 8 + strlen(kv[i].key) + strlen(kv[i].value);
    }
    unsigned char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    bool oka = cx_crypto_context_encode(kv, n, &a, &al, NULL);
    bool okb = cx_crypto_context_encode(rev, n, &b, &bl, NULL);
    if (oka != okb || (oka && (al != total || bl != al || memcmp(a, b, al) != 0)))
        abort();
    free(a);
    free(b);
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (keywrap_context_aad(kv, n, key_id, &aad, &aadlen, NULL)) {
        /* Accepted only within keywrap's own limits, and always longer than its parts. */
        if (!oka || n == 0 || n > KEYWRAP_CONTEXT_MAX_PAIRS ||
            aadlen != 17 + total + 4 + strlen(key_id))
            abort();
        free(aad);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_blob(data, size);
    if (size >= KEYWRAP_BLOB_LEN - 1) {
        /* Random bytes rarely start with the format byte: also try them as a well-formed blob. */
        uint8_t blob[KEYWRAP_BLOB_LEN] = {KEYWRAP_FORMAT_V1};
        memcpy(blob + 1, data, KEYWRAP_BLOB_LEN - 1);
        fuzz_blob(blob, sizeof(blob));
    }
    fuzz_context(data, size);
    fuzz_hex(data, size);
    return 0;
}
