/* run: inference from a .nnz file under a memory budget.
 *
 * The compressed file stays in memory; the decoded weights do not. Each layer's
 * parameters are decoded into a weight buffer just before the layer runs (with
 * prefetch, the next layer's are decoded on a second thread into a second buffer
 * while this layer computes), activations live only until their last consumer, and
 * every byte of weights, activations and scratch is counted: the plan for a batch size
 * (a dry run of the same schedule) and the measured peak are the same numbers, and
 * both stay within the budget. The entry point is nnz_run_packed (nnz.h).
 *
 * Per-layer batches (plan.c; Vooturi et al. 2017, arXiv 1711.00244). The runner takes a
 * super-batch of S images and runs it stage by stage: a stage is a run of consecutive
 * weighted layers (and the parameter-free nodes after them) that goes over the S images in
 * chunks of its own batch b. A stage whose b is S streams its layers' weights, decoding
 * each just before it runs; a stage with b < S decodes all of its layers' weights once
 * into the weight buffer and keeps them for every chunk. Either way each layer is decoded
 * once per super-batch, not once per batch. Between stages the boundary tensor of all S
 * images is held (a stage may only begin where a single tensor is live). The fixed plan
 * (one stage, b = S) is the old single-batch schedule. */
#ifndef NNZ_RUN_H
#define NNZ_RUN_H

#include "nn/nn.h"
#include "pack/pack.h"

/* One weighted layer as the planner sees it (a node holding parameters, with the
 * parameter-free nodes that follow it up to the next weighted one). */
typedef struct {
    char name[NNZ_NAME_MAX];
    double decode_seconds; /* decoding its parameters once (measured) */
    size_t weight_bytes;   /* its decoded parameters, as laid out in the weight buffer */
    double flops;          /* forward FLOPs per image of its nodes */
    bool cut_before;       /* a stage may begin at this layer (layer 0: always) */
} nnz_plan_layer;

/* What a stage [first, last] (layer indices) holds besides the weight buffer while it runs
 * its super-batch of `super` images in chunks of `chunk`: act = bytes freed when it ends (the
 * boundary tensors of the super-batch, one chunk's activations and scratch, labels), sticky =
 * bytes that stay resident once touched (the libraries' buffers at that chunk). */
typedef nnz_status (*nnz_plan_bytes_fn)(void *ctx, int first, int last, int chunk, int super, size_t *act,
                                        size_t *sticky);

typedef struct {
    int n;                         /* layers, in execution order */
    const nnz_plan_layer *layer;
    double flop_rate;              /* FLOP/s of the GEMMs (measured), > 0 */
    double byte_rate;              /* bytes/s of streaming weights through a batch-1 GEMM (measured), > 0 */
    size_t budget;                 /* the whole process's bytes; SIZE_MAX = none */
    size_t fixed_bytes;            /* resident before running + decode scratch: in every plan */
    double latency;                /* most seconds one super-batch may take (estimated); 0 = none */
    int max_super;                 /* the largest super-batch tried (>= 1) */
    int super;                     /* > 0: this super-batch only */
    bool fixed;                    /* only the fixed plan: one stage, chunk = super-batch */
    nnz_plan_bytes_fn bytes;
    void *ctx;
} nnz_plan_problem;

typedef struct {
    int super, n_stages;
    int *first, *last, *chunk;     /* per stage (n_stages of each) */
    size_t weight_bytes;           /* the weight buffer: the most one stage holds */
    size_t bytes;                  /* the estimated peak of the process */
    size_t act_bytes, sticky_bytes;/* the most of each over the stages */
    double seconds;                /* estimated time of one super-batch */
    double decode_seconds;         /* of which decoding */
    double images_per_sec;         /* super / seconds */
} nnz_plan;

/* The plan with the highest estimated throughput whose estimated peak fits the budget and whose
 * super-batch time fits the latency budget. Cost of a stage over S images in chunks of b:
 *   sum over its layers of  decode_seconds + ceil(S/b) * weight_bytes / byte_rate + S * flops / flop_rate
 * (decoding once per super-batch; each chunk streams the layer's weights once; compute at the
 * GEMM rate). Memory: fixed_bytes + the weight buffer (the largest stage's: the sum of its
 * layers' weights when b < S, its largest layer's when b = S) + the most act over the stages
 * + the most sticky. NNZ_ERR_NOMEM when nothing fits the budget, NNZ_ERR_INVALID_ARG (with
 * the estimate) when the budget fits but nothing meets the latency. */
nnz_status nnz_plan_choose(const nnz_plan_problem *p, nnz_plan *out);
/* The cost model's time of stage [first, last] at chunk b of super-batch S. */
double nnz_plan_stage_seconds(const nnz_plan_problem *p, int first, int last, int chunk, int super);
void nnz_plan_free(nnz_plan *plan);

#endif
