/* Training progress on stderr: on a terminal, one bar redrawn in place
 * (loss, accuracy, images/s, ETA); otherwise (a log file, CI) one plain line
 * per interval. Epoch ends always get their own line with the test accuracy. */
#include "cli.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C kills at once */
}

void cli_progress_catch_sigint(void) { signal(SIGINT, on_sigint); }
bool cli_progress_interrupted(void) { return interrupted != 0; }

void cli_format_duration(double sec, char *buf, size_t len) {
    if (!(sec >= 0) || sec > 1e8) {
        snprintf(buf, len, "?");
        return;
    }
    long s = (long)(sec + 0.5);
    if (s >= 3600) snprintf(buf, len, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60) snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
    else snprintf(buf, len, "%lds", s);
}

void cli_progress_init(cli_progress *p) {
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDERR_FILENO) == 1;
}

void cli_progress_finish(cli_progress *p) {
    if (p->drawn) fputc('\n', stderr);
    p->drawn = false;
    fflush(stderr);
}

bool cli_progress_fn(const nnz_progress *pr, void *user) {
    cli_progress *p = user;
    char eta[32], el[32];
    cli_format_duration(pr->eta_sec, eta, sizeof eta);
    cli_format_duration(pr->elapsed_sec, el, sizeof el);
    if (pr->note) {
        if (p->drawn) fputs("\r\033[K", stderr);
        p->drawn = false;
        fputs(pr->note, stderr);
    }
    if (pr->epoch_end) {
        if (p->drawn) fputs("\r\033[K", stderr);
        fprintf(stderr, "epoch %d/%d  loss %.4f  train acc %.2f%%  test acc %.2f%%  %.0f img/s  elapsed %s\n",
                pr->epoch, pr->epochs, pr->loss, 100.0 * pr->accuracy, 100.0 * pr->test_accuracy,
                pr->images_per_sec, el);
        p->drawn = false;
    } else if (p->tty) {
        const int width = 24;
        double frac = pr->steps_total ? (double)pr->step / (double)pr->steps_total : 0;
        int full = (int)(frac * width + 0.5);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < full ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %3.0f%%  loss %.4f  acc %.2f%%  %.0f img/s  ETA %s", pr->epoch,
                pr->epochs, bar, 100 * frac, pr->loss, 100.0 * pr->accuracy, pr->images_per_sec, eta);
        p->drawn = true;
    } else {
        fprintf(stderr, "epoch %d/%d  step %lld/%lld  loss %.4f  acc %.2f%%  lr %.4g  %.0f img/s  ETA %s\n",
                pr->epoch, pr->epochs, (long long)pr->step, (long long)pr->steps_total, pr->loss,
                100.0 * pr->accuracy, pr->lr, pr->images_per_sec, eta);
    }
    fflush(stderr);
    if (interrupted) {
        if (p->drawn) fputc('\n', stderr);
        p->drawn = false;
        fprintf(stderr, "interrupted: saving a checkpoint and stopping (Ctrl-C again to quit at once)\n");
        return false;
    }
    return true;
}
