/* nnz_prefer_startup_env: re-executes the program with OMP_WAIT_POLICY=passive when neither
 * OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, and keeps the user's setting otherwise; asks
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

/* Prints "<who> <OMP_WAIT_POLICY> <OPENBLAS_CORETYPE> <core OpenBLAS runs>". */
static void print_env(const char *who) {
    printf("%s %s %s %s", who, env_or_unset("OMP_WAIT_POLICY"), env_or_unset("OPENBLAS_CORETYPE"), nnz_blas_core());
    fflush(stdout);
}

static void set_or_unset(const char *name, const char *value) {
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

/* Runs the call in a child with the given environment; returns what the program printed. */
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

static void test_prefer_passive(void **state) {
    (void)state;
    char out[256];
    /* a core type of our own in every case, so only the OpenMP policy decides the re-exec */
    run_child(NULL, NULL, "Prescott", out, sizeof out);
    assert_string_equal(out, "re-executed passive Prescott Prescott");
    run_child("active", NULL, "Prescott", out, sizeof out); /* the user's choice stays, no re-exec */
    assert_string_equal(out, "same-process active Prescott Prescott");
    run_child(NULL, "1000", "Prescott", out, sizeof out);
    assert_string_equal(out, "same-process (unset) Prescott Prescott");
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
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prefer_passive), cmocka_unit_test(test_openblas_core),
                                       cmocka_unit_test(test_core_choice)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
