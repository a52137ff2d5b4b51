/* oneDNN's bf16 matmul over plain row-major buffers, the dense peer of the bf16 benchmarks
 * (bench/gemm_bf16.c, bench/spmm_bf16.c): C(M,N) fp32 = op(A)(M,K) * op(B)(K,N), A and B bf16,
 * strides saying the transposes. oneDNN packs B on every call, as nnz does; no pre-packed
 * weights for either. Header-only (static functions): each bench is one file. */
#ifndef NNZ_BENCH_ONEDNN_MATMUL_H
#define NNZ_BENCH_ONEDNN_MATMUL_H

#include <oneapi/dnnl/dnnl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what, dnnl_status_t st) {
    fprintf(stderr, "oneDNN %s failed (status %d)\n", what, (int)st);
    exit(1);
}
#define DNNL_CHECK(call)                                \
    do {                                                \
        dnnl_status_t st_ = (call);                     \
        if (st_ != dnnl_success) die(#call, st_);       \
    } while (0)

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} onednn_matmul;

static void onednn_init(onednn_matmul *o, int M, int N, int K, bool transA, bool transB, void *A, void *B, float *C) {
    DNNL_CHECK(dnnl_engine_create(&o->engine, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&o->stream, o->engine, dnnl_stream_default_flags));
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t a_dims = {M, K}, b_dims = {K, N}, c_dims = {M, N};
    dnnl_dims_t a_str = {K, 1}, b_str = {N, 1}, c_str = {N, 1};
    if (transA) a_str[0] = 1, a_str[1] = M;
    if (transB) b_str[0] = 1, b_str[1] = K;
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_str));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_str));
    DNNL_CHECK(dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_str));
    dnnl_matmul_desc_t md;
    DNNL_CHECK(dnnl_matmul_desc_init(&md, &a_md, &b_md, NULL, &c_md));
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, o->engine, NULL));
    DNNL_CHECK(dnnl_primitive_create(&o->prim, pd));
    DNNL_CHECK(dnnl_primitive_desc_destroy(pd));
    DNNL_CHECK(dnnl_memory_create(&o->a, &a_md, o->engine, A));
    DNNL_CHECK(dnnl_memory_create(&o->b, &b_md, o->engine, B));
    DNNL_CHECK(dnnl_memory_create(&o->c, &c_md, o->engine, C));
}
static void onednn_run(onednn_matmul *o) {
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, o->a}, {DNNL_ARG_WEIGHTS, o->b}, {DNNL_ARG_DST, o->c}};
    DNNL_CHECK(dnnl_primitive_execute(o->prim, o->stream, 3, args));
    DNNL_CHECK(dnnl_stream_wait(o->stream));
}
static void onednn_fini(onednn_matmul *o) {
    dnnl_memory_destroy(o->a);
    dnnl_memory_destroy(o->b);
    dnnl_memory_destroy(o->c);
    dnnl_primitive_destroy(o->prim);
    dnnl_stream_destroy(o->stream);
    dnnl_engine_destroy(o->engine);
}

#endif
