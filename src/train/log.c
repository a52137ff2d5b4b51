/* The JSON-lines training log: one record per log interval ("step"), per
 * epoch ("epoch") and per change of an autosparse layer's sparse execution ("sparse"). Each record is formatted whole and written with one fwrite
 * and a flush, so a reader (tail -f, a plotting script) never sees half a line
 * unless the process dies inside that one call. */
#include "train/train.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
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

/* One JSON line: a step interval, or an epoch (which adds the test accuracy). */
static nnz_status log_record(nnz_train_log *log, const char *type, const nnz_progress *p, float loss_v, float acc_v,
                             bool with_test) {
    if (!log->f) return NNZ_OK;
    char loss[32], acc[32], lr[32], ips[32], el[32], test[64] = "", line[512];
    num(loss, sizeof loss, loss_v);
    num(acc, sizeof acc, acc_v);
    num(lr, sizeof lr, p->lr);
    num(ips, sizeof ips, p->images_per_sec);
    num(el, sizeof el, p->elapsed_sec);
    if (with_test) {
        char t[32];
        num(t, sizeof t, p->test_accuracy);
        snprintf(test, sizeof test, ",\"test_accuracy\":%s", t);
    }
    int n = snprintf(line, sizeof line,
                     "{\"type\":\"%s\",\"epoch\":%d,\"step\":%lld,\"loss\":%s,\"accuracy\":%s,\"lr\":%s,"
                     "\"images_per_sec\":%s,\"elapsed\":%s%s}\n",
                     type, p->epoch, (long long)p->step, loss, acc, lr, ips, el, test);
    return emit(log, line, n);
}

nnz_status nnz_log_step(nnz_train_log *log, const nnz_progress *p) {
    return log_record(log, "step", p, p->loss, p->accuracy, false);
}

nnz_status nnz_log_epoch(nnz_train_log *log, const nnz_progress *p, float train_loss, float train_accuracy) {
    return log_record(log, "epoch", p, train_loss, train_accuracy, true);
}

nnz_status nnz_log_sparse(nnz_train_log *log, int64_t step, const char *layer, double zeros, const char *format,
                          const char *why) {
    if (!log->f) return NNZ_OK;
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "type", "sparse") &&
              cJSON_AddNumberToObject(j, "step", (double)step + 1) && cJSON_AddStringToObject(j, "layer", layer) &&
              cJSON_AddNumberToObject(j, "zeros", zeros) && cJSON_AddStringToObject(j, "format", format) &&
              cJSON_AddStringToObject(j, "why", why);
    char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the training log");
    char *line = malloc(strlen(text) + 2);
    nnz_status st = NNZ_ERR_NOMEM;
    if (line) {
        const int n = snprintf(line, strlen(text) + 2, "%s\n", text);
        st = emit(log, line, n);
    } else {
        nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the training log");
    }
    free(line);
    cJSON_free(text);
    return st;
}
