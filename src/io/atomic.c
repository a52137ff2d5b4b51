/* Atomic file writes: data goes to a temp file in the destination's directory,
 * which is flushed, fsync'd and renamed over the destination, and then the
 * directory is fsync'd so the rename itself survives a crash. Until commit the
 * old file (if any) is untouched; any failure removes the temp file. A writer
 * killed outright (SIGKILL, OOM killer) leaves its temp file behind: the next
 * open of the same destination removes it once its process is gone. */
#include "io/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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

/* Temp files are "<name>.tmp.<pid>.<hex salt>" next to the destination. Does `entry` (a name in
 * the destination's directory) have that form for the destination named `base`? Its pid in *pid. */
static bool is_temp_of(const char *entry, const char *base, long *pid) {
    const size_t n = strlen(base);
    if (strncmp(entry, base, n) != 0 || strncmp(entry + n, ".tmp.", 5) != 0) return false;
    const char *p = entry + n + 5;
    if (*p < '1' || *p > '9') return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno || v <= 0 || *end != '.' || !end[1]) return false;
    for (p = end + 1; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    *pid = v;
    return true;
}

/* Removes the temp files of `path` whose writer no longer exists (kill(pid, 0) says ESRCH): what a
 * SIGKILL during an earlier save left. A live writer's temp file, ours included, is never touched.
 * Best effort: an unreadable directory or a failed unlink is not an error. (Writers in another pid
 * namespace or on another host sharing the directory look dead; the worst for such a writer is a
 * failed rename, its old file kept.) */
static void remove_stale_temps(const char *path, const char *dir) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    DIR *d = opendir(dir);
    if (!d) return;
    const long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = 0;
        if (!is_temp_of(e->d_name, base, &pid) || pid == self || pid > INT32_MAX) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* The error for a failed write, flush, sync or close of the temp file of `path`: the cause in
 * words (a full disk and a file-size limit are the usual ones) and that the destination is kept. */
static nnz_status write_failure(const char *what, const char *path, int err) {
    const char *why = NULL;
    if (err == ENOSPC) why = "the disk is full";
    else if (err == EFBIG) why = "the file-size limit was hit (see ulimit -f)";
#ifdef EDQUOT
    else if (err == EDQUOT) why = "the disk quota is used up";
#endif
    struct stat st;
    const char *kept = stat(path, &st) == 0 ? "the old file is unchanged" : "no file was written";
    if (why)
        return nnz_fail(NNZ_ERR_IO, "%s '%s' failed: %s (%s); %s. Free some space or raise the limit and retry", what,
                        path, why, strerror(err), kept);
    return nnz_fail(NNZ_ERR_IO, "%s '%s' failed: %s; %s", what, path, strerror(err), kept);
}

static void release(nnz_atomic_file *af) {
    free(af->tmp_path);
    free(af->final_path);
    free(af->dir_path);
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
    af->dir_path = dir_of(path);
    if (!af->final_path || !af->tmp_path || !af->dir_path) {
        release(af);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory preparing to write '%s'", path);
    }
    remove_stale_temps(path, af->dir_path);
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
        return write_failure("writing", af->final_path, err);
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
static int sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
        unlink(af->tmp_path);
        nnz_status s = write_failure(step, path, err);
        release(af);
        return s;
    }
    err = sync_dir(af->dir_path);
    nnz_status s = NNZ_OK;
    if (err) s = nnz_fail(NNZ_ERR_IO, "wrote '%s' but could not sync its directory: %s", path, strerror(err));
    release(af);
    return s;
}

nnz_status nnz_write_file(const char *path, const void *data, size_t len) {
    if (!path || (!data && len)) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_write_file: NULL argument");
    nnz_atomic_file af;
    NNZ_TRY(nnz_atomic_open(&af, path));
    nnz_status s = nnz_atomic_write(&af, data, len);
    if (s != NNZ_OK) {
        nnz_atomic_abort(&af);
        return s;
    }
    return nnz_atomic_commit(&af);
}
