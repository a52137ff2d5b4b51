/* train: the training loop, the data pipeline, checkpoints (save/resume),
 * evaluation and benchmarking. The public entry points are in nnz.h. */
#ifndef NNZ_TRAIN_H
#define NNZ_TRAIN_H

#include "io/io.h"
#include "nn/nn.h"

#endif
