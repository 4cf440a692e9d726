/*
 * fuzz_kit: what the structure-aware harnesses share. Not a library of credex: compiled into
 * the targets that list it (fuzz/CMakeLists.txt), never into a service. Single-threaded, like
 * the harnesses; allocation failures abort (a harness has no one to report to).
 *
 *  fuzz_kit.c    splitting inputs into fields, base64url, hex (no dependencies)
 *  fuzz_bson.h   BSON documents from raw bytes, and the edit language over a real document
 *  fuzz_jws.h    keys, JWKs and compact JWS signatures made with OpenSSL
 */
#ifndef CREDEX_FUZZ_FUZZ_KIT_H
#define CREDEX_FUZZ_FUZZ_KIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- fuzz_kit.c ------------------------------------------------------------------------- */

typedef struct fuzz_part {
    const uint8_t *data;
    size_t len;
} fuzz_part_t;

/* Split data at each sep into at most max parts; the last part keeps the rest, separators and
 * all. Returns the number of parts: at least 1 (an empty input is one empty part). */
size_t fuzz_split(const uint8_t *data, size_t size, uint8_t sep, fuzz_part_t *parts, size_t max);

/* A NUL-terminated malloc'd copy of len bytes (free()). */
char *fuzz_strndup(const uint8_t *data, size_t len);

/* Base64url without padding (RFC 7515): FUZZ_B64URL_LEN(len) characters and a NUL into out. */
#define FUZZ_B64URL_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
size_t fuzz_b64url_encode(const uint8_t *in, size_t len, char *out);

/* The value of a hex digit (either case), or -1. */
int fuzz_hex_nibble(uint8_t c);

/* Lenient hex: each pair of hex digits is a byte, anything else is skipped. Returns the bytes
 * written to out (at most outsz). */
size_t fuzz_hex_decode(const uint8_t *in, size_t len, uint8_t *out, size_t outsz);

#endif
