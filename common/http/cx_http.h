/*
 * cx_http: what every libcurl user in credex shares. Today: a response body buffer with a
 * declared maximum (curl's CODE_STYLE rule: every buffer has a limit), so that no peer (an
 * OpenFGA server, a JWKS endpoint, later OAuth providers) can make us allocate without bound.
 */
#ifndef CREDEX_COMMON_HTTP_CX_HTTP_H
#define CREDEX_COMMON_HTTP_CX_HTTP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cx_http_buf {
    char *data; /* NUL-terminated when non-NULL; malloc'd */
    size_t len;
    size_t max;   /* set by the caller before the transfer */
    bool too_big; /* the body passed max: the transfer was aborted */
} cx_http_buf_t;

/* CURLOPT_WRITEFUNCTION for a cx_http_buf_t given as CURLOPT_WRITEDATA: appends, keeps the
 * data NUL-terminated, and aborts the transfer (returns 0) past max or on out-of-memory. */
size_t cx_http_buf_write(char *ptr, size_t size, size_t nmemb, void *ud);

/* Free the data and reset the buffer (max kept). NULL-safe. */
void cx_http_buf_reset(cx_http_buf_t *b);

#endif
