/* fuzz_kit: see fuzz_kit.h. */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_kit.h"

size_t fuzz_split(const uint8_t *data, size_t size, uint8_t sep, fuzz_part_t *parts, size_t max)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i < size && n + 1 < max; i++)
        if (data[i] == sep) {
            parts[n++] = (fuzz_part_t){data + start, i - start};
            start = i + 1;
        }
    parts[n++] = (fuzz_part_t){data + start, size - start};
    return n;
}

char *fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL)
        abort();
    if (len > 0)
        memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

size_t fuzz_b64url_encode(const uint8_t *in, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = abc[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = abc[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return o;
}

int fuzz_hex_nibble(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t fuzz_hex_decode(const uint8_t *in, size_t len, uint8_t *out, size_t outsz)
{
    size_t n = 0;
    for (size_t i = 0; i + 1 < len && n < outsz;) {
        int hi = fuzz_hex_nibble(in[i]), lo = fuzz_hex_nibble(in[i + 1]);
        if (hi < 0 || lo < 0) {
            i++;
            continue;
        }
        out[n++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    return n;
}
