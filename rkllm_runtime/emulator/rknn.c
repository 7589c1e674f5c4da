/* An emulated librknnrt.so: the RKNN runtime's entry points a vision encoder needs, playing the
   encoder documents described in README.md. Run times follow the document's RK3588 figure. */
#define _GNU_SOURCE
#include "rknn_api.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MAGIC "rknn-emulator-model 1"
#define API_VERSION "2.3.2 (emulator)"

typedef struct context {
    struct context *next;
    char family[256], platform[32];
    uint32_t height, width, channels, tokens, embed_size;
    rknn_tensor_format fmt;
    rknn_tensor_type type;
    double encode_ms, memory_mb;
    float mean[3], std[3];
    unsigned char *pixels; /* the latest input, RGB NHWC */
    float *normalised;     /* the same after (x - mean) / std, as the runtime feeds the NPU */
    float *embedding;      /* tokens x embed_size, once run */
    int64_t run_us;
} context;

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static context *live; /* every context not yet destroyed: others are refused, never read */

static void logmsg(char level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%c RKNN: ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double env_or(const char *name, double fallback) {
    const char *value = getenv(name);
    return value && *value ? atof(value) : fallback;
}

static context *find(rknn_context ctx) {
    pthread_mutex_lock(&live_mu);
    context *c = live;
    while (c && (rknn_context)(uintptr_t)c != ctx) c = c->next;
    pthread_mutex_unlock(&live_mu);
    if (!c) logmsg('E', "invalid context");
    return c;
}

static unsigned char *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) free(data), data = NULL;
    fclose(f);
    if (data) data[n] = 0, *size = (size_t)n;
    return data;
}

static int parse(context *c, const char *text, size_t size) {
    if (size < strlen(MAGIC) || strncmp(text, MAGIC, strlen(MAGIC)) != 0) return -1;
    char *copy = strndup(text, size), *save = NULL;
    strcpy(c->platform, "RK3588");
    c->fmt = RKNN_TENSOR_NHWC, c->type = RKNN_TENSOR_FLOAT16, c->channels = 3;
    for (int i = 0; i < 3; i++) c->mean[i] = 127.5f, c->std[i] = 127.5f;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char key[32] = "";
        int at = 0;
        if (line[0] == '#' || sscanf(line, "%31s %n", key, &at) < 1) continue;
        const char *value = line + at;
        if (!strcmp(key, "family")) snprintf(c->family, sizeof c->family, "%s", value);
        else if (!strcmp(key, "target_platform")) snprintf(c->platform, sizeof c->platform, "%s", value);
        else if (!strcmp(key, "input")) sscanf(value, "%u %u %u", &c->height, &c->width, &c->channels);
        else if (!strcmp(key, "input_format")) c->fmt = strcmp(value, "NCHW") ? RKNN_TENSOR_NHWC : RKNN_TENSOR_NCHW;
        else if (!strcmp(key, "input_type")) c->type = strcmp(value, "UINT8") ? RKNN_TENSOR_FLOAT16 : RKNN_TENSOR_UINT8;
        else if (!strcmp(key, "tokens")) c->tokens = (uint32_t)atoi(value);
        else if (!strcmp(key, "embed_size")) c->embed_size = (uint32_t)atoi(value);
        else if (!strcmp(key, "encode_ms")) c->encode_ms = atof(value);
        else if (!strcmp(key, "memory_mb")) c->memory_mb = atof(value);
        else if (!strcmp(key, "mean")) sscanf(value, "%f %f %f", &c->mean[0], &c->mean[1], &c->mean[2]);
        else if (!strcmp(key, "std")) sscanf(value, "%f %f %f", &c->std[0], &c->std[1], &c->std[2]);
    }
    free(copy);
    return c->height && c->width && c->channels == 3 && c->tokens && c->embed_size > 4 ? 0 : -1;
}

int rknn_init(rknn_context *out, void *model, uint32_t size, uint32_t flag, rknn_init_extend *extend) {
    (void)flag, (void)extend;
    if (!out || !model) return RKNN_ERR_PARAM_INVALID;
    size_t n = size;
    unsigned char *owned = NULL;
    if (size == 0) { /* model is a path */
        owned = slurp((const char *)model, &n);
        if (!owned) {
            logmsg('E', "failed to open rknn file %s", (const char *)model);
            return RKNN_ERR_FAIL;
        }
    }
    context *c = calloc(1, sizeof *c);
    int bad = parse(c, owned ? (const char *)owned : model, n);
    free(owned);
    if (bad) {
        logmsg('E', "Invalid RKNN model version or the model is corrupted");
        free(c);
        return RKNN_ERR_MODEL_INVALID;
    }
    char board[32];
    snprintf(board, sizeof board, "%s", getenv("RKNN_EMU_PLATFORM") ? getenv("RKNN_EMU_PLATFORM") : "RK3588");
    if (strcasecmp(board, c->platform) != 0) {
        logmsg('E', "The target platform of this model is %s, but the current platform is %s", c->platform, board);
        free(c);
        return RKNN_ERR_TARGET_PLATFORM_UNMATCH;
    }
    logmsg('I', "RKNN Runtime Information, librknnrt version: " API_VERSION);
    pthread_mutex_lock(&live_mu);
    c->next = live, live = c;
    pthread_mutex_unlock(&live_mu);
    *out = (rknn_context)(uintptr_t)c;
    return RKNN_SUCC;
}

int rknn_destroy(rknn_context ctx) {
    context *c = find(ctx);
    if (!c) return RKNN_ERR_CTX_INVALID;
    pthread_mutex_lock(&live_mu);
    for (context **p = &live; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    pthread_mutex_unlock(&live_mu);
    free(c->pixels), free(c->normalised), free(c->embedding), free(c);
    return RKNN_SUCC;
}

static void input_attr(const context *c, rknn_tensor_attr *a) {
    uint32_t h = c->height, w = c->width, ch = c->channels;
    a->n_dims = 4, a->dims[0] = 1;
    if (c->fmt == RKNN_TENSOR_NCHW) a->dims[1] = ch, a->dims[2] = h, a->dims[3] = w;
    else a->dims[1] = h, a->dims[2] = w, a->dims[3] = ch;
    snprintf(a->name, sizeof a->name, "pixel");
    a->n_elems = h * w * ch;
    a->size = a->n_elems * (c->type == RKNN_TENSOR_UINT8 ? 1 : 2);
    a->size_with_stride = a->size;
    a->fmt = c->fmt, a->type = c->type, a->qnt_type = RKNN_TENSOR_QNT_NONE, a->scale = 1;
}

static void output_attr(const context *c, rknn_tensor_attr *a) {
    a->n_dims = 3, a->dims[0] = 1, a->dims[1] = c->tokens, a->dims[2] = c->embed_size;
    snprintf(a->name, sizeof a->name, "image_embeds");
    a->n_elems = c->tokens * c->embed_size;
    a->size = a->size_with_stride = a->n_elems * (uint32_t)sizeof(float);
    a->fmt = RKNN_TENSOR_NCHW, a->type = RKNN_TENSOR_FLOAT32, a->qnt_type = RKNN_TENSOR_QNT_NONE, a->scale = 1;
}

int rknn_query(rknn_context ctx, rknn_query_cmd cmd, void *info, uint32_t size) {
    context *c = find(ctx);
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!info) return RKNN_ERR_PARAM_INVALID;
    switch (cmd) {
    case RKNN_QUERY_IN_OUT_NUM:
        if (size < sizeof(rknn_input_output_num)) return RKNN_ERR_PARAM_INVALID;
        ((rknn_input_output_num *)info)->n_input = 1, ((rknn_input_output_num *)info)->n_output = 1;
        return RKNN_SUCC;
    case RKNN_QUERY_INPUT_ATTR:
    case RKNN_QUERY_OUTPUT_ATTR: {
        rknn_tensor_attr *a = info;
        if (size < sizeof *a || a->index != 0) return RKNN_ERR_PARAM_INVALID;
        memset(a, 0, sizeof *a);
        (cmd == RKNN_QUERY_INPUT_ATTR ? input_attr : output_attr)(c, a);
        return RKNN_SUCC;
    }
    case RKNN_QUERY_PERF_RUN:
        if (size < sizeof(rknn_perf_run)) return RKNN_ERR_PARAM_INVALID;
        ((rknn_perf_run *)info)->run_duration = c->run_us;
        return RKNN_SUCC;
    case RKNN_QUERY_SDK_VERSION:
        if (size < sizeof(rknn_sdk_version)) return RKNN_ERR_PARAM_INVALID;
        snprintf(((rknn_sdk_version *)info)->api_version, 256, "%s", API_VERSION);
        snprintf(((rknn_sdk_version *)info)->drv_version, 256, "%s", "0.9.8 (emulated)");
        return RKNN_SUCC;
    case RKNN_QUERY_MEM_SIZE: {
        if (size < sizeof(rknn_mem_size)) return RKNN_ERR_PARAM_INVALID;
        rknn_mem_size *m = info;
        memset(m, 0, sizeof *m);
        m->total_weight_size = (uint32_t)(c->memory_mb * 1024 * 1024 * 0.9);
        m->total_internal_size = (uint32_t)(c->memory_mb * 1024 * 1024 * 0.1);
        m->total_dma_allocated_size = (uint64_t)m->total_weight_size + m->total_internal_size;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_CUSTOM_STRING:
        if (size < sizeof(rknn_custom_string)) return RKNN_ERR_PARAM_INVALID;
        snprintf(((rknn_custom_string *)info)->string, 1024, "%s", c->family);
        return RKNN_SUCC;
    default:
        logmsg('E', "rknn_query: unsupported command %d", (int)cmd);
        return RKNN_ERR_PARAM_INVALID;
    }
}

int rknn_inputs_set(rknn_context ctx, uint32_t n_inputs, rknn_input inputs[]) {
    context *c = find(ctx);
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (n_inputs != 1 || !inputs || inputs[0].index != 0 || !inputs[0].buf) {
        logmsg('E', "rknn_inputs_set: the model has 1 input, got %u", n_inputs);
        return RKNN_ERR_PARAM_INVALID;
    }
    const rknn_input *in = &inputs[0];
    size_t n = (size_t)c->height * c->width * c->channels;
    size_t item = in->type == RKNN_TENSOR_UINT8 ? 1 : in->type == RKNN_TENSOR_FLOAT32 ? 4 : 0;
    if (!item || in->pass_through || in->size != n * item) {
        logmsg('E', "rknn_inputs_set: input size %u does not match the model's %zu (type %d, expected UINT8 or "
                    "FLOAT32 %ux%ux%u)", in->size, n * (item ? item : 1), (int)in->type, c->height, c->width,
               c->channels);
        return RKNN_ERR_INPUT_INVALID;
    }
    c->pixels = realloc(c->pixels, n), c->normalised = realloc(c->normalised, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        /* NHWC index i, or the same element of an NCHW buffer */
        size_t px = i / 3, ch = i % 3;
        size_t src = in->fmt == RKNN_TENSOR_NCHW ? ch * (n / 3) + px : i;
        float v = item == 1 ? ((const unsigned char *)in->buf)[src] : ((const float *)in->buf)[src];
        c->pixels[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        c->normalised[i] = (v - c->mean[ch]) / c->std[ch];
    }
    free(c->embedding), c->embedding = NULL;
    return RKNN_SUCC;
}

static void sleep_for_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0) {}
}

static uint64_t fnv(const void *data, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)data)[i]) * 1099511628211ULL;
    return h;
}

/* Each token encodes one patch of a square grid (rows of the image when tokens is no square):
   [row length, mean red, green, blue in 0..1, then values drawn from the patch's normalised pixels]. */
static void encode(context *c) {
    uint32_t e = c->embed_size, side = (uint32_t)lround(sqrt(c->tokens));
    uint32_t cols = side * side == c->tokens ? side : 1, rows = c->tokens / cols;
    c->embedding = calloc((size_t)c->tokens * e, sizeof(float));
    for (uint32_t t = 0; t < c->tokens; t++) {
        uint32_t r0 = (t / cols) * c->height / rows, r1 = (t / cols + 1) * c->height / rows;
        uint32_t c0 = (t % cols) * c->width / cols, c1 = (t % cols + 1) * c->width / cols;
        double sum[3] = {0};
        uint64_t h = 14695981039346656037ULL;
        for (uint32_t y = r0; y < r1; y++) {
            size_t row = ((size_t)y * c->width + c0) * 3, len = (size_t)(c1 - c0) * 3;
            for (size_t k = 0; k < len; k++) sum[k % 3] += c->pixels[row + k];
            h = fnv(c->normalised + row, len * sizeof(float), h);
        }
        double count = (double)(r1 - r0) * (c1 - c0);
        float *v = c->embedding + (size_t)t * e;
        v[0] = (float)e;
        for (int k = 0; k < 3; k++) v[1 + k] = count ? (float)(sum[k] / count / 255.0) : 0;
        for (uint32_t d = 4; d < e; d++) {
            h = (h ^ d) * 1099511628211ULL;
            v[d] = (float)((double)(h >> 11) / (double)(1ULL << 53) * 2 - 1);
        }
    }
}

int rknn_run(rknn_context ctx, rknn_run_extend *extend) {
    (void)extend;
    context *c = find(ctx);
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (!c->pixels) {
        logmsg('E', "rknn_run: the input is not set");
        return RKNN_ERR_INPUT_INVALID;
    }
    sleep_for_ms(c->encode_ms * env_or("RKLLM_EMU_TIME_SCALE", 1));
    encode(c);
    c->run_us = (int64_t)(c->encode_ms * 1000);
    return RKNN_SUCC;
}

int rknn_outputs_get(rknn_context ctx, uint32_t n_outputs, rknn_output outputs[], rknn_output_extend *extend) {
    (void)extend;
    context *c = find(ctx);
    if (!c) return RKNN_ERR_CTX_INVALID;
    if (n_outputs != 1 || !outputs || outputs[0].index != 0) return RKNN_ERR_PARAM_INVALID;
    if (!c->embedding) {
        logmsg('E', "rknn_outputs_get: rknn_run has not run");
        return RKNN_ERR_FAIL;
    }
    uint32_t bytes = c->tokens * c->embed_size * (uint32_t)sizeof(float);
    if (outputs[0].is_prealloc) {
        if (!outputs[0].buf || outputs[0].size < bytes) {
            logmsg('E', "rknn_outputs_get: the output buffer holds %u bytes, %u needed", outputs[0].size, bytes);
            return RKNN_ERR_OUTPUT_INVALID;
        }
    } else {
        outputs[0].buf = malloc(bytes);
        if (!outputs[0].buf) return RKNN_ERR_MALLOC_FAIL;
    }
    memcpy(outputs[0].buf, c->embedding, bytes);
    outputs[0].size = bytes;
    return RKNN_SUCC;
}

int rknn_outputs_release(rknn_context ctx, uint32_t n_outputs, rknn_output outputs[]) {
    if (!find(ctx)) return RKNN_ERR_CTX_INVALID;
    for (uint32_t i = 0; outputs && i < n_outputs; i++)
        if (!outputs[i].is_prealloc) free(outputs[i].buf), outputs[i].buf = NULL;
    return RKNN_SUCC;
}
