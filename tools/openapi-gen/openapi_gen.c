/*
 * credex-openapi: the edge's OpenAPI document (services/edge/edge_openapi.h) as this build
 * generates it.
 *
 *   credex-openapi                print it on stdout
 *   credex-openapi --write FILE   write it to FILE (through a temporary file and a rename)
 *   credex-openapi --check FILE   exit 0 when FILE holds exactly it, else 1 naming the first
 *                                 differing line and the command that regenerates FILE
 *
 * docs/openapi.json is written with --write and checked with --check by ctest.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/edge/edge_openapi.h"

#define MAX_DOC (16u * 1024u * 1024u)

static int usage(void)
{
    fputs("usage: credex-openapi [--write FILE | --check FILE]\n", stderr);
    return 2;
}

static int write_file(const char *path, const char *doc, size_t len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "credex-openapi: %s: path too long\n", path);
        return 1;
    }
    FILE *f = fopen(tmp, "wb");
    if (f == NULL || fwrite(doc, 1, len, f) != len || fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "credex-openapi: cannot write %s: %s\n", path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}

/* The file's bytes (NUL-terminated) or NULL; *len receives their number. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(MAX_DOC + 1);
    size_t n = buf != NULL ? fread(buf, 1, MAX_DOC + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > MAX_DOC) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int check_file(const char *self, const char *path, const char *doc, size_t len)
{
    size_t have_len = 0;
    char *have = read_file(path, &have_len);
    if (have != NULL && have_len == len && memcmp(have, doc, len) == 0) {
        free(have);
        return 0;
    }
    size_t line = 1;
    for (size_t i = 0; have != NULL && i < have_len && i < len && have[i] == doc[i]; i++)
        line += doc[i] == '\n';
    if (have == NULL)
        fprintf(stderr, "%s: cannot read it (%s)\n", path, strerror(errno));
    else
        fprintf(stderr, "%s differs from the generated OpenAPI document from line %zu on\n", path,
                line);
    fprintf(stderr, "regenerate it with: %s --write %s\n", self, path);
    free(have);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 1 && argc != 3)
        return usage();
    if (argc == 3 && strcmp(argv[1], "--write") != 0 && strcmp(argv[1], "--check") != 0)
        return usage();
    char *doc = NULL;
    size_t len = 0;
    cx_error_t err;
    cx_error_clear(&err);
    if (!edge_openapi_json(&doc, &len, &err)) {
        fprintf(stderr, "credex-openapi: %s\n", err.message);
        return 1;
    }
    int rc;
    if (argc == 1)
        rc = fwrite(doc, 1, len, stdout) == len && fflush(stdout) == 0 ? 0 : 1;
    else if (strcmp(argv[1], "--write") == 0)
        rc = write_file(argv[2], doc, len);
    else
        rc = check_file(argv[0], argv[2], doc, len);
    free(doc);
    return rc;
}
