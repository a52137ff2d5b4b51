/* The JSON-lines training log: one record per log interval ("step") and per
 * epoch ("epoch"). Each record is formatted whole and written with one fwrite
 * and a flush, so a reader (tail -f, a plotting script) never sees half a line
 * unless the process dies inside that one call. */
#include "train/train.h"

#include <errno.h>
#include <math.h>
#include <string.h>

nnz_status nnz_log_open(nnz_train_log *log, const char *path, bool append) {
    log->f = NULL;
    if (!path || !*path) return NNZ_OK;
    log->f = fopen(path, append ? "a" : "w");
    if (!log->f) return nnz_fail(NNZ_ERR_IO, "cannot open the log '%s': %s", path, strerror(errno));
    setvbuf(log->f, NULL, _IOLBF, 0);
    return NNZ_OK;
}

void nnz_log_close(nnz_train_log *log) {
    if (log->f) fclose(log->f);
    log->f = NULL;
}

/* JSON has no NaN/Inf: write null for them. */
static void num(char *buf, size_t len, double v) {
    if (isfinite(v)) snprintf(buf, len, "%.9g", v);
    else snprintf(buf, len, "null");
}

static nnz_status emit(nnz_train_log *log, const char *line, int n) {
    if (n < 0) return nnz_fail(NNZ_ERR_IO, "cannot format a log record");
    if (fwrite(line, 1, (size_t)n, log->f) != (size_t)n || fflush(log->f) != 0)
        return nnz_fail(NNZ_ERR_IO, "cannot write the training log: %s", strerror(errno));
    return NNZ_OK;
}

nnz_status nnz_log_step(nnz_train_log *log, const nnz_progress *p) {
    if (!log->f) return NNZ_OK;
    char loss[32], acc[32], lr[32], ips[32], el[32], line[512];
    num(loss, sizeof loss, p->loss);
    num(acc, sizeof acc, p->accuracy);
    num(lr, sizeof lr, p->lr);
    num(ips, sizeof ips, p->images_per_sec);
    num(el, sizeof el, p->elapsed_sec);
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"step\",\"epoch\":%d,\"step\":%lld,\"loss\":%s,\"accuracy\":%s,\"lr\":%s,"
                     "\"images_per_sec\":%s,\"elapsed\":%s}\n",
                     p->epoch, (long long)p->step, loss, acc, lr, ips, el);
    return emit(log, line, n);
}

nnz_status nnz_log_epoch(nnz_train_log *log, const nnz_progress *p, float train_loss, float train_accuracy) {
    if (!log->f) return NNZ_OK;
    char loss[32], acc[32], lr[32], ips[32], el[32], test[32], line[512];
    num(loss, sizeof loss, train_loss);
    num(acc, sizeof acc, train_accuracy);
    num(lr, sizeof lr, p->lr);
    num(ips, sizeof ips, p->images_per_sec);
    num(el, sizeof el, p->elapsed_sec);
    num(test, sizeof test, p->test_accuracy);
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"epoch\",\"epoch\":%d,\"step\":%lld,\"loss\":%s,\"accuracy\":%s,\"lr\":%s,"
                     "\"images_per_sec\":%s,\"elapsed\":%s,\"test_accuracy\":%s}\n",
                     p->epoch, (long long)p->step, loss, acc, lr, ips, el, test);
    return emit(log, line, n);
}
