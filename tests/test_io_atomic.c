/* io: atomic writes (commit, abort, failures) and bounded whole-file reads. */
#include "test_util.h"

#include "io/io.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

/* Number of entries in dir whose name contains ".tmp." (leftover temp files). */
static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void read_text(const char *path, char *buf, size_t cap) {
    uint8_t *data;
    size_t size;
    assert_int_equal(nnz_read_file(path, false, 1 << 20, &data, &size), NNZ_OK);
    assert_true(size < cap);
    memcpy(buf, data, size);
    buf[size] = '\0';
    nnz_free(data);
}

static nnz_status write_text(const char *path, const char *text) {
    nnz_atomic_file af;
    NNZ_TRY(nnz_atomic_open(&af, path));
    nnz_status s = nnz_atomic_write(&af, text, strlen(text));
    if (s != NNZ_OK) {
        nnz_atomic_abort(&af);
        return s;
    }
    return nnz_atomic_commit(&af);
}

static void test_commit_creates_and_replaces(void **state) {
    (void)state;
    char dir[256], path[512], got[64];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    assert_int_equal(write_text(path, "first"), NNZ_OK);
    read_text(path, got, sizeof got);
    assert_string_equal(got, "first");
    assert_int_equal(write_text(path, "second, longer"), NNZ_OK);
    read_text(path, got, sizeof got);
    assert_string_equal(got, "second, longer");
    assert_int_equal(count_temp_files(dir), 0);
    /* the final file obeys the umask (not mkstemp's 0600) */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t mask = umask(022);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0666 & ~mask);
    unlink(path);
    rmdir(dir);
}

static void test_abort_leaves_old_file(void **state) {
    (void)state;
    char dir[256], path[512], got[64];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/keep.txt", dir);
    assert_int_equal(write_text(path, "old contents"), NNZ_OK);
    nnz_atomic_file af;
    assert_int_equal(nnz_atomic_open(&af, path), NNZ_OK);
    assert_int_equal(count_temp_files(dir), 1); /* the temp file exists while writing... */
    assert_int_equal(nnz_atomic_write(&af, "new", 3), NNZ_OK);
    nnz_atomic_abort(&af);
    assert_int_equal(count_temp_files(dir), 0); /* ...and is gone after abort */
    read_text(path, got, sizeof got);
    assert_string_equal(got, "old contents");
    nnz_atomic_abort(&af); /* a second abort is harmless */
    unlink(path);
    rmdir(dir);
}

static void test_missing_directory_is_a_clear_error(void **state) {
    (void)state;
    char dir[256], path[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/no/such/dir/out.bin", dir);
    nnz_atomic_file af;
    assert_int_equal(nnz_atomic_open(&af, path), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "does not exist"));
    assert_non_null(strstr(nnz_last_error(), "/no/such/dir"));
    assert_null(af.f);
    /* a path through a regular file */
    char file[512];
    snprintf(file, sizeof file, "%s/plain", dir);
    tu_write_file(file, "x", 1);
    snprintf(path, sizeof path, "%s/plain/out.bin", dir);
    assert_int_equal(nnz_atomic_open(&af, path), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "not a directory"));
    assert_int_equal(nnz_atomic_open(&af, ""), NNZ_ERR_INVALID_ARG);
    assert_int_equal(count_temp_files(dir), 0);
    unlink(file);
    rmdir(dir);
}

static void test_failed_rename_removes_temp_and_keeps_target(void **state) {
    (void)state;
    /* The target is a non-empty directory: rename must fail at commit. */
    char dir[256], target[512], inner[600];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(target, sizeof target, "%s/target", dir);
    assert_int_equal(mkdir(target, 0755), 0);
    snprintf(inner, sizeof inner, "%s/inside.txt", target);
    tu_write_file(inner, "keep", 4);
    nnz_atomic_file af;
    assert_int_equal(nnz_atomic_open(&af, target), NNZ_OK);
    assert_int_equal(nnz_atomic_write(&af, "data", 4), NNZ_OK);
    assert_int_equal(nnz_atomic_commit(&af), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "target"));
    assert_non_null(strstr(nnz_last_error(), "old file is unchanged"));
    assert_int_equal(count_temp_files(dir), 0);
    struct stat st;
    assert_int_equal(stat(inner, &st), 0);
    assert_int_equal(st.st_size, 4);
    unlink(inner);
    rmdir(target);
    rmdir(dir);
}

static bool exists(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* A writer killed mid-save (SIGKILL) leaves "<path>.tmp.<pid>.<hex>": the next open of the same path
 * removes it once that process is gone, and nothing else. */
static void test_open_removes_dead_writers_temps(void **state) {
    (void)state;
    char dir[256], path[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) _exit(0);
    int wstatus;
    assert_int_equal(waitpid(child, &wstatus, 0), child); /* reaped: its pid names no process now */
    const long dead = (long)child, live = (long)getppid(), self = (long)getpid();
    char names[7][128];
    snprintf(names[0], 128, "out.bin.tmp.%ld.1f2e", dead);   /* stale: removed */
    snprintf(names[1], 128, "out.bin.tmp.%ld.ab", live);     /* a live writer's */
    snprintf(names[2], 128, "out.bin.tmp.%ld.ab", self);     /* our own */
    snprintf(names[3], 128, "out.bin.tmp.%ld.xyz", dead);    /* not the pattern */
    snprintf(names[4], 128, "other.bin.tmp.%ld.1", dead);    /* another file's */
    snprintf(names[5], 128, "out.bin.tmp.%ld.", dead);       /* no salt */
    snprintf(names[6], 128, "xout.bin.tmp.%ld.1", dead);     /* another file's */
    for (int i = 0; i < 7; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        tu_write_file(p, "x", 1);
    }
    assert_int_equal(write_text(path, "new"), NNZ_OK);
    assert_false(exists(dir, names[0]));
    for (int i = 1; i < 7; i++)
        if (!exists(dir, names[i])) fail_msg("'%s' was removed", names[i]);
    for (int i = 1; i < 7; i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    unlink(path);
    rmdir(dir);
}

/* A write that hits the file-size limit (as a full disk would) fails with a message that says so and
 * keeps the old file. */
static void test_file_size_limit_is_a_clear_error(void **state) {
    (void)state;
    char dir[256], path[512], got[64];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big.bin", dir);
    assert_int_equal(write_text(path, "old contents"), NNZ_OK);
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8192;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* write() fails with EFBIG instead */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char block[65536];
    memset(block, 7, sizeof block);
    nnz_atomic_file af;
    nnz_status s = nnz_atomic_open(&af, path);
    if (s == NNZ_OK) s = nnz_atomic_write(&af, block, sizeof block);
    if (s == NNZ_OK) s = nnz_atomic_commit(&af); /* the error may surface at the flush */
    else nnz_atomic_abort(&af);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    assert_int_equal(s, NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "big.bin"));
    assert_non_null(strstr(nnz_last_error(), "file-size limit"));
    assert_non_null(strstr(nnz_last_error(), "old file is unchanged"));
    read_text(path, got, sizeof got);
    assert_string_equal(got, "old contents");
    assert_int_equal(count_temp_files(dir), 0);
    unlink(path);
    rmdir(dir);
}

static void test_read_file_plain_gz_and_caps(void **state) {
    (void)state;
    char dir[256], plain[512], gz[512], missing[512];
    tu_make_temp_dir(dir, sizeof dir);
    snprintf(plain, sizeof plain, "%s/a.bin", dir);
    snprintf(gz, sizeof gz, "%s/a.bin.gz", dir);
    snprintf(missing, sizeof missing, "%s/none.bin", dir);
    size_t n = 100000;
    uint8_t *src = malloc(n);
    for (size_t i = 0; i < n; i++) src[i] = (uint8_t)(i * 7 + i / 256);
    tu_write_file(plain, src, n);
    gzFile g = gzopen(gz, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, src, (unsigned)n), (int)n);
    assert_int_equal(gzclose(g), Z_OK);

    uint8_t *data;
    size_t size;
    assert_int_equal(nnz_read_file(plain, false, n, &data, &size), NNZ_OK);
    assert_int_equal(size, n);
    assert_memory_equal(data, src, n);
    nnz_free(data);
    assert_int_equal(nnz_read_file(gz, true, n, &data, &size), NNZ_OK);
    assert_int_equal(size, n);
    assert_memory_equal(data, src, n);
    nnz_free(data);

    /* a prefix: exactly the bytes asked for, or the whole file when it is shorter; never an error for a longer file */
    for (int z = 0; z < 2; z++) {
        const char *f = z ? gz : plain;
        assert_int_equal(nnz_read_prefix(f, z == 1, 7, &data, &size), NNZ_OK);
        assert_int_equal(size, 7);
        assert_memory_equal(data, src, 7);
        nnz_free(data);
        assert_int_equal(nnz_read_prefix(f, z == 1, n + 100, &data, &size), NNZ_OK);
        assert_int_equal(size, n);
        assert_memory_equal(data, src, n);
        nnz_free(data);
    }
    assert_int_equal(nnz_read_prefix(plain, false, 0, &data, &size), NNZ_ERR_INVALID_ARG);
    /* One byte under the size: the cap holds for plain files and after decompression (gzip bombs). */
    assert_int_equal(nnz_read_file(plain, false, n - 1, &data, &size), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "a.bin"));
    assert_null(data);
    assert_int_equal(nnz_read_file(gz, true, n - 1, &data, &size), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "decompression"));
    assert_null(data);

    /* A gzip file cut short is reported, not silently returned short. */
    FILE *f = fopen(gz, "rb");
    uint8_t whole[200000];
    size_t zlen = fread(whole, 1, sizeof whole, f);
    fclose(f);
    tu_write_file(gz, whole, zlen / 2);
    assert_int_equal(nnz_read_file(gz, true, n, &data, &size), NNZ_ERR_FORMAT);
    assert_non_null(strstr(nnz_last_error(), "a.bin.gz"));
    assert_null(data);

    assert_int_equal(nnz_read_file(missing, false, n, &data, &size), NNZ_ERR_IO);
    assert_non_null(strstr(nnz_last_error(), "none.bin"));
    assert_int_equal(nnz_read_file(dir, false, n, &data, &size), NNZ_ERR_IO);

    /* Empty file: fine, zero bytes. */
    tu_write_file(plain, "", 0);
    assert_int_equal(nnz_read_file(plain, false, n, &data, &size), NNZ_OK);
    assert_int_equal(size, 0);
    nnz_free(data);
    free(src);
    unlink(plain);
    unlink(gz);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_creates_and_replaces),
        cmocka_unit_test(test_abort_leaves_old_file),
        cmocka_unit_test(test_missing_directory_is_a_clear_error),
        cmocka_unit_test(test_failed_rename_removes_temp_and_keeps_target),
        cmocka_unit_test(test_open_removes_dead_writers_temps),
        cmocka_unit_test(test_file_size_limit_is_a_clear_error),
        cmocka_unit_test(test_read_file_plain_gz_and_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
