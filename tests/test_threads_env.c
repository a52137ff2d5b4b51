/* nnz_threads_prefer_passive: re-executes the program with OMP_WAIT_POLICY=passive when
 * neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, and keeps the user's setting otherwise.
 * A forked child calls it with argv = {this test, --print-policy}; the re-executed program
 * (this binary again) prints the policy it sees and exits, so the parent reads what the
 * OpenMP runtime of the new process was started with. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nnz.h"

static const char *self_path;

/* Runs the call in a child with the given environment; returns what the program printed. */
static void run_child(const char *policy, const char *spincount, char *out, size_t len) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        if (policy) setenv("OMP_WAIT_POLICY", policy, 1);
        else unsetenv("OMP_WAIT_POLICY");
        if (spincount) setenv("GOMP_SPINCOUNT", spincount, 1);
        else unsetenv("GOMP_SPINCOUNT");
        char *args[] = {(char *)self_path, "--print-policy", NULL};
        nnz_threads_prefer_passive(args);
        /* not re-executed: report from here */
        const char *p = getenv("OMP_WAIT_POLICY");
        printf("same-process %s", p ? p : "(unset)");
        fflush(stdout);
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
    run_child(NULL, NULL, out, sizeof out);
    assert_string_equal(out, "re-executed passive");
    run_child("active", NULL, out, sizeof out); /* the user's choice stays, no re-exec */
    assert_string_equal(out, "same-process active");
    run_child(NULL, "1000", out, sizeof out);
    assert_string_equal(out, "same-process (unset)");
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--print-policy") == 0) {
        const char *p = getenv("OMP_WAIT_POLICY");
        printf("re-executed %s", p ? p : "(unset)");
        return 0;
    }
    self_path = argv[0];
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prefer_passive)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
