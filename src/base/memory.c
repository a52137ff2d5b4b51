/* Checked allocation, the arena, and size arithmetic that cannot overflow silently. */
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool nnz_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

void *nnz_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes || posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        nnz_fail(NNZ_ERR_NOMEM, "out of memory allocating %zu bytes for %s; use a smaller --batch or model",
                 bytes, what ? what : "a buffer");
        return NULL;
    }
    return p;
}

void *nnz_calloc(size_t bytes, const char *what) {
    void *p = nnz_alloc(bytes, what);
    if (p) memset(p, 0, bytes);
    return p;
}

void nnz_free(void *p) { free(p); }

struct nnz_arena_chunk {
    nnz_arena_chunk *next;
    size_t size, used;
    unsigned char *mem;
};

void nnz_arena_init(nnz_arena *a, size_t limit) {
    memset(a, 0, sizeof *a);
    a->limit = limit;
}

void *nnz_arena_alloc(nnz_arena *a, size_t bytes, const char *what) {
    size_t need = (bytes + 63) & ~(size_t)63;
    if (need < bytes) {
        nnz_fail(NNZ_ERR_NOMEM, "allocation size overflow for %s", what ? what : "a buffer");
        return NULL;
    }
    if (a->limit && a->used + need > a->limit) {
        nnz_fail(NNZ_ERR_NOMEM, "memory budget of %zu bytes exceeded allocating %zu bytes for %s; "
                 "raise --memory-budget or lower --batch", a->limit, bytes, what ? what : "a buffer");
        return NULL;
    }
    nnz_arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > ((size_t)1 << 24) ? need : ((size_t)1 << 24);
        c = nnz_alloc(sizeof *c, "arena chunk header");
        if (!c) return NULL;
        c->mem = nnz_alloc(size, what);
        if (!c->mem) { nnz_free(c); return NULL; }
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->reserved += size;
    }
    void *p = c->mem + c->used;
    c->used += need;
    a->used += need;
    memset(p, 0, bytes);
    return p;
}

void nnz_arena_free(nnz_arena *a) {
    nnz_arena_chunk *c = a->head;
    while (c) {
        nnz_arena_chunk *next = c->next;
        nnz_free(c->mem);
        nnz_free(c);
        c = next;
    }
    memset(a, 0, sizeof *a);
}

/* One "Vm...:   1234 kB" line of /proc/self/status, in bytes; 0 where it cannot be read. */
static size_t proc_status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t len = strlen(key), kib = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0 && line[len] == ':') {
            kib = (size_t)strtoull(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kib * 1024;
}

size_t nnz_resident_bytes(void) { return proc_status_kib("VmRSS"); }
size_t nnz_peak_resident_bytes(void) { return proc_status_kib("VmHWM"); }
