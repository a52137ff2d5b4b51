/* Status codes and the per-thread last-error message. */
#include "base/base.h"

#include <string.h>

static _Thread_local char last_error[1024];

nnz_status nnz_fail(nnz_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

void nnz_clear_error(void) { last_error[0] = '\0'; }

const char *nnz_last_error(void) { return last_error; }

const char *nnz_status_name(nnz_status s) {
    switch (s) {
    case NNZ_OK: return "ok";
    case NNZ_ERR_INVALID_ARG: return "invalid argument";
    case NNZ_ERR_IO: return "I/O error";
    case NNZ_ERR_FORMAT: return "bad file format";
    case NNZ_ERR_NOMEM: return "out of memory";
    case NNZ_ERR_UNSUPPORTED: return "unsupported";
    case NNZ_ERR_NUMERIC: return "numeric error";
    case NNZ_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

#ifndef NNZ_VERSION_STRING
#define NNZ_VERSION_STRING "0.0.0"
#endif
const char *nnz_version(void) { return NNZ_VERSION_STRING; }
