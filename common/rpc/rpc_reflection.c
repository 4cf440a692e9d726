/*
 * rpc_reflection: grpc.reflection.v1.ServerReflection (and the same under its older name
 * grpc.reflection.v1alpha), so that grpcurl and other tools work without proto files. The embedded
 * FileDescriptorSet (built by cmake/proto.cmake) is split into its serialized FileDescriptorProtos
 * once, and a sorted symbol index (messages, enums, services, methods; nested ones too) maps each
 * name to its file. Answers carry the file and its transitive dependencies, requested file first.
 */
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

#define REFL_MAX_DEPTH 32

struct refl_file {
    const char *name;
    const unsigned char *bytes; /* into the descriptor set */
    size_t len;
    size_t *deps;
    size_t ndeps;
};

struct refl_sym {
    const char *name;
    size_t file;
};

struct rpc_reflection {
    rpc_arena_t *arena;
    struct refl_file *files;
    size_t nfiles;
    struct refl_sym *syms;
    size_t nsyms, cap_syms;
};

static bool read_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0)
            return true;
    }
    return false;
}

static void sym_add(struct rpc_reflection *r, const char *prefix, const char *name, size_t file)
{
    if (r->nsyms == r->cap_syms) {
        r->cap_syms = r->cap_syms ? r->cap_syms * 2 : 256;
        r->syms = realloc(r->syms, r->cap_syms * sizeof(*r->syms));
        if (r->syms == NULL)
            abort();
    }
    size_t pl = strlen(prefix), nl = strlen(name);
    char *full = rpc_arena_alloc(r->arena, pl + nl + 2);
    if (pl > 0) {
        memcpy(full, prefix, pl);
        full[pl] = '.';
        memcpy(full + pl + 1, name, nl);
    } else {
        memcpy(full, name, nl);
    }
    r->syms[r->nsyms].name = full;
    r->syms[r->nsyms].file = file;
    r->nsyms++;
}

static void index_message(struct rpc_reflection *r, const char *prefix,
                          const Google__Protobuf__DescriptorProto *m, size_t file, int depth)
{
    sym_add(r, prefix, m->name, file);
    if (depth >= REFL_MAX_DEPTH)
        return;
    const char *self = r->syms[r->nsyms - 1].name;
    for (size_t i = 0; i < m->n_nested_type; i++)
        index_message(r, self, m->nested_type[i], file, depth + 1);
    for (size_t i = 0; i < m->n_enum_type; i++)
        sym_add(r, self, m->enum_type[i]->name, file);
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const struct refl_sym *)a)->name, ((const struct refl_sym *)b)->name);
}

static bool file_index(const struct rpc_reflection *r, const char *name, size_t *out)
{
    for (size_t i = 0; i < r->nfiles; i++)
        if (strcmp(r->files[i].name, name) == 0) {
            *out = i;
            return true;
        }
    return false;
}

struct rpc_reflection *rpc_reflection_new(const unsigned char *fds, size_t len, cx_error_t *err)
{
    struct rpc_reflection *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->arena = rpc_arena_new(64 * 1024);
    ProtobufCAllocator alloc = rpc_arena_allocator(r->arena);
    Google__Protobuf__FileDescriptorProto **parsed = NULL;
    size_t cap = 0;
    const unsigned char *p = fds, *end = fds + len;
    while (p < end) {
        uint64_t tag, n;
        if (!read_varint(&p, end, &tag) || tag != ((1u << 3) | 2u) || !read_varint(&p, end, &n) ||
            n > (uint64_t)(end - p))
            goto bad;
        if (r->nfiles == cap) {
            cap = cap ? cap * 2 : 16;
            r->files = realloc(r->files, cap * sizeof(*r->files));
            parsed = realloc(parsed, cap * sizeof(*parsed));
            if (r->files == NULL || parsed == NULL)
                abort();
        }
        Google__Protobuf__FileDescriptorProto *f =
            google__protobuf__file_descriptor_proto__unpack(&alloc, (size_t)n, p);
        if (f == NULL || f->name == NULL)
            goto bad;
        memset(&r->files[r->nfiles], 0, sizeof(r->files[0]));
        r->files[r->nfiles].name = f->name;
        r->files[r->nfiles].bytes = p;
        r->files[r->nfiles].len = (size_t)n;
        parsed[r->nfiles] = f;
        r->nfiles++;
        p += n;
    }
    for (size_t i = 0; i < r->nfiles; i++) {
        const Google__Protobuf__FileDescriptorProto *f = parsed[i];
        const char *pkg = f->package ? f->package : "";
        r->files[i].deps = rpc_arena_alloc(r->arena, (f->n_dependency + 1) * sizeof(size_t));
        for (size_t d = 0; d < f->n_dependency; d++)
            if (file_index(r, f->dependency[d], &r->files[i].deps[r->files[i].ndeps]))
                r->files[i].ndeps++;
        for (size_t m = 0; m < f->n_message_type; m++)
            index_message(r, pkg, f->message_type[m], i, 0);
        for (size_t e = 0; e < f->n_enum_type; e++)
            sym_add(r, pkg, f->enum_type[e]->name, i);
        for (size_t s = 0; s < f->n_service; s++) {
            sym_add(r, pkg, f->service[s]->name, i);
            const char *svc = r->syms[r->nsyms - 1].name;
            for (size_t m = 0; m < f->service[s]->n_method; m++)
                sym_add(r, svc, f->service[s]->method[m]->name, i);
        }
    }
    free(parsed);
    qsort(r->syms, r->nsyms, sizeof(*r->syms), sym_cmp);
    return r;
bad:
    free(parsed);
    cx_error_set(err, CX_ERR_INTERNAL, "embedded descriptor set does not parse");
    rpc_reflection_free(r);
    return NULL;
}

void rpc_reflection_free(struct rpc_reflection *r)
{
    if (r == NULL)
        return;
    free(r->files);
    free(r->syms);
    rpc_arena_free(r->arena);
    free(r);
}

/* Depth-first: the file, then its dependencies, each once. */
static void collect(const struct rpc_reflection *r, size_t f, bool *seen, size_t *order, size_t *n,
                    int depth)
{
    if (seen[f] || depth > REFL_MAX_DEPTH)
        return;
    seen[f] = true;
    order[(*n)++] = f;
    for (size_t i = 0; i < r->files[f].ndeps; i++)
        collect(r, r->files[f].deps[i], seen, order, n, depth + 1);
}

static void answer_files(rpc_call_t *call, const struct rpc_reflection *r, size_t f,
                         Grpc__Reflection__V1__ServerReflectionResponse *resp,
                         Grpc__Reflection__V1__FileDescriptorResponse *fdr)
{
    bool *seen = rpc_call_alloc(call, r->nfiles * sizeof(bool));
    size_t *order = rpc_call_alloc(call, r->nfiles * sizeof(size_t)), n = 0;
    collect(r, f, seen, order, &n, 0);
    fdr->n_file_descriptor_proto = n;
    fdr->file_descriptor_proto = rpc_call_alloc(call, n * sizeof(ProtobufCBinaryData));
    for (size_t i = 0; i < n; i++) {
        fdr->file_descriptor_proto[i].data = (uint8_t *)(uintptr_t)r->files[order[i]].bytes;
        fdr->file_descriptor_proto[i].len = r->files[order[i]].len;
    }
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = fdr;
}

static bool sym_find(const struct rpc_reflection *r, const char *name, size_t *file)
{
    struct refl_sym key = {.name = name};
    const struct refl_sym *s = bsearch(&key, r->syms, r->nsyms, sizeof(*r->syms), sym_cmp);
    if (s == NULL)
        return false;
    *file = s->file;
    return true;
}

static bool on_request(rpc_call_t *call, const ProtobufCMessage *request, cx_error_t *err)
{
    (void)err;
    const Grpc__Reflection__V1__ServerReflectionRequest *req =
        (const Grpc__Reflection__V1__ServerReflectionRequest *)request;
    rpc_server_t *srv = rpc_call_server(call);
    const struct rpc_reflection *r = srv->reflection;
    Grpc__Reflection__V1__ServerReflectionResponse *resp = rpc_call_alloc(call, sizeof(*resp));
    Grpc__Reflection__V1__FileDescriptorResponse *fdr = rpc_call_alloc(call, sizeof(*fdr));
    Grpc__Reflection__V1__ListServiceResponse *lsr = rpc_call_alloc(call, sizeof(*lsr));
    Grpc__Reflection__V1__ExtensionNumberResponse *enr = rpc_call_alloc(call, sizeof(*enr));
    Grpc__Reflection__V1__ErrorResponse *er = rpc_call_alloc(call, sizeof(*er));
    grpc__reflection__v1__server_reflection_response__init(resp);
    grpc__reflection__v1__file_descriptor_response__init(fdr);
    grpc__reflection__v1__list_service_response__init(lsr);
    grpc__reflection__v1__extension_number_response__init(enr);
    grpc__reflection__v1__error_response__init(er);
    resp->valid_host = req->host ? req->host : "";
    resp->original_request = (Grpc__Reflection__V1__ServerReflectionRequest *)(uintptr_t)req;
    size_t f;
    const char *missing = NULL;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        lsr->n_service = srv->nservices;
        lsr->service = rpc_call_alloc(call, srv->nservices * sizeof(*lsr->service));
        for (size_t i = 0; i < srv->nservices; i++) {
            Grpc__Reflection__V1__ServiceResponse *s = rpc_call_alloc(call, sizeof(*s));
            grpc__reflection__v1__service_response__init(s);
            s->name = (char *)(uintptr_t)srv->service_names[i];
            lsr->service[i] = s;
        }
        resp->message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp->list_services_response = lsr;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        if (file_index(r, req->file_by_filename, &f))
            answer_files(call, r, f, resp, fdr);
        else
            missing = "file not found";
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        if (sym_find(r, req->file_containing_symbol, &f))
            answer_files(call, r, f, resp, fdr);
        else
            missing = "symbol not found";
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        /* credex defines no extensions: a known type has none, an unknown one is not found. */
        if (sym_find(r, req->all_extension_numbers_of_type, &f)) {
            enr->base_type_name = req->all_extension_numbers_of_type;
            resp->message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp->all_extension_numbers_response = enr;
        } else {
            missing = "type not found";
        }
        break;
    default:
        missing = "extension not found";
        break;
    }
    if (missing != NULL) {
        er->error_code = 5; /* NOT_FOUND, as the reflection protocol defines */
        er->error_message = (char *)(uintptr_t)missing;
        resp->message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp->error_response = er;
    }
    rpc_call_send(call, &resp->base);
    return true;
}

static const rpc_stream_ops_t reflection_ops = {.on_message = on_request};

static const rpc_method_impl_t reflection_impls[] = {
    {.method = "ServerReflectionInfo", .kind = RPC_BIDI_STREAM, .stream = &reflection_ops},
};

bool rpc_reflection_register(rpc_server_t *srv, cx_error_t *err)
{
    static const rpc_service_def_t def = {.desc =
                                              &grpc__reflection__v1__server_reflection__descriptor,
                                          .impls = reflection_impls,
                                          .nimpls = 1};
    /* v1alpha is v1 under its older package name (proto/grpc/reflection/v1alpha): the same
     * handler and messages, so tools that speak only v1alpha work too. */
    static const rpc_service_def_t alpha = {
        .desc = &grpc__reflection__v1__server_reflection__descriptor,
        .name = "grpc.reflection.v1alpha.ServerReflection",
        .impls = reflection_impls,
        .nimpls = 1};
    return rpc_server_add_service(srv, &def, err) && rpc_server_add_service(srv, &alpha, err);
}
