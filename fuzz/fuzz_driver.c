/*
 * A stand-in for libFuzzer's main, so every fuzz target also runs under gcc + ASan/UBSan in
 * ctest: it replays the files named on the command line, then feeds `-runs=N` inputs made by a
 * deterministic xorshift generator (random bytes, and mutations of printable seeds that reach
 * deeper into parsers than noise does). With clang, -DCREDEX_FUZZ=ON links real libFuzzer
 * instead and this file is not used.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Each target may offer seeds (NULL-terminated) to mutate. */
extern const char *const fuzz_seeds[];

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
}

int main(int argc, char **argv)
{
    long runs = 20000;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0)
            runs = atol(argv[i] + 6);
        else
            run_file(argv[i]);
    }
    size_t nseeds = 0;
    while (fuzz_seeds[nseeds] != NULL)
        nseeds++;
    uint8_t buf[1024];
    for (long r = 0; r < runs; r++) {
        size_t n;
        if (nseeds > 0 && (r & 1)) {
            const char *s = fuzz_seeds[next() % nseeds];
            n = strlen(s) < sizeof(buf) ? strlen(s) : sizeof(buf);
            memcpy(buf, s, n);
            for (uint64_t k = next() % 4; k > 0 && n > 0; k--) {
                size_t at = next() % n;
                switch (next() % 3) {
                case 0:
                    buf[at] = (uint8_t)next();
                    break; /* flip a byte */
                case 1:
                    n = at;
                    break; /* truncate */
                default:
                    buf[at] = "%\"\\/.:@-_\x00\xff\x80"[next() % 13]; /* special char */
                }
            }
        } else {
            n = next() % sizeof(buf);
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)next();
        }
        uint8_t *copy = malloc(n ? n : 1); /* exact-size copy: ASan sees any overread */
        memcpy(copy, buf, n);
        LLVMFuzzerTestOneInput(copy, n);
        free(copy);
    }
    printf("fuzz: %ld inputs, no crash\n", runs);
    return 0;
}
