/* Helpers shared by the emulator's engines (scripted.c, llama.c). */
#ifndef RKLLM_EMULATOR_COMMON_H
#define RKLLM_EMULATOR_COMMON_H

#include "rkllm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifndef RKLLM_EMU_VERSION
#define RKLLM_EMU_VERSION "1.3.1"
#endif

#define FNV_SEED 14695981039346656037ULL

/* A growable array of token ids. */
typedef struct {
    int32_t *v;
    size_t n, cap;
} ivec;

/* The start of every engine's handle: what the shared entry points need. */
typedef struct {
    pthread_mutex_t mu; /* held for a whole run and by every call that touches the cache */
    atomic_int running, abort_requested;
    int last_keep_history; /* keep_history of the latest run */
    LLMResultCallback callback;
    void *callback_userdata;
    ivec kv; /* the tokens the KV cache holds */
} handle_base;

/* Stores the result callback given to rkllm_init; 0 when it is usable. */
int set_callback(handle_base *h, RKLLMInitCallback callback);
/* Calls the result callback with the run's userdata, or the one given at init. */
int emit_result(const handle_base *h, void *userdata, RKLLMResult *result, LLMCallState state);

/* Provided by each engine: one run, with the handle's mutex held (the callback fires from here). */
int engine_run_locked(void *handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata);
/* Logs and returns 1 when clearing [start, end) is refused: the vendor runtime allows it only
   while a keep_history=0 run is paused by its callback. */
int range_clear_refused(const handle_base *h, const int *start_pos, const int *end_pos, int paused);
/* Modelled prefill time (ms) of n tokens after `start` cached ones: the per-token cost grows
   linearly with the position, doubling at `double_at`; 128 tokens from 0 take 128 / tps128 s. */
double prefill_model_ms(double tps128, double double_at, size_t start, size_t n);
/* Modelled time (ms) to read or write a prompt-cache file of `bytes` (RKLLM_EMU_STORAGE_MBPS). */
double storage_model_ms(double bytes);
/* Logs and returns 1 while a run is in progress (the call must then fail). */
int busy(const handle_base *h, const char *fn);

void ivec_push(ivec *a, int32_t x);
void ivec_copy(ivec *dst, const int32_t *src, size_t n);
size_t common_prefix(const ivec *a, const ivec *b);

/* RKLLM_LOG_LEVEL, and messages to stderr as "I rkllm: ..." / "E rkllm: ...". */
int log_level(void);
/* The vendor's init line: "I rkllm: rkllm-runtime version: X, rknpu driver version: Y, platform: Z". */
void log_version(const char *platform);
void runtime_release(char *out, size_t size); /* this library's release, e.g. "1.2.3" */
/* The vendor's model-header line at init: "I rkllm: rkllm-toolkit version: X, max_context_limit: N,
   npu_core_num: N, target_platform: P, model_dtype: D" (NULL toolkit: this runtime's release).
   Returns -1 when the toolkit's release series is not the runtime's. */
int log_model_header(const char *toolkit, int max_context, int npu_cores, const char *platform, const char *dtype);
void logmsg(char level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

double env_double(const char *name, double fallback);
double now_ms(void);
void sleep_ms(double ms);
void sleep_until_ms(double deadline);
float peak_memory_mb(void); /* VmHWM */
uint64_t fnv1a(const void *data, size_t n, uint64_t h);
char *xstrdup(const char *s);
char *str_append(char **dst, const char *src); /* appends to a malloc'd string */

/* Writes the parts to `path`.tmp, extended by a sparse hole to at least `min_size` bytes, then renames
   it to `path`: a reader never sees a partial file. 0 on success; on failure nothing is left behind. */
int write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int n_parts, size_t min_size);
/* The whole file (malloc'd, *size set), or NULL. */
unsigned char *read_file(const char *path, size_t *size);

/* The system prompt with the tools block RKLLM adds for Qwen-style templates (malloc'd). */
char *system_with_tools(const char *system_prompt, const char *tools);
/* A copy of the tools JSON, or NULL when there are none ("" or an empty array). */
char *tools_or_null(const char *tools);
/* Continuation bytes still missing after `bytes`, starting with `need` missing. */
int utf8_missing(int need, const unsigned char *bytes, size_t n);

#endif
