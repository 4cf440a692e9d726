/*
 * Fuzz target: OpenFGA's answers (common/fga), the policy engine's responses that every
 * authorization decision is read from. The first byte (modulo 8; '0'..'7' in the corpus)
 * picks the answer kind (modulo 4: check, read, list objects, read changes) and the form:
 *  0-3  the body's text;
 *  4-7  an answer of the right shape built with jansson from lines of the input: the first
 *       line is the check's "allowed" ('t' true, 'f' false, 'n' null, '1' a number, else a
 *       string) or the continuation token; each further line is an object (list objects), or
 *       a tuple "user<TAB>relation<TAB>object<TAB>timestamp" (read, read changes; an empty
 *       field leaves the member out). Every input then gets past the JSON parser.
 * Invariants (abort on violation): a refusal says why in the taxonomy's fail-closed code or a
 * resource limit; an answer of the right shape is accepted (a well-formed answer refused would
 * deny every request while OpenFGA is healthy): a check whose "allowed" is a boolean, any list
 * of objects, any page of tuples, any changelog page with a token under 256 bytes.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/fga/cx_fga.h"
#include "fuzz/fuzz_kit.h"

#define LINES_MAX 1000 /* one page: cx_fga reads at most 1000 tuples */

/* A JSON string of the line, or NULL (member left out) for what JSON text cannot carry to the
 * parser: invalid UTF-8, and NUL, which jansson reads only when asked to. */
static json_t *as_json_string(const fuzz_part_t *f)
{
    return memchr(f->data, '\0', f->len) ? NULL : json_stringn((const char *)f->data, f->len);
}

/* {"key"|"tuple_key": {user, relation, object}, "timestamp"|"operation": ...} from a line. */
static json_t *tuple(const fuzz_part_t *line, const char *keyname, const char *extra)
{
    static const char *const names[] = {"user", "relation", "object"};
    fuzz_part_t f[4];
    size_t n = fuzz_split(line->data, line->len, '\t', f, 4);
    json_t *key = json_object(), *t = json_object();
    for (size_t i = 0; i < n && i < 3; i++)
        if (f[i].len > 0)
            json_object_set_new(key, names[i], as_json_string(&f[i]));
    json_object_set_new(t, keyname, key);
    if (n > 3)
        json_object_set_new(t, extra, as_json_string(&f[3]));
    return t;
}

/* The answer built from the lines; *must_accept when it is of the right shape. */
static json_t *build(cx_fga_answer_t kind, const uint8_t *data, size_t size, bool *must_accept)
{
    static fuzz_part_t lines[LINES_MAX + 1];
    size_t n = fuzz_split(data, size, '\n', lines, LINES_MAX + 1);
    json_t *answer = json_object(), *list = json_array();
    *must_accept = true;
    if (kind == CX_FGA_ANSWER_CHECK) {
        uint8_t c = lines[0].len ? lines[0].data[0] : 0;
        json_t *v = c == 't'   ? json_true()
                    : c == 'f' ? json_false()
                    : c == 'n' ? json_null()
                    : c == '1' ? json_integer(1)
                               : as_json_string(&lines[0]);
        *must_accept = json_is_boolean(v);
        json_object_set_new(answer, "allowed", v);
        json_object_set_new(answer, "resolution", json_string(""));
    } else if (kind != CX_FGA_ANSWER_LIST_OBJECTS) {
        json_object_set_new(answer, "continuation_token", as_json_string(&lines[0]));
        if (kind == CX_FGA_ANSWER_CHANGES && lines[0].len >= 256)
            *must_accept = false; /* may exceed the token limit */
    }
    for (size_t i = kind == CX_FGA_ANSWER_LIST_OBJECTS ? 0 : 1; i < n; i++) {
        if (kind == CX_FGA_ANSWER_LIST_OBJECTS)
            json_array_append_new(list, as_json_string(&lines[i]));
        else if (kind == CX_FGA_ANSWER_READ)
            json_array_append_new(list, tuple(&lines[i], "key", "timestamp"));
        else
            json_array_append_new(list, tuple(&lines[i], "tuple_key", "operation"));
    }
    if (kind == CX_FGA_ANSWER_CHECK)
        json_decref(list);
    else
        json_object_set_new(answer,
                            kind == CX_FGA_ANSWER_READ           ? "tuples"
                            : kind == CX_FGA_ANSWER_LIST_OBJECTS ? "objects"
                                                                 : "changes",
                            list);
    return answer;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cx_fga_answer_t kind = (cx_fga_answer_t)(data[0] % 4);
    bool built = data[0] % 8 >= 4, must_accept = false;
    char *body = NULL;
    size_t len = size - 1;
    json_t *answer = NULL;
    if (built) {
        answer = build(kind, data + 1, size - 1, &must_accept);
        body = json_dumps(answer, JSON_COMPACT);
        if (body == NULL)
            abort();
        len = strlen(body);
    }
    cx_error_t err;
    bool ok = cx_fga_decode_answer(kind, built ? body : (const char *)data + 1, len, &err);
    if (!ok &&
        (must_accept || (err.code != CX_ERR_UNAVAILABLE && err.code != CX_ERR_RESOURCE_EXHAUSTED &&
                         err.code != CX_ERR_INTERNAL)))
        abort();
    free(body);
    json_decref(answer);
    return 0;
}
