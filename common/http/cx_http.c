/* cx_http: bounded response bodies for libcurl transfers. */
#include <stdlib.h>
#include <string.h>

#include "common/http/cx_http.h"

size_t cx_http_buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    cx_http_buf_t *b = ud;
    size_t n = size * nmemb;
    if (nmemb != 0 && n / nmemb != size)
        return 0;
    if (n > b->max || b->len > b->max - n) {
        b->too_big = true;
        return 0;
    }
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    p[b->len + n] = '\0';
    b->data = p;
    b->len += n;
    return n;
}

void cx_http_buf_reset(cx_http_buf_t *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->too_big = false;
}
