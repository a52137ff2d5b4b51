/* Checked allocation, the arena, and size arithmetic that cannot overflow silently. */
#include "base/base.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

bool nnz_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

bool nnz_parse_bytes(const char *text, size_t *out) {
    if (!text || !isdigit((unsigned char)text[0])) return false;
    char *end = NULL;
    double v = strtod(text, &end);
    double mul = 1;
    if (*end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mul = 1024.0; break;
        case 'M': mul = 1024.0 * 1024; break;
        case 'G': mul = 1024.0 * 1024 * 1024; break;
        default: return false;
        }
        end++;
        if (toupper((unsigned char)*end) == 'I') end++;
        if (toupper((unsigned char)*end) == 'B') end++;
        if (*end) return false;
    }
    v *= mul;
    if (!(v >= 1) || v > 0x1p60) return false;
    *out = (size_t)v;
    return true;
}

size_t nnz_size_limit(void) {
    const char *env = getenv("NNZ_SIZE_LIMIT");
    size_t v;
    return env && nnz_parse_bytes(env, &v) ? v : NNZ_SIZE_LIMIT_DEFAULT;
}

nnz_status nnz_size_limit_check(void) {
    const char *env = getenv("NNZ_SIZE_LIMIT");
    size_t v;
    if (env && !nnz_parse_bytes(env, &v))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "NNZ_SIZE_LIMIT='%s' is not a size; use bytes like 2G, 512M or 1000000",
                        env);
    return NNZ_OK;
}

/* More than the machine's physical memory can never be touched: refuse it rather
 * than let overcommit hand out pages that the OOM killer takes back. */
static bool beyond_physical_memory(size_t bytes) {
    if (bytes < ((size_t)1 << 30)) return false;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 && bytes / (size_t)page > (size_t)pages;
}

/* false (and the error set) when bytes can never be touched here */
static bool fits_physical_memory(size_t bytes, const char *what) {
    if (!beyond_physical_memory(bytes)) return true;
    nnz_fail(NNZ_ERR_NOMEM, "%zu bytes for %s is more than this machine's memory; use a smaller --batch or model",
             bytes, what ? what : "a buffer");
    return false;
}

static void *out_of_memory(size_t bytes, const char *what) {
    nnz_fail(NNZ_ERR_NOMEM, "out of memory allocating %zu bytes for %s; use a smaller --batch or model", bytes,
             what ? what : "a buffer");
    return NULL;
}

void *nnz_alloc(size_t bytes, const char *what) {
    void *p = NULL;
    if (!fits_physical_memory(bytes, what)) return NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes || posix_memalign(&p, 64, rounded ? rounded : 64) != 0) return out_of_memory(bytes, what);
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

/* A chunk's memory: anonymous pages, zero and page-aligned, resident only once touched, so a
 * buffer reserved but never used (the gradients, when a model only evaluates) costs no memory. */
static unsigned char *fresh_pages(size_t bytes, const char *what) {
    if (!fits_physical_memory(bytes, what)) return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? out_of_memory(bytes, what) : p;
}

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
        c->mem = fresh_pages(size, what);
        if (!c->mem) { nnz_free(c); return NULL; }
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->reserved += size;
    }
    void *p = c->mem + c->used; /* zero: chunks are fresh pages, never handed out twice */
    c->used += need;
    a->used += need;
    return p;
}

void nnz_arena_free(nnz_arena *a) {
    nnz_arena_chunk *c = a->head;
    while (c) {
        nnz_arena_chunk *next = c->next;
        munmap(c->mem, c->size);
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
