/* Atomic file writes: data goes to a temp file in the destination's directory,
 * which is flushed, fsync'd and renamed over the destination, and then the
 * directory is fsync'd so the rename itself survives a crash. Until commit the
 * old file (if any) is untouched; any failure removes the temp file. */
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The directory part of path ("." when there is none). Caller frees. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return dup_string(".");
    if (slash == path) return dup_string("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

static void release(nnz_atomic_file *af) {
    free(af->tmp_path);
    free(af->final_path);
    memset(af, 0, sizeof *af);
}

/* Explains why a file could not be created in the directory of `path`. */
static nnz_status explain_create_failure(const char *path, int err) {
    char *dir = dir_of(path);
    const char *d = dir ? dir : "?";
    struct stat st;
    nnz_status s;
    if (stat(d, &st) != 0)
        s = nnz_fail(NNZ_ERR_IO, "cannot write '%s': directory '%s' does not exist; create it first", path, d);
    else if (!S_ISDIR(st.st_mode))
        s = nnz_fail(NNZ_ERR_IO, "cannot write '%s': '%s' is not a directory", path, d);
    else if (err == EACCES || err == EPERM || err == EROFS)
        s = nnz_fail(NNZ_ERR_IO, "cannot write '%s': directory '%s' is not writable (%s)", path, d, strerror(err));
    else
        s = nnz_fail(NNZ_ERR_IO, "cannot create a temporary file next to '%s': %s", path, strerror(err));
    free(dir);
    return s;
}

nnz_status nnz_atomic_open(nnz_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    if (!path || !*path) return nnz_fail(NNZ_ERR_INVALID_ARG, "no output path given");
    size_t n = strlen(path);
    if (path[n - 1] == '/') return nnz_fail(NNZ_ERR_INVALID_ARG, "output path '%s' names a directory, not a file", path);
    af->final_path = dup_string(path);
    af->tmp_path = malloc(n + 64);
    if (!af->final_path || !af->tmp_path) {
        release(af);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory preparing to write '%s'", path);
    }
    /* O_EXCL with a unique suffix, not mkstemp: mkstemp's 0600 would ignore the umask. */
    int fd = -1, err = 0;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        /* pid + time + this struct's address: unique enough, and EEXIST just tries another */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        unsigned long salt = (unsigned long)ts.tv_nsec ^ (unsigned long)(uintptr_t)af ^ (unsigned long)attempt * 7919u;
        snprintf(af->tmp_path, n + 64, "%s.tmp.%ld.%lx", path, (long)getpid(), salt);
        fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        err = errno;
        if (fd < 0 && err != EEXIST) break;
    }
    if (fd < 0) {
        nnz_status s = explain_create_failure(path, err);
        release(af);
        return s;
    }
    af->f = fdopen(fd, "wb");
    if (!af->f) {
        err = errno;
        close(fd);
        unlink(af->tmp_path);
        release(af);
        return nnz_fail(NNZ_ERR_IO, "cannot open a stream for '%s': %s", path, strerror(err));
    }
    return NNZ_OK;
}

nnz_status nnz_atomic_write(nnz_atomic_file *af, const void *data, size_t len) {
    if (!af->f) return nnz_fail(NNZ_ERR_INVALID_ARG, "write to an atomic file that is not open");
    if (af->failed) return nnz_fail(NNZ_ERR_IO, "an earlier write to '%s' failed", af->final_path);
    if (len && fwrite(data, 1, len, af->f) != len) {
        int err = errno;
        af->failed = true;
        return nnz_fail(NNZ_ERR_IO, "writing '%s' failed: %s; check free disk space", af->final_path, strerror(err));
    }
    return NNZ_OK;
}

void nnz_atomic_abort(nnz_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    release(af);
}

/* fsync of the directory makes the rename durable. Some file systems refuse
 * fsync on a directory (EINVAL); there it is a no-op, not an error. */
static int sync_dir(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return errno;
    int err = 0;
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) err = errno;
    close(fd);
    return err;
}

nnz_status nnz_atomic_commit(nnz_atomic_file *af) {
    if (!af->f) return nnz_fail(NNZ_ERR_INVALID_ARG, "commit of an atomic file that is not open");
    const char *path = af->final_path;
    if (af->failed) {
        nnz_status s = nnz_fail(NNZ_ERR_IO, "not writing '%s': an earlier write failed; the old file is unchanged", path);
        nnz_atomic_abort(af);
        return s;
    }
    const char *step = NULL;
    if (fflush(af->f) != 0) step = "flushing";
    else if (fsync(fileno(af->f)) != 0) step = "syncing";
    int err = errno;
    if (fclose(af->f) != 0 && !step) { step = "closing"; err = errno; }
    af->f = NULL;
    if (!step && rename(af->tmp_path, path) != 0) { step = "renaming the temporary file onto"; err = errno; }
    if (step) {
        nnz_status s = nnz_fail(NNZ_ERR_IO, "%s '%s' failed: %s; the old file is unchanged", step, path, strerror(err));
        unlink(af->tmp_path);
        release(af);
        return s;
    }
    err = sync_dir(path);
    nnz_status s = NNZ_OK;
    if (err) s = nnz_fail(NNZ_ERR_IO, "wrote '%s' but could not sync its directory: %s", path, strerror(err));
    release(af);
    return s;
}
