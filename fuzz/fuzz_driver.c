/*
 * A stand-in for libFuzzer's main, so every fuzz target also runs under gcc + ASan/UBSan in
 * ctest. Arguments, in libFuzzer's spelling where libFuzzer has one:
 *   FILE or DIR    replayed first (a directory: each regular file in it, in name order), then
 *                  kept as seeds to mutate (ctest passes the target's fuzz/corpus/<target>);
 *   -dict=FILE     libFuzzer dictionary: its tokens are spliced into mutated seeds, and a line
 *                  libFuzzer would refuse fails the run here too (exit 2);
 *   -runs=N        inputs generated after the replay (default 20000).
 * Generated inputs come from a deterministic xorshift generator: random bytes, and mutations of
 * the seeds (byte flips, truncation, special characters, dictionary tokens), which reach deeper
 * into parsers than noise does. With clang, -DCREDEX_FUZZ=ON links real libFuzzer instead and
 * this file is not used.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_kit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DRIVER_INPUT_MAX  (64 * 1024) /* larger files are replayed truncated */
#define DRIVER_MUTANT_MAX 8192
#define DRIVER_SEEDS_MAX  512
#define DRIVER_TOKENS_MAX 1024

typedef struct blob {
    uint8_t *data;
    size_t len;
} blob_t;

static blob_t seeds[DRIVER_SEEDS_MAX], tokens[DRIVER_TOKENS_MAX];
static size_t nseeds, ntokens;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void run(const uint8_t *data, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1); /* exact-size copy: ASan sees any overread */
    if (!copy)
        abort();
    memcpy(copy, data, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
}

static void keep(blob_t *set, size_t *n, size_t max, const uint8_t *data, size_t len)
{
    if (*n >= max)
        return;
    set[*n].data = malloc(len ? len : 1);
    if (!set[*n].data)
        abort();
    memcpy(set[*n].data, data, len);
    set[(*n)++].len = len;
}

static void run_file(const char *path)
{
    static uint8_t buf[DRIVER_INPUT_MAX];
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    run(buf, n);
    keep(seeds, &nseeds, DRIVER_SEEDS_MAX, buf, n);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void run_path(const char *path)
{
    struct dirent **ents;
    int n = scandir(path, &ents, NULL, by_name);
    if (n < 0) {
        run_file(path); /* not a directory */
        return;
    }
    for (int i = 0; i < n; i++) {
        char full[4096];
        if (ents[i]->d_name[0] != '.' &&
            snprintf(full, sizeof(full), "%s/%s", path, ents[i]->d_name) < (int)sizeof(full))
            run_file(full);
        free(ents[i]);
    }
    free(ents);
}

/* One dictionary line: blank, "# comment", or [name=]"value" with \\, \" and \xNN escapes. */
static int dict_line(const char *line)
{
    uint8_t tok[256];
    size_t n = 0;
    const char *p = line + strspn(line, " \t");
    if (*p == '\0' || *p == '\n' || *p == '#')
        return 0;
    p = strchr(p, '"');
    if (p == NULL)
        return -1;
    for (p++; *p != '"'; p++) {
        int c = (unsigned char)*p;
        if (c == '\0' || c == '\n' || n == sizeof(tok))
            return -1;
        if (c == '\\') {
            p++;
            if (*p == 'x') {
                int hi = fuzz_hex_nibble((uint8_t)p[1]),
                    lo = hi < 0 ? -1 : fuzz_hex_nibble((uint8_t)p[2]);
                if (lo < 0)
                    return -1;
                c = hi << 4 | lo;
                p += 2;
            } else if (*p == '\\' || *p == '"') {
                c = *p;
            } else {
                return -1;
            }
        }
        tok[n++] = (uint8_t)c;
    }
    p += 1 + strspn(p + 1, " \t\r\n");
    if (*p != '\0')
        return -1;
    keep(tokens, &ntokens, DRIVER_TOKENS_MAX, tok, n);
    return 0;
}

static int load_dict(const char *path)
{
    char line[1024];
    int lineno = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "fuzz: cannot read the dictionary %s\n", path);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (dict_line(line) != 0) {
            fprintf(stderr, "fuzz: %s:%d: not a libFuzzer dictionary line\n", path, lineno);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/* A mutant of a seed into buf (DRIVER_MUTANT_MAX bytes); its length. */
static size_t mutate(const blob_t *s, uint8_t *buf)
{
    size_t n = s->len < DRIVER_MUTANT_MAX ? s->len : DRIVER_MUTANT_MAX;
    memcpy(buf, s->data, n);
    for (uint64_t k = next() % 4; k > 0 && n > 0; k--) {
        size_t at = next() % n;
        switch (next() % 4) {
        case 0:
            buf[at] = (uint8_t)next(); /* flip a byte */
            break;
        case 1:
            n = at; /* truncate */
            break;
        case 2:
            buf[at] = "%\"\\/.:@-_\x00\xff\x80"[next() % 13]; /* special char */
            break;
        default: /* overwrite with a dictionary token */
            if (ntokens > 0) {
                const blob_t *t = &tokens[next() % ntokens];
                size_t len = t->len < n - at ? t->len : n - at;
                memcpy(buf + at, t->data, len);
            }
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    long runs = 20000;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "-runs=", 6) == 0)
            runs = atol(argv[i] + 6);
        else if (strncmp(argv[i], "-dict=", 6) == 0 && load_dict(argv[i] + 6) != 0)
            return 2;
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-')
            run_path(argv[i]);
    static uint8_t buf[DRIVER_MUTANT_MAX];
    for (long r = 0; r < runs; r++) {
        size_t n;
        if (nseeds > 0 && (r & 1)) {
            n = mutate(&seeds[next() % nseeds], buf);
        } else {
            n = next() % 1024;
            for (size_t i = 0; i < n; i++)
                buf[i] = (uint8_t)next();
        }
        run(buf, n);
    }
    printf("fuzz: %zu corpus files, %zu dictionary tokens, %ld inputs, no crash\n", nseeds, ntokens,
           runs);
    for (size_t i = 0; i < nseeds; i++)
        free(seeds[i].data);
    for (size_t i = 0; i < ntokens; i++)
        free(tokens[i].data);
    return 0;
}
