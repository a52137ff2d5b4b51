/* The architecture as JSON ("nnz-arch", version 1), and back.
 *
 *   {"format":"nnz-arch","version":1,"input":[h,w,c],
 *    "nodes":[{"op":"conv2d","name":"conv1","input":-1,"block":-1,
 *              "out_ch":32,"k":5,"stride":1,"pad":2,"groups":1,"bias":true}, ...]}
 *
 * Every node has "op", "name", "input" (an earlier node's index, -1 = the model
 * input) and "block" (-1 = none; optional when reading). Then exactly the fields
 * of its op, all required:
 *   conv2d: out_ch k stride pad groups bias      linear: out_features bias
 *   batchnorm: eps momentum                      maxpool, avgpool: k stride pad
 *   dropout: p                                   add: skip
 *   relu relu6 identity flatten global_avgpool: none
 * Unknown or repeated fields are errors (a typo must not silently become a
 * default). The reader checks types and ranges here and the graph rules in the
 * builder; it never trusts the input. docs/arch-json.md documents the format.
 */
#include "nn/nn.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ARCH_FORMAT "nnz-arch"
#define ARCH_VERSION 1

typedef enum { F_INT, F_BOOL, F_FLOAT } field_type;
typedef struct {
    const char *key;
    field_type type;
    size_t offset; /* into nnz_node */
} field;

#define FIELD(key, type, member) {key, type, offsetof(nnz_node, member)}
static const field conv_fields[] = {FIELD("out_ch", F_INT, out_ch), FIELD("k", F_INT, k),
                                    FIELD("stride", F_INT, stride), FIELD("pad", F_INT, pad),
                                    FIELD("groups", F_INT, groups), FIELD("bias", F_BOOL, has_bias), {NULL, 0, 0}};
static const field linear_fields[] = {FIELD("out_features", F_INT, out_ch), FIELD("bias", F_BOOL, has_bias),
                                      {NULL, 0, 0}};
static const field bn_fields[] = {FIELD("eps", F_FLOAT, eps), FIELD("momentum", F_FLOAT, momentum), {NULL, 0, 0}};
static const field pool_fields[] = {FIELD("k", F_INT, k), FIELD("stride", F_INT, stride), FIELD("pad", F_INT, pad),
                                    {NULL, 0, 0}};
static const field dropout_fields[] = {FIELD("p", F_FLOAT, p), {NULL, 0, 0}};
static const field add_fields[] = {FIELD("skip", F_INT, skip), {NULL, 0, 0}};
static const field no_fields[] = {{NULL, 0, 0}};
#undef FIELD

static const field *op_fields(nnz_op op) {
    switch (op) {
    case NNZ_OP_CONV2D: return conv_fields;
    case NNZ_OP_LINEAR: return linear_fields;
    case NNZ_OP_BATCHNORM: return bn_fields;
    case NNZ_OP_MAXPOOL: case NNZ_OP_AVGPOOL: return pool_fields;
    case NNZ_OP_DROPOUT: return dropout_fields;
    case NNZ_OP_ADD: return add_fields;
    default: return no_fields;
    }
}

static const char *const common_keys[] = {"op", "name", "input", "block", NULL};

/* ---- writing ---- */

/* The double with the fewest digits that reads back as f, so 1e-5f is written
 * "1e-05", not "9.99999974737875e-06". */
double nnz_shortest_double(float f) {
    char buf[32];
    for (int digits = 6; digits < 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

nnz_status nnz_model_to_json(const nnz_model *m, char **json_out) {
    if (!m || !json_out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_to_json: model and output must not be NULL");
    *json_out = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *input = cJSON_CreateArray(), *nodes = cJSON_CreateArray();
    bool ok = root && input && nodes && cJSON_AddStringToObject(root, "format", ARCH_FORMAT) &&
              cJSON_AddNumberToObject(root, "version", ARCH_VERSION);
    if (ok) {
        cJSON_AddItemToObject(root, "input", input);
        cJSON_AddItemToObject(root, "nodes", nodes);
    } else {
        cJSON_Delete(input);
        cJSON_Delete(nodes);
    }
    const int dims[3] = {m->in_h, m->in_w, m->in_c};
    for (int d = 0; ok && d < 3; d++) {
        cJSON *v = cJSON_CreateNumber(dims[d]);
        ok = v && cJSON_AddItemToArray(input, v);
    }
    for (int i = 0; ok && i < m->n_nodes; i++) {
        const nnz_node *n = &m->nodes[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(nodes, o);
        if (!ok) { cJSON_Delete(o); break; }
        ok = cJSON_AddStringToObject(o, "op", nnz_op_name(n->op)) && cJSON_AddStringToObject(o, "name", n->name) &&
             cJSON_AddNumberToObject(o, "input", n->input) && cJSON_AddNumberToObject(o, "block", n->block);
        for (const field *f = op_fields(n->op); ok && f->key; f++) {
            const char *p = (const char *)n + f->offset;
            if (f->type == F_INT) ok = cJSON_AddNumberToObject(o, f->key, *(const int *)p) != NULL;
            else if (f->type == F_BOOL) ok = cJSON_AddBoolToObject(o, f->key, *(const bool *)p) != NULL;
            else ok = cJSON_AddNumberToObject(o, f->key, nnz_shortest_double(*(const float *)p)) != NULL;
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return nnz_fail(NNZ_ERR_NOMEM, "out of memory writing the architecture JSON");
    *json_out = text;
    return NNZ_OK;
}

/* ---- reading ---- */

/* An integer-valued JSON number in [lo, hi]. */
static bool get_int(const cJSON *v, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi) return false;
    *out = (int)d;
    return true;
}

static nnz_status bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static nnz_status bad(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nnz_fail(NNZ_ERR_FORMAT, "architecture JSON: %s", msg);
}

static bool key_in(const char *key, const char *const *keys) {
    for (; *keys; keys++)
        if (strcmp(key, *keys) == 0) return true;
    return false;
}

static bool key_in_fields(const char *key, const field *f) {
    for (; f->key; f++)
        if (strcmp(key, f->key) == 0) return true;
    return false;
}

/* Rejects keys of obj not allowed (common or op fields) and repeated keys. */
static nnz_status check_keys(const cJSON *obj, const char *const *common, const field *fields, const char *where) {
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (!c->string) return bad("%s: a member without a name", where);
        if (!key_in(c->string, common) && !(fields && key_in_fields(c->string, fields)))
            return bad("%s: unknown field '%.40s'", where, c->string);
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (strcmp(d->string, c->string) == 0) return bad("%s: field '%.40s' appears twice", where, c->string);
    }
    return NNZ_OK;
}

static nnz_status read_node(const cJSON *o, int i, nnz_node *n) {
    char where[NNZ_NAME_MAX + 64];
    snprintf(where, sizeof where, "node %d", i);
    if (!cJSON_IsObject(o)) return bad("%s is not an object", where);
    memset(n, 0, sizeof *n);
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
    if (!cJSON_IsString(op)) return bad("%s: missing string field 'op'", where);
    int opi = nnz_op_from_name(op->valuestring);
    if (opi < 0)
        return bad("%s: unknown op '%.40s'; the ops are linear, conv2d, batchnorm, relu, relu6, identity, maxpool, "
                   "avgpool, global_avgpool, flatten, add, dropout", where, op->valuestring);
    n->op = (nnz_op)opi;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (!cJSON_IsString(name)) return bad("%s: missing string field 'name'", where);
    if (strlen(name->valuestring) >= NNZ_NAME_MAX)
        return bad("%s: name '%.40s...' is longer than %d characters", where, name->valuestring, NNZ_NAME_MAX - 1);
    strcpy(n->name, name->valuestring);
    snprintf(where, sizeof where, "node %d '%s' (%s)", i, n->name, nnz_op_name(n->op));
    const field *fields = op_fields(n->op);
    NNZ_TRY(check_keys(o, common_keys, fields, where));
    if (!get_int(cJSON_GetObjectItemCaseSensitive(o, "input"), -1, i - 1, &n->input))
        return bad("%s: 'input' must be an integer from -1 (the model input) to %d (an earlier node)", where, i - 1);
    const cJSON *block = cJSON_GetObjectItemCaseSensitive(o, "block");
    n->block = -1;
    if (block && !get_int(block, -1, 1 << 20, &n->block))
        return bad("%s: 'block' must be an integer from -1 to %d", where, 1 << 20);
    n->skip = -1;
    for (const field *f = fields; f->key; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, f->key);
        char *p = (char *)n + f->offset;
        if (!v) return bad("%s: missing field '%s'", where, f->key);
        if (f->type == F_BOOL) {
            if (!cJSON_IsBool(v)) return bad("%s: '%s' must be true or false", where, f->key);
            *(bool *)p = cJSON_IsTrue(v);
        } else if (f->type == F_INT) {
            if (!get_int(v, INT32_MIN, INT32_MAX, (int *)p)) return bad("%s: '%s' must be an integer", where, f->key);
        } else {
            /* range-check before narrowing: an out-of-range double -> float cast is undefined */
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 1e30)
                return bad("%s: '%s' must be a finite number", where, f->key);
            *(float *)p = (float)v->valuedouble;
        }
    }
    return NNZ_OK;
}

static nnz_status parse_and_build(const cJSON *root, uint64_t seed, bool graph_only, nnz_model **out) {
    static const char *const top_keys[] = {"format", "version", "input", "nodes", NULL};
    if (!cJSON_IsObject(root)) return bad("the top level must be an object");
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, ARCH_FORMAT) != 0)
        return bad("'format' must be \"" ARCH_FORMAT "\"; this is not an nnz architecture");
    int version;
    if (!get_int(cJSON_GetObjectItemCaseSensitive(root, "version"), 0, INT32_MAX, &version))
        return bad("'version' must be a non-negative integer");
    if (version != ARCH_VERSION)
        return nnz_fail(version > ARCH_VERSION ? NNZ_ERR_UNSUPPORTED : NNZ_ERR_FORMAT,
                        "architecture JSON version %d; this nnz reads version %d%s", version, ARCH_VERSION,
                        version > ARCH_VERSION ? " (upgrade nnz)" : "");
    NNZ_TRY(check_keys(root, top_keys, NULL, "top level"));
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    int dims[3];
    if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) != 3)
        return bad("'input' must be an array [height, width, channels]");
    for (int d = 0; d < 3; d++)
        if (!get_int(cJSON_GetArrayItem(input, d), 1, 1 << 20, &dims[d]))
            return bad("'input' must hold three positive integers (at most %d)", 1 << 20);
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(root, "nodes");
    if (!cJSON_IsArray(nodes) || !nodes->child) return bad("'nodes' must be a non-empty array");

    nnz_model *m;
    NNZ_TRY(nnz_model_create(dims[0], dims[1], dims[2], &m));
    int i = 0;
    for (const cJSON *o = nodes->child; o; o = o->next, i++) {
        nnz_node n;
        nnz_status s = read_node(o, i, &n);
        if (s == NNZ_OK && nnz_add_node(m, &n) < 0) s = m->build_error;
        if (s != NNZ_OK) {
            nnz_model_free(m);
            return s;
        }
    }
    m->graph_only = graph_only;
    nnz_status s = nnz_model_finalize(m, seed);
    if (s != NNZ_OK) {
        nnz_model_free(m);
        return s;
    }
    *out = m;
    return NNZ_OK;
}

static nnz_status from_json(const char *json, uint64_t seed, bool graph_only, nnz_model **out) {
    if (!json || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_from_json: json and out must not be NULL");
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, true);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return nnz_fail(NNZ_ERR_FORMAT, "architecture JSON: not valid JSON (error near byte %zu)", at);
    }
    nnz_status s = parse_and_build(root, seed, graph_only, out);
    cJSON_Delete(root);
    if (s != NNZ_OK && s != NNZ_ERR_NOMEM && s != NNZ_ERR_UNSUPPORTED && s != NNZ_ERR_FORMAT) {
        /* graph errors from the builder: the file is what is wrong */
        char why[768];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        s = nnz_fail(NNZ_ERR_FORMAT, "architecture JSON: %s", why);
    }
    return s;
}

nnz_status nnz_model_from_json(const char *json, uint64_t seed, nnz_model **out) {
    return from_json(json, seed, false, out);
}

nnz_status nnz_model_graph_from_json(const char *json, nnz_model **out) { return from_json(json, 0, true, out); }
