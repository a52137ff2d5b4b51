/* The model zoo. Node names are a contract: PyTorch fixtures (tests/gen) and
 * checkpoints name parameters "<node>.weight" etc., so do not rename. */
#include "nn/nn.h"

#include <string.h>

static const char *const zoo_names[] = {"mlp", "lenet5", "vgg8", "mbv2-tiny", NULL};

const char *const *nnz_zoo_names(void) { return zoo_names; }

static void build_mlp(nnz_model *m, int num_classes) {
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc1", 1024, true);
    nnz_add_activation(m, "relu1", NNZ_OP_RELU);
    nnz_add_linear(m, "fc2", 1024, true);
    nnz_add_activation(m, "relu2", NNZ_OP_RELU);
    nnz_add_linear(m, "fc3", num_classes, true);
}

static void build_lenet5(nnz_model *m, int num_classes) {
    nnz_add_conv2d(m, "conv1", 32, 5, 1, 2, 1, true);
    nnz_add_activation(m, "relu1", NNZ_OP_RELU);
    nnz_add_pool(m, "pool1", NNZ_OP_MAXPOOL, 2, 2, 0);
    nnz_add_conv2d(m, "conv2", 64, 5, 1, 2, 1, true);
    nnz_add_activation(m, "relu2", NNZ_OP_RELU);
    nnz_add_pool(m, "pool2", NNZ_OP_MAXPOOL, 2, 2, 0);
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc1", 512, true);
    nnz_add_activation(m, "relu3", NNZ_OP_RELU);
    nnz_add_linear(m, "fc2", num_classes, true);
}

/* conv3x3 (no bias) -> bn -> relu, named conv<i>, bn<i>, relu<i> */
static void vgg_conv(nnz_model *m, int i, int out_ch) {
    char name[NNZ_NAME_MAX];
    snprintf(name, sizeof name, "conv%d", i);
    nnz_add_conv2d(m, name, out_ch, 3, 1, 1, 1, false);
    snprintf(name, sizeof name, "bn%d", i);
    nnz_add_batchnorm(m, name);
    snprintf(name, sizeof name, "relu%d", i);
    nnz_add_activation(m, name, NNZ_OP_RELU);
}

static void build_vgg8(nnz_model *m, int num_classes) {
    vgg_conv(m, 1, 64);
    vgg_conv(m, 2, 64);
    nnz_add_pool(m, "pool1", NNZ_OP_MAXPOOL, 2, 2, 0);
    vgg_conv(m, 3, 128);
    vgg_conv(m, 4, 128);
    nnz_add_pool(m, "pool2", NNZ_OP_MAXPOOL, 2, 2, 0);
    vgg_conv(m, 5, 256);
    vgg_conv(m, 6, 256);
    nnz_add_pool(m, "pool3", NNZ_OP_MAXPOOL, 2, 2, 0);
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc1", 256, true);
    nnz_add_activation(m, "relu7", NNZ_OP_RELU);
    nnz_add_linear(m, "fc2", num_classes, true);
}

/* MobileNetV2's inverted residual: pw expand -> dw -> pw project (+ skip). */
static void mbv2_block(nnz_model *m, int i, int in, int out, int stride, int expansion) {
    int hidden = in * expansion;
    int block_input = m->n_nodes - 1;
    char name[NNZ_NAME_MAX];
#define NAME(part) (snprintf(name, sizeof name, "blocks.%d.%s", i, part), name)
    nnz_block_begin(m);
    nnz_add_conv2d(m, NAME("pw1"), hidden, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, NAME("bn1"));
    nnz_add_activation(m, NAME("act1"), NNZ_OP_RELU6);
    nnz_add_conv2d(m, NAME("dw"), hidden, 3, stride, 1, hidden, false);
    nnz_add_batchnorm(m, NAME("bn2"));
    nnz_add_activation(m, NAME("act2"), NNZ_OP_RELU6);
    nnz_add_conv2d(m, NAME("pw2"), out, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, NAME("bn3"));
    if (stride == 1 && in == out) nnz_add_residual(m, NAME("add"), block_input);
    nnz_block_end(m);
#undef NAME
}

static void build_mbv2_tiny(nnz_model *m, int num_classes) {
    static const int cfg[6][4] = {{16, 16, 1, 1}, {16, 24, 2, 6}, {24, 24, 1, 6},
                                  {24, 32, 2, 6}, {32, 32, 1, 6}, {32, 64, 1, 6}};
    nnz_add_conv2d(m, "stem.conv", 16, 3, 1, 1, 1, false);
    nnz_add_batchnorm(m, "stem.bn");
    nnz_add_activation(m, "stem.act", NNZ_OP_RELU6);
    for (int i = 0; i < 6; i++) mbv2_block(m, i, cfg[i][0], cfg[i][1], cfg[i][2], cfg[i][3]);
    nnz_add_conv2d(m, "head.conv", 256, 1, 1, 0, 1, false);
    nnz_add_batchnorm(m, "head.bn");
    nnz_add_activation(m, "head.act", NNZ_OP_RELU6);
    nnz_add_global_avgpool(m, "pool");
    nnz_add_linear(m, "fc", num_classes, true);
}

/* AlexNet (Krizhevsky et al. 2012) with the original layer shapes, for ImageNet-sized inputs
 * (224x224x3): conv1 96x11x11 stride 4 (pad 2, as torchvision, so 224 gives 55x55), maxpool 3/2,
 * conv2 256x5x5 pad 2, maxpool 3/2, conv3 384x3x3, conv4 384x3x3, conv5 256x3x3 (pad 1), maxpool
 * 3/2 -> 6x6x256 = 9216, fc6 4096, fc7 4096, fc8 num_classes. Differences from the paper: groups
 * = 1 everywhere (the paper split conv2, conv4 and conv5 over two GPUs: groups 2, half their
 * weights), no local response normalization, no dropout (inference). 62.4 M parameters with 1000
 * classes. It is not in nnz_zoo_names(): no data set nnz reads has images it fits (the smallest
 * input it takes is 63x63); nnz run --synthetic runs it (scripts/alexnet-planner). */
static void build_alexnet(nnz_model *m, int num_classes) {
    nnz_add_conv2d(m, "conv1", 96, 11, 4, 2, 1, true);
    nnz_add_activation(m, "relu1", NNZ_OP_RELU);
    nnz_add_pool(m, "pool1", NNZ_OP_MAXPOOL, 3, 2, 0);
    nnz_add_conv2d(m, "conv2", 256, 5, 1, 2, 1, true);
    nnz_add_activation(m, "relu2", NNZ_OP_RELU);
    nnz_add_pool(m, "pool2", NNZ_OP_MAXPOOL, 3, 2, 0);
    nnz_add_conv2d(m, "conv3", 384, 3, 1, 1, 1, true);
    nnz_add_activation(m, "relu3", NNZ_OP_RELU);
    nnz_add_conv2d(m, "conv4", 384, 3, 1, 1, 1, true);
    nnz_add_activation(m, "relu4", NNZ_OP_RELU);
    nnz_add_conv2d(m, "conv5", 256, 3, 1, 1, 1, true);
    nnz_add_activation(m, "relu5", NNZ_OP_RELU);
    nnz_add_pool(m, "pool5", NNZ_OP_MAXPOOL, 3, 2, 0);
    nnz_add_flatten(m, "flatten");
    nnz_add_linear(m, "fc6", 4096, true);
    nnz_add_activation(m, "relu6", NNZ_OP_RELU);
    nnz_add_linear(m, "fc7", 4096, true);
    nnz_add_activation(m, "relu7", NNZ_OP_RELU);
    nnz_add_linear(m, "fc8", num_classes, true);
}

nnz_status nnz_zoo_build(const char *name, int in_h, int in_w, int in_c, int num_classes, nnz_model **out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_zoo_build: out is NULL");
    *out = NULL;
    static void (*const builders[])(nnz_model *, int) = {build_mlp, build_lenet5, build_vgg8, build_mbv2_tiny,
                                                         build_alexnet};
    int which = -1;
    for (int i = 0; name && zoo_names[i]; i++)
        if (strcmp(name, zoo_names[i]) == 0) which = i;
    if (name && strcmp(name, "alexnet") == 0) which = 4;
    if (which < 0)
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "unknown model '%s'; choose mlp, lenet5, vgg8 or mbv2-tiny (or alexnet, for 224x224x3 "
                        "inputs, which nnz run --synthetic runs)",
                        name ? name : "(null)");
    if (num_classes < 1 || num_classes > (1 << 20))
        return nnz_fail(NNZ_ERR_INVALID_ARG, "num_classes %d must be in 1..%d", num_classes, 1 << 20);
    nnz_model *m;
    NNZ_TRY(nnz_model_create(in_h, in_w, in_c, &m));
    builders[which](m, num_classes);
    if (m->build_error != NNZ_OK) {
        nnz_status s = nnz_fail(m->build_error, "model '%s': %s", name, m->build_message);
        nnz_model_free(m);
        return s;
    }
    *out = m;
    return NNZ_OK;
}

nnz_status nnz_model_from_zoo(const char *name, int in_h, int in_w, int in_c, int num_classes, uint64_t seed,
                              nnz_model **out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_from_zoo: out is NULL");
    *out = NULL;
    nnz_model *m;
    NNZ_TRY(nnz_zoo_build(name, in_h, in_w, in_c, num_classes, &m));
    nnz_status s = nnz_model_finalize(m, seed);
    if (s != NNZ_OK) {
        /* e.g. an input too small for the pools; copy: nnz_fail rewrites the message buffer */
        char why[512];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        s = nnz_fail(s, "model '%s' for %dx%dx%d inputs: %s", name, in_h, in_w, in_c, why);
        nnz_model_free(m);
        return s;
    }
    *out = m;
    return NNZ_OK;
}
