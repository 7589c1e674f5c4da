/* Helpers shared by the emulator's engines. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The build banner the vendor library embeds (`strings librkllmrt.so | grep 'RKLLM SDK'`): the one
   place the release appears as text. The init log line below is a printf format, as in the vendor binary. */
__attribute__((used)) static const char version_banner[] =
    "RKLLM SDK (version: " RKLLM_EMU_VERSION " | target: Linux | build: emulator)";

void runtime_release(char *out, size_t size) {
    /* The release is read back from the banner so that no "version: X.Y.Z" literal exists elsewhere. */
    const char *start = version_banner + strlen("RKLLM SDK (version: ");
    snprintf(out, size, "%.*s", (int)strcspn(start, " "), start);
}

void log_version(const char *platform) {
    char release[32];
    runtime_release(release, sizeof release);
    fprintf(stderr, "I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n", release,
            "emulated", platform);
}

/* Same major and minor release: what the vendor runtime needs to load a file safely (rknn-llm #509). */
static int same_series(const char *a, const char *b) {
    const char *a_dot = strchr(a, '.'), *b_dot = strchr(b, '.');
    if (strcmp(a, b) == 0) return 1;
    if (!a_dot || !b_dot) return 0;
    size_t a_len = strcspn(a_dot + 1, "."), b_len = strcspn(b_dot + 1, ".");
    return a_dot - a == b_dot - b && strncmp(a, b, (size_t)(a_dot - a)) == 0 && a_len == b_len &&
           strncmp(a_dot + 1, b_dot + 1, a_len) == 0;
}

int log_model_header(const char *toolkit, int max_context, int npu_cores, const char *platform, const char *dtype) {
    char release[32];
    runtime_release(release, sizeof release);
    if (!toolkit) toolkit = release;
    logmsg('I', "rkllm-toolkit version: %s, max_context_limit: %d, npu_core_num: %d, target_platform: %s, "
                "model_dtype: %s", toolkit, max_context, npu_cores, platform ? platform : "RK3588",
           dtype ? dtype : "W8A8");
    return same_series(toolkit, release) ? 0 : -1;
}


void ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = realloc(a->v, a->cap * sizeof(int32_t));
    }
    a->v[a->n++] = x;
}

void ivec_copy(ivec *dst, const int32_t *src, size_t n) {
    dst->n = 0;
    for (size_t i = 0; i < n; i++) ivec_push(dst, src[i]);
}

size_t common_prefix(const ivec *a, const ivec *b) {
    size_t n = a->n < b->n ? a->n : b->n, i = 0;
    while (i < n && a->v[i] == b->v[i]) i++;
    return i;
}

int log_level(void) {
    const char *s = getenv("RKLLM_LOG_LEVEL");
    return s ? atoi(s) : 0;
}

void logmsg(char level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%c rkllm: ", level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double env_double(const char *name, double fallback) {
    const char *s = getenv(name);
    return (s && *s) ? atof(s) : fallback;
}

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1e3), (long)((ms - (time_t)(ms / 1e3) * 1e3) * 1e6)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Sleeps until the monotonic clock reads `deadline` (ms): a steady rate, no drift. */
void sleep_until_ms(double deadline) { sleep_ms(deadline - now_ms()); }

float peak_memory_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    float mb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) mb = (float)(atof(line + 6) / 1024.0);
    fclose(f);
    return mb;
}

uint64_t fnv1a(const void *data, size_t n, uint64_t h) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* Appends src to *dst (realloc'd), returning *dst. */
char *str_append(char **dst, const char *src) {
    size_t a = *dst ? strlen(*dst) : 0, b = strlen(src);
    *dst = realloc(*dst, a + b + 1);
    memcpy(*dst + a, src, b + 1);
    return *dst;
}

char *system_with_tools(const char *system_prompt, const char *tools) {
    char *text = NULL;
    str_append(&text, system_prompt ? system_prompt : "");
    if (tools) {
        str_append(&text, "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n"
                          "Function signatures are given within <tools></tools> XML tags:\n<tools>\n");
        str_append(&text, tools);
        str_append(&text, "\n</tools>\n\nFor each function call, return a JSON object with the function name "
                          "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                          "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>");
    }
    return text;
}

char *tools_or_null(const char *tools) {
    /* Like the chat template's `{% if tools %}`: an empty array means no tools. */
    const char *t = tools;
    while (t && (*t == ' ' || *t == '\n')) t++;
    return (t && *t && strncmp(t, "[]", 2) != 0) ? strdup(tools) : NULL;
}

int utf8_missing(int need, const unsigned char *bytes, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = bytes[i];
        if (need > 0 && (c & 0xC0) == 0x80) need--;
        else need = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
    }
    return need;
}


/* ---------------------------------------------------- shared entry points */

/* The vendor runtime's defaults (top_k 40, top_p 0.9, temperature 0.8, repeat_penalty 1.1,
   max_context_len 512): a binding that forgets to set a field gets what it would get on a board. */
RKLLMParam rkllm_createDefaultParam(void) {
    RKLLMParam p;
    memset(&p, 0, sizeof p);
    p.max_context_len = 512;
    p.max_new_tokens = -1;
    p.top_k = 40;
    p.n_keep = -1;
    p.top_p = 0.9f;
    p.temperature = 0.8f;
    p.repeat_penalty = 1.1f;
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.0f;
    p.mirostat = 0;
    p.mirostat_tau = 5.0f;
    p.mirostat_eta = 0.1f;
    p.skip_special_token = true;
    p.is_async = false;
    p.extend_param.base_domain_id = 0;
    p.extend_param.embed_flash = 0;
    p.extend_param.enabled_cpus_num = 4;
    p.extend_param.enabled_cpus_mask = CPU4 | CPU5 | CPU6 | CPU7;
    p.extend_param.n_batch = 1;
    return p;
}

int set_callback(handle_base *h, RKLLMInitCallback callback) {
#if RKLLM_ABI >= 13
    if (!callback || !callback->result_callback) return -1;
    h->callback = callback->result_callback;
    h->callback_userdata = callback->result_userdata;
#else
    if (!callback) return -1;
    h->callback = callback;
#endif
    return 0;
}

int emit_result(const handle_base *h, void *userdata, RKLLMResult *result, LLMCallState state) {
    return h->callback(result, userdata ? userdata : h->callback_userdata, state);
}

int rkllm_get_kv_cache_size(LLMHandle handle, int *sizes) {
    handle_base *h = handle;
    if (!h || !sizes) return -1;
    pthread_mutex_lock(&h->mu);
    sizes[0] = (int)h->kv.n;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

int range_clear_refused(const handle_base *h, const int *start_pos, const int *end_pos, int paused) {
    if (!start_pos || !end_pos || (h->last_keep_history == 0 && paused)) return 0;
    logmsg('E', "start_pos and end_pos are only valid when keep_history == 0 and the generation has been "
                "paused by returning 1 in the callback!");
    return 1;
}

double prefill_model_ms(double tps128, double double_at, size_t start, size_t n) {
    if (tps128 <= 0 || n == 0) return 0;
    if (double_at <= 0) return n * 1000.0 / tps128;
    double per_token = 128 * 1000.0 / tps128 / (128 + 128.0 * 128 / (2 * double_at));
    double a = (double)start, b = (double)(start + n);
    return per_token * ((b - a) + (b * b - a * a) / (2 * double_at));
}

double storage_model_ms(double bytes) {
    double mbps = env_double("RKLLM_EMU_STORAGE_MBPS", 250);
    return mbps > 0 ? bytes / (mbps * 1e6) * 1000.0 : 0;
}

int busy(const handle_base *h, const char *fn) {
    if (atomic_load(&h->running)) {
        logmsg('E', "%s: a run is in progress on this handle", fn);
        return 1;
    }
    return 0;
}

int rkllm_run(LLMHandle handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
    handle_base *h = handle;
    if (!h || !in || !ip) return -1;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&h->running, &idle, 1)) {
        logmsg('E', "rkllm_run: a run is already in progress on this handle");
        return -1;
    }
    atomic_store(&h->abort_requested, 0);
    pthread_mutex_lock(&h->mu);
    h->last_keep_history = ip->keep_history;
    int status = engine_run_locked(h, in, ip, userdata);
    pthread_mutex_unlock(&h->mu);
    atomic_store(&h->running, 0);
    return status;
}

typedef struct {
    handle_base *h;
    RKLLMInput in;
    RKLLMInferParam ip;
    void *userdata;
} async_run_t;

static void *async_main(void *arg) {
    async_run_t *a = arg;
    pthread_mutex_lock(&a->h->mu);
    engine_run_locked(a->h, &a->in, &a->ip, a->userdata);
    pthread_mutex_unlock(&a->h->mu);
    atomic_store(&a->h->running, 0);
    free(a);
    return NULL;
}

int rkllm_run_async(LLMHandle handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
    handle_base *h = handle;
    if (!h || !in || !ip) return -1;
    int idle = 0;
    if (!atomic_compare_exchange_strong(&h->running, &idle, 1)) return -1;
    atomic_store(&h->abort_requested, 0);
    h->last_keep_history = ip->keep_history;
    async_run_t *a = malloc(sizeof *a);
    *a = (async_run_t){h, *in, *ip, userdata};
    pthread_t t;
    if (pthread_create(&t, NULL, async_main, a) != 0) {
        free(a);
        atomic_store(&h->running, 0);
        return -1;
    }
    pthread_detach(t);
    return 0;
}

int rkllm_abort(LLMHandle handle) {
    handle_base *h = handle;
    if (!h) return -1;
    atomic_store(&h->abort_requested, 1);
    return 0;
}

int rkllm_is_running(LLMHandle handle) {
    handle_base *h = handle;
    return h && atomic_load(&h->running) ? 1 : 0;
}

int write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts, size_t min_size) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return -1;
    FILE *f = fopen(tmp, "wb");
    if (!f) return -1;
    int ok = 1;
    for (int i = 0; i < n_parts && ok; i++) ok = fwrite(parts[i], 1, sizes[i], f) == sizes[i];
    ok = ok && fflush(f) == 0 && ((long)min_size <= ftell(f) || ftruncate(fileno(f), (off_t)min_size) == 0);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *data = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        data = malloc(n > 0 ? (size_t)n : 1);
        if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
            free(data);
            data = NULL;
        }
    }
    fclose(f);
    *size = n > 0 ? (size_t)n : 0;
    return data;
}
