/*
 * edge_routes: the HTTP routes of the edge, as data (docs/HTTP_API.md lists them).
 *
 * Every route maps one method and one path template onto one gateway RPC; the edge has no
 * per-route code. A request message is built from, in this order:
 *   1. the JSON body (routes with `body`), read with the proto3 JSON mapping (common/pjson)
 *      into the RPC's request message;
 *   2. `fixed` bindings (constants the route implies, e.g. the admin list's scope);
 *   3. path parameters, then query parameters, each bound to a request field by a field path.
 * A field path names fields by their proto names, '.' between a message field and a field of
 * it ("page.page_size"); every field it ends on is a singular scalar (string, enum, integer or
 * bool) outside any oneof. A value already set by the body and given again with another value
 * is refused (400), so a body cannot retarget the secret named in the path.
 * The reply is the RPC's reply message, written with pjson's default options (what grpcurl
 * prints). The status is `status`, or 201 when `created_field` names a bool field of the reply
 * that is true. A `material` route's RPC answers credential material: the edge never writes
 * such a reply (the gateway refuses material to the edge anyway; a reply that arrives is
 * answered 500 and logged as edge.material_refused). A `redirect` route answers its success
 * with that status and a Location header built from a reply field (the JSON body as well): the
 * OAuth connect route sends the client to the provider, the callback to the UI.
 *
 * Query values are written as in a URL (percent-decoded by the edge): strings as they are,
 * enums by their value's full name (the name JSON bodies use, e.g. LIST_SECRETS_SCOPE_ALL),
 * integers in decimal within the field's range, bools as true or false.
 *
 * Walking the table (the OpenAPI generator does): edge_routes() gives every route in a fixed
 * order; edge_route_rpc() its method descriptor (input and output message types);
 * edge_field_path() the descriptor of the field a parameter binds to (its type, enum values).
 * The table is immutable and the functions are pure: thread-safe, no allocation, no logging.
 */
#ifndef CREDEX_SERVICES_EDGE_EDGE_ROUTES_H
#define CREDEX_SERVICES_EDGE_EDGE_ROUTES_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error/cx_error.h"

typedef enum edge_method {
    EDGE_GET = 0,
    EDGE_POST,
    EDGE_PATCH,
    EDGE_DELETE,
    EDGE_METHOD_COUNT_ /* not a method; keep last */
} edge_method_t;

/* "GET", "POST", "PATCH", "DELETE"; NULL for an out-of-range value. */
const char *edge_method_name(edge_method_t m);

/* The method of an HTTP method token (exact, upper case); false for any other. */
bool edge_method_parse(const char *token, edge_method_t *out);

/* A path or query parameter. */
typedef struct edge_param {
    const char *name;        /* path: the {name} of the template; query: the parameter name */
    const char *field;       /* request field path, e.g. "secret_id", "page.page_size" */
    const char *description; /* one sentence, for documentation */
} edge_param_t;

/* A request field the route always sets. */
typedef struct edge_fixed {
    const char *field; /* request field path */
    const char *value; /* in query syntax (enum value name, decimal, true|false, text) */
} edge_fixed_t;

/* Where a successful answer of a route redirects the client (its JSON body is written too, for
 * clients that do not follow redirects). */
typedef enum edge_redirect_to {
    EDGE_REDIRECT_NONE = 0, /* no redirect: `status` */
    EDGE_REDIRECT_URL,      /* the reply field holds an absolute https URL */
    /* CREDEX_EDGE_UI_URL followed by the reply field, a relative path ("" is "/"); without
     * CREDEX_EDGE_UI_URL the route answers `status` */
    EDGE_REDIRECT_UI_PATH,
} edge_redirect_to_t;

typedef struct edge_redirect {
    edge_redirect_to_t to;
    unsigned status;         /* 302 or 303 */
    const char *field;       /* reply field path (a singular string) */
    const char *description; /* one sentence, for documentation */
} edge_redirect_t;

typedef struct edge_route {
    const char *operation_id; /* stable lowerCamelCase name, unique in the table */
    edge_method_t method;
    const char *path; /* template: literal segments and {name} segments, e.g.
                         "/api/credentials/secrets/{secret_id}/rotate" */
    const ProtobufCServiceDescriptor *service; /* the gateway service, e.g. credex.v1.Secrets */
    const char *rpc;                           /* method name within it, e.g. "RotateSecret" */
    const edge_param_t *path_params;           /* one per {name}, in template order */
    size_t n_path_params;
    const edge_param_t *query_params;
    size_t n_query_params;
    const edge_fixed_t *fixed;
    size_t n_fixed;
    bool body;                 /* the request body is the JSON form of the request message */
    unsigned status;           /* success status (200) */
    const char *created_field; /* bool field of the reply: true means 201 Created; or NULL */
    bool material;             /* the RPC answers credential material: never written */
    edge_redirect_t redirect;  /* a success that redirects (to EDGE_REDIRECT_NONE: none) */
    const char *summary;       /* one sentence, for documentation */
} edge_route_t;

/* Every route, in a fixed order; *count receives their number. */
const edge_route_t *edge_routes(size_t *count);

/* The gateway method a route calls (input and output message types); NULL only for a table
 * error, which a unit test rules out. */
const ProtobufCMethodDescriptor *edge_route_rpc(const edge_route_t *route);

/* The field a field path ends on, starting at message type desc; *holder (may be NULL)
 * receives the message type that declares it. NULL when a name does not exist or a non-final
 * name is not a singular message field. */
const ProtobufCFieldDescriptor *edge_field_path(const ProtobufCMessageDescriptor *desc,
                                                const char *path,
                                                const ProtobufCMessageDescriptor **holder);

#endif
