/* The packer: a model -> a .nnz file (every conv/linear weight quantized and Huffman
 * coded, biases and batch-norm tensors raw fp32), and a .nnz file -> a model. */
#include "nn/nn.h"
#include "pack/pack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void nnz_pack_config_init(nnz_pack_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->conv_bits = 5;
    cfg->linear_bits = 4;
}

void nnz_pack_report_free(nnz_pack_report *r) {
    if (!r) return;
    free(r->layers);
    memset(r, 0, sizeof *r);
}

static const char *codec_name(int c) {
    return c == NNZ_CODEC_DENSE ? "dense" : c == NNZ_CODEC_SPARSE ? "sparse" : "raw";
}

/* The bits for parameter p: an override naming it or its node, else the op's default;
 * raw (0) for everything that is not a conv/linear weight. */
static int param_bits(const nnz_model *m, const nnz_param *p, const nnz_pack_config *cfg, bool *used) {
    const nnz_node *n = &m->nodes[p->node];
    bool is_weight = n->weight >= 0 && &m->params[n->weight] == p &&
                     (n->op == NNZ_OP_CONV2D || n->op == NNZ_OP_LINEAR);
    for (int i = 0; i < cfg->n_overrides; i++)
        if (strcmp(cfg->override_names[i], p->name) == 0 || (is_weight && strcmp(cfg->override_names[i], n->name) == 0)) {
            used[i] = true;
            return cfg->override_bits[i];
        }
    if (!is_weight) return 0;
    if (n->op == NNZ_OP_CONV2D && n->groups > 1)
        return cfg->depthwise_bits ? cfg->depthwise_bits : cfg->conv_bits;
    return n->op == NNZ_OP_CONV2D ? cfg->conv_bits : cfg->linear_bits;
}

static void fill_layer(nnz_pack_layer *l, const nnz_nf_tensor *t, double rmse) {
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", t->name);
    l->codec = codec_name(t->codec);
    l->bits = t->bits;
    l->gap_bits = t->gap_bits;
    l->codebook = (int)t->codebook_size;
    l->numel = (int64_t)t->numel;
    l->nonzeros = t->codec == NNZ_CODEC_RAW_F32 ? -1 : (int64_t)t->nnz;
    l->fp32_bytes = (int64_t)t->numel * 4;
    l->packed_bytes = (int64_t)t->payload_bytes;
    l->rmse = rmse;
}

static nnz_status check_config(const nnz_pack_config *cfg) {
    if (cfg->conv_bits < 1 || cfg->conv_bits > 8 || cfg->linear_bits < 1 || cfg->linear_bits > 8 ||
        cfg->depthwise_bits < 0 || cfg->depthwise_bits > 8)
        return nnz_fail(NNZ_ERR_INVALID_ARG, "bits must be 1..8 (conv %d, linear %d, depthwise %d; 0 = conv)",
                        cfg->conv_bits, cfg->linear_bits, cfg->depthwise_bits);
    for (int i = 0; i < cfg->n_overrides; i++)
        if (cfg->override_bits[i] < 0 || cfg->override_bits[i] > 8)
            return nnz_fail(NNZ_ERR_INVALID_ARG, "bits for '%s' must be 1..8 (or 0 for raw fp32), got %d",
                            cfg->override_names[i], cfg->override_bits[i]);
    if (cfg->layout < 0 || cfg->layout > 2) return nnz_fail(NNZ_ERR_INVALID_ARG, "unknown layout %d", cfg->layout);
    return NNZ_OK;
}

/* Every parameter's bits (bits[n_params]); INVALID_ARG for an override naming nothing. */
static nnz_status all_bits(const nnz_model *m, const nnz_pack_config *cfg, int *bits) {
    bool *used = calloc((size_t)cfg->n_overrides + 1, sizeof *used);
    if (!used) return nnz_fail(NNZ_ERR_NOMEM, "out of memory packing the model");
    for (int i = 0; i < m->n_params; i++) bits[i] = param_bits(m, &m->params[i], cfg, used);
    nnz_status s = NNZ_OK;
    for (int i = 0; i < cfg->n_overrides && s == NNZ_OK; i++)
        if (!used[i])
            s = nnz_fail(NNZ_ERR_INVALID_ARG, "--bits-layer names '%s', which is not a layer or tensor of the model",
                         cfg->override_names[i]);
    free(used);
    return s;
}

/* Packs every tensor into packed[n_params] (several tensors on several threads). */
static nnz_status pack_all(const nnz_model *m, const nnz_pack_config *cfg, const int *bits, nnz_packed *packed) {
    /* tensors are independent: one per thread, biggest work first is not needed at these sizes */
    nnz_status first = NNZ_OK;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < m->n_params; i++) {
        const nnz_param *p = &m->params[i];
        nnz_status r = nnz_pack_tensor(p->name, p->value.data, p->value.ndim, p->value.shape, bits[i],
                                       (nnz_layout)cfg->layout, &packed[i]);
        if (r != NNZ_OK) {
#pragma omp critical(nnz_pack_error)
            if (first == NNZ_OK) {
                first = r;
                snprintf(msg, sizeof msg, "%s", nnz_last_error());
            }
        }
    }
    return first == NNZ_OK ? NNZ_OK : nnz_fail(first, "%s", msg);
}

nnz_status nnz_pack_quantize(nnz_model *m, const nnz_pack_config *cfg_in) {
    if (!m || !m->finalized) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_pack_quantize: a finalized model is needed");
    nnz_pack_config defaults;
    nnz_pack_config_init(&defaults);
    const nnz_pack_config *cfg = cfg_in ? cfg_in : &defaults;
    NNZ_TRY(check_config(cfg));
    const int n = m->n_params;
    nnz_packed *packed = calloc((size_t)(n ? n : 1), sizeof *packed);
    int *bits = calloc((size_t)(n ? n : 1), sizeof *bits);
    nnz_status s = NNZ_OK;
    if (!packed || !bits) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory quantizing the model");
        goto done;
    }
    if ((s = all_bits(m, cfg, bits))) goto done;
    if ((s = pack_all(m, cfg, bits, packed))) goto done;
    /* decode in place: exactly what nnz_packed_load_model of the file would give */
    for (int i = 0; i < n && s == NNZ_OK; i++) {
        if (!bits[i]) continue; /* raw: unchanged */
        uint8_t *scratch = nnz_alloc(nnz_unpack_scratch_bytes(&packed[i].rec) + 1, "gap symbols");
        s = scratch ? nnz_unpack_tensor(&packed[i].rec, m->params[i].value.data, scratch, "(quantized in memory)")
                    : NNZ_ERR_NOMEM;
        nnz_free(scratch);
    }
    m->sparse_planned = false; /* the values moved (the zeros too, where a dense codebook replaced them) */
done:
    for (int i = 0; packed && i < n; i++) nnz_packed_free(&packed[i]);
    free(packed);
    free(bits);
    return s;
}

nnz_status nnz_pack(const nnz_model *m, const char *path, const nnz_pack_config *cfg_in, nnz_pack_report *rep) {
    if (rep) memset(rep, 0, sizeof *rep);
    if (!m || !m->finalized || !path) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_pack: a finalized model and a path are needed");
    nnz_pack_config defaults;
    nnz_pack_config_init(&defaults);
    const nnz_pack_config *cfg = cfg_in ? cfg_in : &defaults;
    NNZ_TRY(check_config(cfg));
    const int n = m->n_params;
    nnz_packed *packed = calloc((size_t)(n ? n : 1), sizeof *packed);
    nnz_nf_tensor *recs = calloc((size_t)(n ? n : 1), sizeof *recs);
    int *bits = calloc((size_t)(n ? n : 1), sizeof *bits);
    nnz_status s = NNZ_OK;
    char *arch = NULL;
    if (!packed || !recs || !bits) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory packing the model");
        goto done;
    }
    if ((s = all_bits(m, cfg, bits))) goto done;
    if ((s = pack_all(m, cfg, bits, packed))) goto done;
    for (int i = 0; i < n; i++) recs[i] = packed[i].rec;
    if ((s = nnz_model_to_json(m, &arch))) goto done;
    if ((s = nnz_nf_write(path, arch, recs, n))) goto done;
    if (rep) {
        rep->layers = calloc((size_t)(n ? n : 1), sizeof *rep->layers);
        if (!rep->layers) {
            s = nnz_fail(NNZ_ERR_NOMEM, "out of memory for the pack report");
            goto done;
        }
        rep->n = n;
        uint64_t end = 0;
        for (int i = 0; i < n; i++) {
            double rmse = recs[i].numel ? sqrt(packed[i].sq_error / (double)recs[i].numel) : 0;
            fill_layer(&rep->layers[i], &recs[i], recs[i].codec == NNZ_CODEC_RAW_F32 ? 0 : rmse);
            rep->fp32_bytes += (int64_t)recs[i].numel * 4;
            uint64_t e = recs[i].payload_offset + recs[i].payload_bytes;
            end = e > end ? e : end;
        }
        rep->file_bytes = (int64_t)end;
        if (n == 0) rep->file_bytes = -1;
    }
done:
    for (int i = 0; packed && i < n; i++) nnz_packed_free(&packed[i]);
    free(packed);
    free(recs);
    free(bits);
    free(arch);
    return s;
}

nnz_status nnz_pack_inspect(const char *path, nnz_pack_report *rep, char **arch_json) {
    memset(rep, 0, sizeof *rep);
    if (arch_json) *arch_json = NULL;
    nnz_nf_file f;
    NNZ_TRY(nnz_nf_load(path, &f));
    rep->layers = calloc((size_t)(f.n ? f.n : 1), sizeof *rep->layers);
    if (!rep->layers) {
        nnz_nf_free(&f);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    rep->n = f.n;
    for (int i = 0; i < f.n; i++) {
        fill_layer(&rep->layers[i], &f.tensors[i], -1);
        rep->fp32_bytes += (int64_t)f.tensors[i].numel * 4;
    }
    rep->file_bytes = (int64_t)f.size;
    if (arch_json) {
        *arch_json = f.arch_json;
        f.arch_json = NULL;
    }
    nnz_nf_free(&f);
    return NNZ_OK;
}

bool nnz_is_packed_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    char magic[8];
    bool yes = fread(magic, 1, 8, fp) == 8 && memcmp(magic, NNZ_NF_MAGIC, 7) == 0;
    fclose(fp);
    return yes;
}

/* Checks that the file's tensors are exactly the model's parameters, with their shapes. */
nnz_status nnz_pack_match_model(const nnz_nf_file *f, const nnz_model *m, const char *path, const nnz_nf_tensor **map) {
    for (int i = 0; i < m->n_params; i++) {
        const nnz_param *p = &m->params[i];
        const nnz_nf_tensor *t = nnz_nf_find(f, p->name);
        if (!t)
            return nnz_fail(NNZ_ERR_FORMAT, "'%s' lacks the tensor '%s' that its architecture declares", path, p->name);
        bool same = t->ndim == p->value.ndim;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == p->value.shape[d];
        if (!same) {
            char a[64], b[64];
            nnz_shape_str(t->shape, t->ndim, a, sizeof a);
            nnz_shape_str(p->value.shape, p->value.ndim, b, sizeof b);
            return nnz_fail(NNZ_ERR_FORMAT, "'%s': tensor '%s' has shape %s but the architecture needs %s", path,
                            p->name, a, b);
        }
        map[i] = t;
    }
    if (f->n != m->n_params)
        return nnz_fail(NNZ_ERR_FORMAT, "'%s' holds %d tensors; its architecture declares %d", path, f->n, m->n_params);
    return NNZ_OK;
}

nnz_status nnz_packed_load_model(const char *path, nnz_model **out) {
    if (!out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_packed_load_model: out is NULL");
    *out = NULL;
    nnz_nf_file f;
    NNZ_TRY(nnz_nf_load(path, &f));
    nnz_model *m = NULL;
    const nnz_nf_tensor **map = NULL;
    nnz_status s = nnz_model_from_json(f.arch_json, 0, &m);
    if (s != NNZ_OK) {
        char why[600];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        s = nnz_fail(s, "'%s': %s", path, why);
        goto done;
    }
    map = calloc((size_t)m->n_params + 1, sizeof *map);
    if (!map) {
        s = nnz_fail(NNZ_ERR_NOMEM, "out of memory loading '%s'", path);
        goto done;
    }
    if ((s = nnz_pack_match_model(&f, m, path, map))) goto done;
    nnz_status first = NNZ_OK;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < m->n_params; i++) {
        uint8_t *scratch = nnz_alloc(nnz_unpack_scratch_bytes(map[i]) + 1, "gap symbols");
        nnz_status r = scratch ? nnz_unpack_tensor(map[i], m->params[i].value.data, scratch, path) : NNZ_ERR_NOMEM;
        nnz_free(scratch);
        if (r != NNZ_OK) {
#pragma omp critical(nnz_unpack_error)
            if (first == NNZ_OK) {
                first = r;
                snprintf(msg, sizeof msg, "%s", nnz_last_error());
            }
        }
    }
    if (first != NNZ_OK) s = nnz_fail(first, "%s", msg);
done:
    free(map);
    nnz_nf_free(&f);
    if (s != NNZ_OK) nnz_model_free(m);
    else *out = m;
    return s;
}
