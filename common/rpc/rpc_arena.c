/* rpc_arena: chunked bump allocation for request-scoped memory (protobuf-c unpacking). */
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc.h"

#define ARENA_ALIGN 16

struct chunk {
    struct chunk *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

struct rpc_arena {
    struct chunk *head;
    size_t next_size;
};

static struct chunk *chunk_new(size_t size)
{
    struct chunk *c = malloc(sizeof(*c) + size);
    if (c == NULL)
        abort(); /* same policy as the gRPC core: out of memory is fatal */
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

rpc_arena_t *rpc_arena_new(size_t first_chunk)
{
    rpc_arena_t *a = malloc(sizeof(*a));
    if (a == NULL)
        abort();
    if (first_chunk < 256)
        first_chunk = 256;
    a->head = chunk_new(first_chunk);
    a->next_size = first_chunk * 2;
    return a;
}

void rpc_arena_free(rpc_arena_t *arena)
{
    if (arena == NULL)
        return;
    struct chunk *c = arena->head;
    while (c != NULL) {
        struct chunk *next = c->next;
        /* Requests and replies may carry credential material (Create, Resolve): every arena is
         * wiped before its memory goes back to the allocator. explicit_bzero is not elided. */
        explicit_bzero(c->data, c->used);
        free(c);
        c = next;
    }
    free(arena);
}

void *rpc_arena_alloc(rpc_arena_t *arena, size_t size)
{
    size_t need = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < size)
        abort(); /* overflow */
    struct chunk *c = arena->head;
    if (c->size - c->used < need) {
        size_t sz = arena->next_size;
        while (sz < need)
            sz *= 2;
        if (arena->next_size < (size_t)64 << 20)
            arena->next_size *= 2;
        c = chunk_new(sz);
        c->next = arena->head;
        arena->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    memset(p, 0, size);
    return p;
}

size_t rpc_arena_used(const rpc_arena_t *arena)
{
    size_t n = 0;
    for (const struct chunk *c = arena->head; c != NULL; c = c->next)
        n += c->used;
    return n;
}

char *rpc_arena_strndup(rpc_arena_t *arena, const char *s, size_t n)
{
    char *p = rpc_arena_alloc(arena, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void *arena_pb_alloc(void *data, size_t size)
{
    return rpc_arena_alloc(data, size);
}

static void arena_pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* released with the arena */
}

ProtobufCAllocator rpc_arena_allocator(rpc_arena_t *arena)
{
    ProtobufCAllocator a = {
        .alloc = arena_pb_alloc, .free = arena_pb_free, .allocator_data = arena};
    return a;
}
