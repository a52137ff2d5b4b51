/* nnz_prefer_startup_env: re-executes the program with a short spin (GOMP_SPINCOUNT) when no
 * other task runs, OMP_WAIT_POLICY=passive when one does or the load cannot be read, when
 * neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, and keeps the user's setting otherwise; asks
 * OpenBLAS for its AVX-512/AVX2 kernels only where it fell back to its SSE3 ones.
 * A forked child calls it with argv = {this test, --print-env}; the re-executed program
 * (this binary again) prints the environment it sees and exits, so the parent reads what
 * the OpenMP and OpenBLAS runtimes of the new process were started with. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "nnz.h"

static const char *self_path;

static const char *env_or_unset(const char *name) {
    const char *v = getenv(name);
    return v ? v : "(unset)";
}

/* Prints "<who> <OMP_WAIT_POLICY> <OPENBLAS_CORETYPE> <core OpenBLAS runs>", and " spin <GOMP_SPINCOUNT>"
 * when that is set. */
static void print_env(const char *who) {
    printf("%s %s %s %s", who, env_or_unset("OMP_WAIT_POLICY"), env_or_unset("OPENBLAS_CORETYPE"), nnz_blas_core());
    if (getenv("GOMP_SPINCOUNT")) printf(" spin %s", getenv("GOMP_SPINCOUNT"));
    fflush(stdout);
}

static void set_or_unset(const char *name, const char *value) {
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

/* Runs the call in a child with the given environment; returns what the program printed. */
static const char *loadavg_file; /* what the child reads as /proc/loadavg; NULL: the real one */

static void run_child(const char *policy, const char *spincount, const char *coretype, char *out, size_t len) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        set_or_unset("OMP_WAIT_POLICY", policy);
        set_or_unset("GOMP_SPINCOUNT", spincount);
        set_or_unset("OPENBLAS_CORETYPE", coretype);
        set_or_unset("NNZ_LOADAVG_FILE", loadavg_file);
        char *args[] = {(char *)self_path, "--print-env", NULL};
        nnz_prefer_startup_env(args);
        print_env("same-process"); /* not re-executed: report from here */
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < len && (r = read(fds[0], out + got, len - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* a file in /proc/loadavg's format with `running` tasks runnable now (this one among them) */
static const char *fake_loadavg(const char *name, const char *text) {
    static char paths[4][256];
    static int used;
    char *p = paths[used++ % 4];
    snprintf(p, sizeof paths[0], "%s/nnz-loadavg-%d-%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(),
             name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return p;
}

static void test_wait_policy(void **state) {
    (void)state;
    char out[256];
    const char *idle = fake_loadavg("idle", "0.01 0.20 0.30 1/412 5678\n");
    const char *busy = fake_loadavg("busy", "1.90 1.20 0.30 2/412 5678\n");
    const char *bad = fake_loadavg("bad", "not a load average\n");
    /* a core type of our own in every case, so only the OpenMP policy decides the re-exec */
    loadavg_file = idle; /* nothing else runs: the short spin */
    run_child(NULL, NULL, "Prescott", out, sizeof out);
    assert_string_equal(out, "re-executed (unset) Prescott Prescott spin 30000");
    loadavg_file = busy; /* another task runs: passive */
    run_child(NULL, NULL, "Prescott", out, sizeof out);
    assert_string_equal(out, "re-executed passive Prescott Prescott");
    loadavg_file = bad; /* unreadable: passive, the safe side */
    run_child(NULL, NULL, "Prescott", out, sizeof out);
    assert_string_equal(out, "re-executed passive Prescott Prescott");
    loadavg_file = "/nonexistent/loadavg";
    run_child(NULL, NULL, "Prescott", out, sizeof out);
    assert_string_equal(out, "re-executed passive Prescott Prescott");
    /* the user's choice stays, whatever the load: no re-exec, so OpenBLAS keeps the core it chose
     * when this test process loaded it (the forked child shares it; Prescott only on CPUs it does
     * not know) */
    loadavg_file = idle;
    char want[256];
    run_child("active", NULL, "Prescott", out, sizeof out);
    snprintf(want, sizeof want, "same-process active Prescott %s", nnz_blas_core());
    assert_string_equal(out, want);
    run_child(NULL, "1000", "Prescott", out, sizeof out);
    snprintf(want, sizeof want, "same-process (unset) Prescott %s spin 1000", nnz_blas_core());
    assert_string_equal(out, want);
    loadavg_file = NULL;
    unlink(idle), unlink(busy), unlink(bad);
}

static void test_other_tasks_running(void **state) {
    (void)state;
    const char *p = fake_loadavg("count", "0.00 0.00 0.00 1/100 1\n");
    assert_int_equal(nnz_other_tasks_running(p, 2), 0);
    p = fake_loadavg("count", "3.00 0.00 0.00 4/100 1\n");
    assert_int_equal(nnz_other_tasks_running(p, 1), 3);
    p = fake_loadavg("count", "0.00 0.00 0.00 0/100 1\n"); /* this process always counts: not a real file */
    assert_int_equal(nnz_other_tasks_running(p, 1), -1);
    p = fake_loadavg("count", "0.00 0.00\n");
    assert_int_equal(nnz_other_tasks_running(p, 1), -1);
    p = fake_loadavg("count", "");
    assert_int_equal(nnz_other_tasks_running(p, 1), -1);
    unlink(p);
    assert_int_equal(nnz_other_tasks_running("/nonexistent/loadavg", 1), -1);
    assert_true(nnz_other_tasks_running("/proc/loadavg", 1) >= 0); /* the real one reads */
}

/* With the policy set, only OpenBLAS's choice can cause a re-exec: it happens exactly when
 * the CPU has AVX2 and OpenBLAS, left to itself, chose Prescott; the new process then runs
 * the better kernels. */
static void test_openblas_core(void **state) {
    (void)state;
    if (getenv("OPENBLAS_CORETYPE")) skip(); /* started with a core type: the default is not visible */
    char out[256], want[128];
    run_child("passive", NULL, NULL, out, sizeof out);
    const char *better = nnz_blas_core_better(nnz_blas_core(), nnz_isa_supported(NNZ_ISA_AVX512),
                                              nnz_isa_supported(NNZ_ISA_AVX2));
    if (better) {
        snprintf(want, sizeof want, "re-executed passive %s %s", better, better);
        assert_string_equal(out, want);
    } else {
        snprintf(want, sizeof want, "same-process passive (unset) %s", nnz_blas_core());
        assert_string_equal(out, want);
    }
}

static void test_core_choice(void **state) {
    (void)state;
    assert_string_equal(nnz_blas_core_better("Prescott", true, true), "SkylakeX");
    assert_string_equal(nnz_blas_core_better("PRESCOTT", false, true), "Haswell");
    assert_null(nnz_blas_core_better("Prescott", false, false)); /* SSE3 is the best it can do */
    assert_null(nnz_blas_core_better("Haswell", true, true));    /* a known CPU: OpenBLAS's choice */
    assert_null(nnz_blas_core_better("Zen", true, true));
    assert_null(nnz_blas_core_better("SkylakeX", true, true));
    assert_null(nnz_blas_core_better(NULL, true, true));
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--print-env") == 0) {
        print_env("re-executed");
        return 0;
    }
    self_path = argv[0];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_wait_policy), cmocka_unit_test(test_other_tasks_running), cmocka_unit_test(test_openblas_core),
                                       cmocka_unit_test(test_core_choice)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
