/* run: inference from a .nnz file under a memory budget.
 *
 * The compressed file stays in memory; the decoded weights do not. Each layer's
 * parameters are decoded into a weight buffer just before the layer runs (with
 * prefetch, the next layer's are decoded on a second thread into a second buffer
 * while this layer computes), activations live only until their last consumer, and
 * every byte of weights, activations and scratch is counted: the plan for a batch size
 * (a dry run of the same schedule) and the measured peak are the same numbers, and
 * both stay within the budget. The entry point is nnz_run_packed (nnz.h). */
#ifndef NNZ_RUN_H
#define NNZ_RUN_H

#include "nn/nn.h"
#include "pack/pack.h"

/* Bytes the schedule holds at its peak for batch B (weights buffers + activations + scratch);
 * exposed for the tests. */
typedef struct {
    size_t weights, acts, total;
} nnz_run_plan;

#endif
