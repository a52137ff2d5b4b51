/* Tensor views and data-type traits. */
#include "base/base.h"

#include <string.h>

size_t nnz_dtype_size(nnz_dtype t) { return t == NNZ_BF16 ? 2 : 4; }
const char *nnz_dtype_name(nnz_dtype t) { return t == NNZ_BF16 ? "bf16" : "f32"; }

nnz_status nnz_precision_parse(const char *name, nnz_dtype *out) {
    if (name && (strcmp(name, "fp32") == 0 || strcmp(name, "f32") == 0)) *out = NNZ_F32;
    else if (name && strcmp(name, "bf16") == 0) *out = NNZ_BF16;
    else return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown precision '%s': use fp32 or bf16", name ? name : "(null)");
    return NNZ_OK;
}

int64_t nnz_tensor_numel(const nnz_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t nnz_tensor_bytes(const nnz_tensor *t) {
    return (size_t)nnz_tensor_numel(t) * nnz_dtype_size(t->dtype);
}

void nnz_shape_str(const int64_t *shape, int ndim, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "(");
    for (int i = 0; i < ndim; i++)
        off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%lld", i ? "," : "", (long long)shape[i]);
    snprintf(buf + off, off < len ? len - off : 0, ")");
}
