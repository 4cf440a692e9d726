/*
 * edge_openapi: the OpenAPI 3.1 document of the edge's HTTP API, generated from the route table
 * (edge_routes.h) and the protobuf-c descriptors of the gateway's messages, so that the
 * document cannot drift from what the edge does. docs/openapi.json is this document as
 * committed (tools/openapi-gen writes and checks it); the edge serves it at
 * EDGE_OPENAPI_PATH.
 *
 * What the document says:
 *  - one path item per route template, one operation per route (operationId, summary, the
 *    gateway RPC as x-credex-rpc), path and query parameters typed by the request field they
 *    bind to, the request message as the JSON body of routes that take one;
 *  - schemas in the proto3 JSON mapping of common/pjson, as pjson_encode writes it: camelCase
 *    properties, enums as their value names, 64-bit integers as decimal strings, bytes as
 *    canonical base64, maps as objects, repeated fields as arrays, messages by $ref;
 *  - the input contract (common/contract) on every message a request can carry: lengths,
 *    alphabets as patterns, required fields (minus those a route binds from its path);
 *  - the success status with the reply message, and every error status the route can answer,
 *    each with the one error body and the reason codes that map to that status;
 *  - bearer authentication on every route except /healthz, /readyz and this document.
 *
 * The text is deterministic (keys in a fixed order, two-space indentation, a final newline):
 * the same build always yields the same bytes.
 */
#ifndef CREDEX_SERVICES_EDGE_EDGE_OPENAPI_H
#define CREDEX_SERVICES_EDGE_EDGE_OPENAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error/cx_error.h"

/* Where the edge serves the document (GET, no authentication). */
#define EDGE_OPENAPI_PATH "/api/credentials/openapi.json"

/* The document as JSON text into *out (malloc'd, NUL-terminated, *outlen bytes without the
 * NUL); the caller frees it with free(). Fails only out of memory or on a route table the
 * descriptors contradict (CX_ERR_INTERNAL naming the route; a unit test rules that out).
 * Pure: no I/O, no logging; reentrant (jansson is used with its allocator as configured). */
bool edge_openapi_json(char **out, size_t *outlen, cx_error_t *err);

#endif
