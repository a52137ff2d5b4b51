/* A model named on the command line: a zoo name, an architecture JSON file
 * (docs/arch-json.md) or a checkpoint whose architecture is taken (not its
 * weights). Either way the weights are freshly initialised from the seed, so a
 * merged DepthShrinker architecture can be trained from scratch like a zoo model. */
#include "nn/nn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The architecture JSON of a .json file (NUL-terminated, free() it). */
static nnz_status read_json_file(const char *path, char **out) {
    uint8_t *data = NULL;
    size_t size = 0;
    NNZ_TRY(nnz_read_file(path, false, nnz_size_limit(), &data, &size));
    char *text = malloc(size + 1);
    if (!text) {
        nnz_free(data);
        return nnz_fail(NNZ_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    memcpy(text, data, size);
    text[size] = '\0';
    nnz_free(data);
    if (strlen(text) != size) {
        free(text);
        return nnz_fail(NNZ_ERR_FORMAT, "'%s' holds a NUL byte; an architecture file is JSON text", path);
    }
    *out = text;
    return NNZ_OK;
}

nnz_status nnz_model_from_arch_file(const char *path, uint64_t seed, nnz_model **out) {
    if (!path || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_from_arch_file: path and out are required");
    *out = NULL;
    char *json = NULL;
    NNZ_TRY(read_json_file(path, &json));
    nnz_status s = nnz_model_from_json(json, seed, out);
    free(json);
    return s;
}

nnz_status nnz_model_from_spec(const char *spec, int in_h, int in_w, int in_c, int num_classes, uint64_t seed,
                               nnz_model **out) {
    if (!spec || !out) return nnz_fail(NNZ_ERR_INVALID_ARG, "nnz_model_from_spec: spec and out are required");
    *out = NULL;
    const char *const *names = nnz_zoo_names();
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], spec) == 0) return nnz_model_from_zoo(spec, in_h, in_w, in_c, num_classes, seed, out);
    struct stat st;
    if (stat(spec, &st) != 0 || !S_ISREG(st.st_mode))
        return nnz_fail(NNZ_ERR_INVALID_ARG,
                        "unknown model '%s': not a zoo model (mlp, lenet5, vgg8, mbv2-tiny), nor an architecture "
                        "file (FILE.json, docs/arch-json.md) or a checkpoint to take the architecture from",
                        spec);
    nnz_status s;
    if (ends_with(spec, ".json")) {
        s = nnz_model_from_arch_file(spec, seed, out);
    } else {
        nnz_checkpoint ck;
        s = nnz_checkpoint_open(spec, &ck);
        if (s != NNZ_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", nnz_last_error());
            return nnz_fail(s, "'%s' is neither a zoo model nor an architecture: %s (an architecture JSON file must "
                            "end in .json)", spec, why);
        }
        s = nnz_model_from_json(ck.arch_json, seed, out);
        nnz_checkpoint_close(&ck);
    }
    if (s != NNZ_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", nnz_last_error());
        return nnz_fail(s, "the architecture of '%s': %s", spec, why);
    }
    nnz_model *m = *out;
    if (m->in_h != in_h || m->in_w != in_w || m->in_c != in_c || m->num_classes < num_classes) {
        s = nnz_fail(NNZ_ERR_INVALID_ARG,
                     "the architecture of '%s' takes %dx%dx%d images and %d classes, but the data has %dx%dx%d "
                     "images and %d classes",
                     spec, m->in_h, m->in_w, m->in_c, m->num_classes, in_h, in_w, in_c, num_classes);
        nnz_model_free(m);
        *out = NULL;
    }
    return s;
}
