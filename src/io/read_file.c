/* Whole-file reads, optionally through zlib, with a size cap that is checked
 * while reading: a gzip bomb stops at max_bytes instead of filling memory. */
#include "io/io.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* deflate cannot expand by more than about 1032:1; used to bound a size hint
 * taken from an untrusted gzip trailer. */
#define DEFLATE_MAX_RATIO 1032u
#define READ_CHUNK ((size_t)1 << 24)
/* The first buffer is never larger than this: past it the buffer grows as data arrives. */
#define MAX_SIZE_HINT ((size_t)256 << 20)

/* Moves buf[0..used) into a fresh buffer of cap bytes. */
static nnz_status grow(uint8_t **buf, size_t used, size_t cap, const char *path) {
    uint8_t *nb = nnz_alloc(cap, "file contents");
    if (!nb) return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s' (%zu bytes)", path, cap);
    if (used) memcpy(nb, *buf, used);
    nnz_free(*buf);
    *buf = nb;
    return NNZ_OK;
}

/* The uncompressed size recorded in the gzip trailer (mod 2^32), as a hint. */
static size_t gzip_size_hint(FILE *f, size_t file_size) {
    unsigned char t[4];
    if (file_size < 18 || fseek(f, -4, SEEK_END) != 0 || fread(t, 1, 4, f) != 4) return 0;
    return (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
}

static nnz_status too_big(const char *path, bool gz, size_t max_bytes) {
    return nnz_fail(NNZ_ERR_FORMAT, "'%s' is larger than the limit of %zu bytes%s; is it the right file? (if it is, "
                    "raise NNZ_SIZE_LIMIT)", path, max_bytes,
                    gz ? " after decompression (a corrupt or hostile gzip file?)" : "");
}

/* prefix: stop at max_bytes without looking further (nnz_read_prefix); otherwise a file
 * longer than max_bytes is an error. */
static nnz_status read_file(const char *path, bool gz, size_t max_bytes, bool prefix, uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return nnz_fail(NNZ_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return nnz_fail(NNZ_ERR_IO, "'%s' is not a regular file", path);
    }
    size_t file_size = (size_t)st.st_size;
    if (!gz && !prefix && file_size > max_bytes) {
        fclose(f);
        return too_big(path, gz, max_bytes);
    }
    size_t hint = file_size;
    if (gz) {
        size_t trailer = gzip_size_hint(f, file_size);
        size_t bound = file_size > SIZE_MAX / DEFLATE_MAX_RATIO ? SIZE_MAX : file_size * DEFLATE_MAX_RATIO;
        hint = trailer < bound ? trailer : bound;
        if (hint > MAX_SIZE_HINT) hint = MAX_SIZE_HINT;
    }
    fclose(f);
    if (hint > max_bytes) hint = max_bytes;

    gzFile g = NULL;
    FILE *raw = NULL;
    if (gz) g = gzopen(path, "rb");
    else raw = fopen(path, "rb");
    if (!g && !raw) return nnz_fail(NNZ_ERR_IO, "cannot open '%s': %s", path, strerror(errno ? errno : ENOMEM));

    uint8_t *buf = NULL;
    size_t used = 0, cap = 0;
    nnz_status s = NNZ_OK;
    /* Read one byte past the hint so that EOF is seen without a second pass. */
    size_t first_cap = hint < max_bytes ? hint + 1 : hint;
    if (first_cap == 0) first_cap = 1;
    s = grow(&buf, 0, first_cap, path);
    cap = first_cap;
    while (s == NNZ_OK) {
        if (used == cap) {
            if (cap >= max_bytes) {
                if (prefix) break;
                /* Full at the cap: one more byte means the file is too big. */
                uint8_t probe;
                int more = g ? gzread(g, &probe, 1) : (int)fread(&probe, 1, 1, raw);
                if (more > 0) s = too_big(path, gz, max_bytes);
                else if (more < 0) s = nnz_fail(NNZ_ERR_FORMAT, "corrupt gzip data in '%s'", path);
                break;
            }
            size_t ncap = cap > max_bytes / 2 ? max_bytes : cap * 2;
            if (ncap < cap + 1) ncap = cap + 1;
            s = grow(&buf, used, ncap, path);
            cap = ncap;
            continue;
        }
        size_t want = cap - used < READ_CHUNK ? cap - used : READ_CHUNK;
        if (g) {
            int got = gzread(g, buf + used, (unsigned)want);
            if (got < 0) {
                int zerr;
                const char *msg = gzerror(g, &zerr);
                s = nnz_fail(NNZ_ERR_FORMAT, "corrupt gzip data in '%s': %s; re-download the file", path, msg);
                break;
            }
            if (got == 0) {
                int zerr = Z_OK;
                const char *msg = gzerror(g, &zerr);
                if (zerr != Z_OK && zerr != Z_STREAM_END)
                    s = nnz_fail(NNZ_ERR_FORMAT, "corrupt gzip data in '%s': %s; re-download the file", path, msg);
                break;
            }
            used += (size_t)got;
        } else {
            size_t got = fread(buf + used, 1, want, raw);
            used += got;
            if (got < want) {
                if (ferror(raw)) s = nnz_fail(NNZ_ERR_IO, "reading '%s' failed: %s", path, strerror(errno));
                break;
            }
        }
    }
    if (g) {
        int rc = gzclose(g);
        /* A truncated gzip stream reads fine until its end and is reported only here. */
        if (s == NNZ_OK && rc == Z_BUF_ERROR)
            s = nnz_fail(NNZ_ERR_FORMAT, "gzip file '%s' is truncated; re-download it", path);
    }
    if (raw) fclose(raw);
    if (s != NNZ_OK) {
        nnz_free(buf);
        return s;
    }
    *data = buf;
    *size = used;
    return NNZ_OK;
}

nnz_status nnz_read_file(const char *path, bool gz, size_t max_bytes, uint8_t **data, size_t *size) {
    return read_file(path, gz, max_bytes, false, data, size);
}

nnz_status nnz_read_prefix(const char *path, bool gz, size_t bytes, uint8_t **data, size_t *size) {
    if (bytes == 0) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_read_prefix: zero bytes asked of '%s'", path);
    return read_file(path, gz, bytes, true, data, size);
}
