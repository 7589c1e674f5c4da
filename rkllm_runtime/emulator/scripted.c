/*
 * The scripted engine of the RKLLM emulator.
 *
 * It exports the exact librkllmrt.so ABI (see rkllm.h) and behaves like the
 * vendor runtime where a binding can observe it: callbacks from the running
 * thread, UTF-8 split across WAITING callbacks, a KV cache that keeps the system
 * prompt and optionally the conversation, context shift, prompt-cache files,
 * abort from another thread, perf stats and RKLLM_LOG_LEVEL logging. Instead of
 * a neural network it plays the scripted replies of an emulator "model file"
 * (format: README.md beside this file), with the Qwen2.5 tokenizer (vocab.c) and a
 * timing model so token counts and simulated speeds are meaningful.
 */
#define _GNU_SOURCE
#include "common.h"
#include "vocab.h"

#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOCAB_SIZE 151936
#define MODEL_MAGIC "rkllm-emulator-model 1"
#define CACHE_MAGIC "RKEMUPC1"

/* -------------------------------------------------------------- tokenizer */

static void tokenize(ivec *out, const char *text) { vocab_tokenize(text, out, NULL); }

/* ------------------------------------------------------------ model file */

typedef struct {
    char *role;  /* "user" / "tool" / NULL = any */
    char *match; /* lower-case substring of the latest input, NULL = any */
    int tools;   /* 1: only when tools are set, 0: only without tools, -1: either */
    char *think;
    char *reply;
    int error_after;
    int run_fail;
    int crash;
    char *image; /* colour name of an image in the input, NULL = any input */
} rule_t;

typedef struct {
    char *name;
    int max_context;
    double prefill_tps, decode_tps, prefill_double_at, run_overhead_ms;
    int kv_bytes_per_token;
    int npu_memory_mb;
    int init_fail;
    int has_template;
    int embed_size;
    int image_tokens; /* tokens per image the model takes, 0: any */
    char *toolkit, *platform, *dtype; /* the model header (NULL: defaults) */
    int npu_cores;
    int logits_keep; /* a logits run with keep_history=1 keeps its input in the cache (see README) */
    char *system;
    uint64_t id;
    rule_t *rules;
    size_t n_rules;
} model_t;

/* Decodes \n, \t, \\ and \xHH escapes in place. */
static void unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r != '\\' || !r[1]) {
            *w++ = *r;
            continue;
        }
        r++;
        if (*r == 'n') *w++ = '\n';
        else if (*r == 't') *w++ = '\t';
        else if (*r == 'x' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else *w++ = *r;
    }
    *w = 0;
}

static void model_free(model_t *m) {
    for (size_t i = 0; i < m->n_rules; i++) {
        rule_t *r = &m->rules[i];
        free(r->role), free(r->match), free(r->think), free(r->reply), free(r->image);
    }
    free(m->rules), free(m->name), free(m->system), free(m->toolkit), free(m->platform), free(m->dtype);
    memset(m, 0, sizeof *m);
}

static int model_load(model_t *m, const char *path) {
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        logmsg('E', "failed to open model file %s", path ? path : "(null)");
        return -1;
    }
    memset(m, 0, sizeof *m);
    m->max_context = 4096, m->has_template = 1, m->embed_size = 64, m->id = FNV_SEED;
    m->prefill_double_at = 810, m->kv_bytes_per_token = 28672, m->npu_cores = 3, m->logits_keep = 1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, ok = 1;
    rule_t *cur = NULL;
    while ((len = getline(&line, &cap, f)) >= 0) {
        m->id = fnv1a(line, (size_t)len, m->id);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (++lineno == 1) {
            if (strcmp(line, MODEL_MAGIC) != 0) ok = 0;
            continue;
        }
        if (len == 0 || line[0] == '#') continue;
        char *val = strchr(line, ' ');
        if (val) *val++ = 0, unescape(val);
        else val = "";
        if (strcmp(line, "rule") == 0) {
            m->rules = realloc(m->rules, (m->n_rules + 1) * sizeof(rule_t));
            cur = &m->rules[m->n_rules++];
            memset(cur, 0, sizeof *cur);
            cur->tools = -1, cur->error_after = -1;
        } else if (strcmp(line, "end") == 0) cur = NULL;
        else if (cur && strcmp(line, "role") == 0) cur->role = strdup(val);
        else if (cur && strcmp(line, "match") == 0) {
            cur->match = strdup(val);
            for (char *p = cur->match; *p; p++) *p = (char)tolower((unsigned char)*p);
        } else if (cur && strcmp(line, "tools") == 0) cur->tools = atoi(val);
        else if (cur && strcmp(line, "think") == 0) cur->think = strdup(val);
        else if (cur && strcmp(line, "reply") == 0) cur->reply = strdup(val);
        else if (cur && strcmp(line, "error_after") == 0) cur->error_after = atoi(val);
        else if (cur && strcmp(line, "run_fail") == 0) cur->run_fail = atoi(val);
        else if (cur && strcmp(line, "crash") == 0) cur->crash = atoi(val);
        else if (cur && strcmp(line, "image") == 0) cur->image = strdup(val);
        else if (!cur && strcmp(line, "name") == 0) m->name = strdup(val);
        else if (!cur && strcmp(line, "max_context") == 0) m->max_context = atoi(val);
        else if (!cur && strcmp(line, "prefill_tps") == 0) m->prefill_tps = atof(val);
        else if (!cur && strcmp(line, "decode_tps") == 0) m->decode_tps = atof(val);
        else if (!cur && strcmp(line, "run_overhead_ms") == 0) m->run_overhead_ms = atof(val);
        else if (!cur && strcmp(line, "prefill_double_at") == 0) m->prefill_double_at = atof(val);
        else if (!cur && strcmp(line, "kv_bytes_per_token") == 0) m->kv_bytes_per_token = atoi(val);
        else if (!cur && strcmp(line, "npu_memory_mb") == 0) m->npu_memory_mb = atoi(val);
        else if (!cur && strcmp(line, "init_fail") == 0) m->init_fail = atoi(val);
        else if (!cur && strcmp(line, "template") == 0) m->has_template = strcmp(val, "none") != 0;
        else if (!cur && strcmp(line, "embed_size") == 0) m->embed_size = atoi(val) > 0 ? atoi(val) : 64;
        else if (!cur && strcmp(line, "image_tokens") == 0) m->image_tokens = atoi(val);
        else if (!cur && strcmp(line, "system") == 0) m->system = strdup(val);
        else if (!cur && strcmp(line, "toolkit_version") == 0) m->toolkit = strdup(val);
        else if (!cur && strcmp(line, "target_platform") == 0) m->platform = strdup(val);
        else if (!cur && strcmp(line, "model_dtype") == 0) m->dtype = strdup(val);
        else if (!cur && strcmp(line, "npu_core_num") == 0) m->npu_cores = atoi(val);
        else if (!cur && strcmp(line, "logits_history") == 0 && (!strcmp(val, "keep") || !strcmp(val, "drop")))
            m->logits_keep = strcmp(val, "keep") == 0;
        else {
            logmsg('E', "model file line %d: unknown key '%s'", lineno, line);
            ok = 0;
        }
    }
    free(line);
    fclose(f);
    if (!ok || lineno == 0) {
        logmsg('E', "%s is not a valid rkllm model file", path);
        model_free(m);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ handle */

typedef struct {
    handle_base base; /* first: the shared entry points see a handle_base */
    model_t model;
    RKLLMParam param;
    /* chat template */
    char *sys_prefix, *sys_postfix, *user_prefix, *user_postfix, *tool_prefix, *tool_postfix, *turn_end;
    char *system_prompt, *tools;
    ivec sys;       /* tokens of the current system section */
    size_t kv_sys;  /* length of the system section the kv starts with (current or stale), 0: none */
    int sys_in_kv;  /* the kv starts with the current system section */
    ivec prompt_cache;
    int has_prompt_cache;
    char *paused_reply; /* remaining text after a callback returned 1 */
    size_t paused_pos;
    char image_colours[256]; /* " red blue ": the images of the latest input, by their mean colour */
    ivec script;       /* logits mode: the scripted reply's tokens, end-of-turn included */
    size_t script_pos; /* the script's next token, as far as the fed tokens followed it */
} handle_t;

static atomic_int npu_used_mb;

/* Replaces the chat template's pieces; the end-of-turn token stays the model's. */
static void set_template(handle_t *h, const char *sys_prefix, const char *sys_postfix, const char *user_prefix,
                         const char *user_postfix, const char *tool_prefix, const char *tool_postfix) {
    free(h->sys_prefix), free(h->sys_postfix), free(h->user_prefix), free(h->user_postfix);
    free(h->tool_prefix), free(h->tool_postfix);
    h->sys_prefix = strdup(sys_prefix), h->sys_postfix = strdup(sys_postfix);
    h->user_prefix = strdup(user_prefix), h->user_postfix = strdup(user_postfix);
    h->tool_prefix = strdup(tool_prefix), h->tool_postfix = strdup(tool_postfix);
}

/* The model's built-in (Qwen-style) template. The model ends its turn with <|im_end|>
   (sampled, counted, kept in the cache, never shown); the newline that follows it opens
   the next turn. */
static void set_default_template(handle_t *h) {
    set_template(h, "<|im_start|>system\n", "<|im_end|>", "\n<|im_start|>user\n",
                 "<|im_end|>\n<|im_start|>assistant\n", "\n<|im_start|>user\n<tool_response>\n",
                 "\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
}

/* Recomputes the system section's tokens. Whether the vendor runtime clears the KV cache when
   the system prompt or template changes is not documented: here it does not, so the cache
   keeps the previous conversation behind the old system section until it is cleared. */
static void rebuild_system(handle_t *h) {
    char *text = NULL;
    str_append(&text, "");
    if (h->system_prompt && *h->system_prompt) {
        char *content = system_with_tools(h->system_prompt, h->tools);
        str_append(&text, h->sys_prefix);
        str_append(&text, content);
        str_append(&text, h->sys_postfix);
        free(content);
    }
    h->sys.n = 0;
    tokenize(&h->sys, text);
    free(text);
    h->sys_in_kv = 0;
}


int rkllm_init(LLMHandle *out, RKLLMParam *param, RKLLMInitCallback callback) {
    log_version("EMULATOR");
    if (!out || !param) return -1;
    *out = NULL;
    handle_t *h = calloc(1, sizeof *h);
    if (model_load(&h->model, param->model_path) != 0) {
        free(h);
        return -1;
    }
    int fail = 0;
    if (log_model_header(h->model.toolkit, h->model.max_context, h->model.npu_cores, h->model.platform,
                         h->model.dtype) != 0) {
        /* As the vendor runtime does with a file of another release series (rknn-llm #509). */
        logmsg('E', "model file of another rkllm-toolkit release: crashing as the vendor runtime does");
        raise(SIGSEGV);
    }
    if (vocab_load() != 0) fail = 1;
    else if (h->model.init_fail) {
        logmsg('E', "failed to initialise the model (init_fail)");
        fail = 1;
    } else if (param->max_context_len <= 0 || param->max_context_len > h->model.max_context) {
        logmsg('E', "max_context_len %d is out of range: the model supports at most %d", param->max_context_len,
               h->model.max_context);
        fail = 1;
    } else {
        int available = (int)env_double("RKLLM_EMU_NPU_MEMORY_MB", -1);
        int need = h->model.npu_memory_mb;
        if (available >= 0 && atomic_load(&npu_used_mb) + need > available) {
            logmsg('E', "failed to allocate %d MB of NPU memory (%d MB free)", need,
                   available - atomic_load(&npu_used_mb));
            fail = 1;
        }
    }
    if (!fail && set_callback(&h->base, callback) != 0) fail = 1;
    if (fail) {
        model_free(&h->model);
        free(h);
        return -1;
    }
    atomic_fetch_add(&npu_used_mb, h->model.npu_memory_mb);
    h->param = *param;
    h->param.model_path = strdup(param->model_path);
    pthread_mutex_init(&h->base.mu, NULL);
    set_default_template(h);
    h->turn_end = strdup("<|im_end|>");
    h->system_prompt = xstrdup(h->model.system);
    rebuild_system(h);
    if (log_level() >= 1)
        logmsg('I', "loaded %s (%s), max_context_len %d", param->model_path,
               h->model.name ? h->model.name : "emulated model", param->max_context_len);
    *out = h;
    return 0;
}

int rkllm_destroy(LLMHandle handle) {
    handle_t *h = handle;
    if (!h) return -1;
    atomic_store(&h->base.abort_requested, 1);
    while (atomic_load(&h->base.running)) sleep_ms(1);
    atomic_fetch_sub(&npu_used_mb, h->model.npu_memory_mb);
    free((char *)h->param.model_path);
    free(h->sys_prefix), free(h->sys_postfix), free(h->user_prefix), free(h->user_postfix);
    free(h->tool_prefix), free(h->tool_postfix), free(h->turn_end);
    free(h->system_prompt), free(h->tools), free(h->paused_reply);
    free(h->sys.v), free(h->base.kv.v), free(h->prompt_cache.v), free(h->script.v);
    model_free(&h->model);
    pthread_mutex_destroy(&h->base.mu);
    free(h);
    return 0;
}

int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter *adapter) {
    handle_t *h = handle;
    if (!h || !adapter || !adapter->lora_adapter_path || busy(&h->base, "rkllm_load_lora")) return -1;
    FILE *f = fopen(adapter->lora_adapter_path, "rb");
    if (!f) {
        logmsg('E', "failed to open lora adapter %s", adapter->lora_adapter_path);
        return -1;
    }
    fclose(f);
    return 0;
}

int rkllm_set_chat_template(LLMHandle handle, const char *system_prompt, const char *prefix, const char *postfix) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_set_chat_template")) return -1;
    pthread_mutex_lock(&h->base.mu);
    const char *user_prefix = prefix ? prefix : "", *user_postfix = postfix ? postfix : "";
    set_template(h, "", "", user_prefix, user_postfix, user_prefix, user_postfix);
    free(h->system_prompt), free(h->tools);
    h->system_prompt = xstrdup(system_prompt), h->tools = NULL;
    rebuild_system(h);
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}

int rkllm_set_function_tools(LLMHandle handle, const char *system_prompt, const char *tools,
                             const char *tool_response_str) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_set_function_tools")) return -1;
    if (!h->model.has_template) {
        logmsg('E', "rkllm_set_function_tools: the model has no built-in chat template");
        return -1;
    }
    pthread_mutex_lock(&h->base.mu);
    set_default_template(h);
    if (tool_response_str && *tool_response_str) {
        char open[128], close[128];
        snprintf(open, sizeof open, "\n<|im_start|>user\n<%s>\n", tool_response_str);
        snprintf(close, sizeof close, "\n</%s><|im_end|>\n<|im_start|>assistant\n", tool_response_str);
        free(h->tool_prefix), free(h->tool_postfix);
        h->tool_prefix = strdup(open), h->tool_postfix = strdup(close);
    }
    free(h->system_prompt), free(h->tools);
    h->system_prompt = xstrdup(system_prompt);
    h->tools = tools_or_null(tools);
    rebuild_system(h);
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}

int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam *p) {
    handle_t *h = handle;
    return (!h || !p || busy(&h->base, "rkllm_set_cross_attn_params")) ? -1 : 0;
}

int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int *start_pos, int *end_pos) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_clear_kv_cache")) return -1;
    pthread_mutex_lock(&h->base.mu);
    if (range_clear_refused(&h->base, start_pos, end_pos, h->paused_reply != NULL)) {
        pthread_mutex_unlock(&h->base.mu);
        return -1;
    }
    if (start_pos && end_pos) {
        /* Clear the range [start, end) of batch slot 0. */
        size_t s = (size_t)(start_pos[0] < 0 ? 0 : start_pos[0]), e = (size_t)(end_pos[0] < 0 ? 0 : end_pos[0]);
        if (e > h->base.kv.n) e = h->base.kv.n;
        if (s < e) {
            memmove(h->base.kv.v + s, h->base.kv.v + e, (h->base.kv.n - e) * sizeof(int32_t));
            h->base.kv.n -= e - s;
            if (s < h->kv_sys) h->kv_sys = 0, h->sys_in_kv = 0;
        }
    } else if (keep_system_prompt && h->kv_sys <= h->base.kv.n) {
        h->base.kv.n = h->kv_sys; /* whichever system section the cache starts with */
    } else {
        h->base.kv.n = h->kv_sys = 0;
        h->sys_in_kv = 0;
    }
    free(h->paused_reply);
    h->paused_reply = NULL;
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}


/* --------------------------------------------------------- prompt caches */

/* The file holds the tokens; its size is what the vendor's would be (fp16 K and V of every
   token: kv_bytes_per_token each), the rest a sparse hole. Writing it is charged by that size. */
static int save_prompt_cache(handle_t *h, const char *path, const ivec *tokens, double time_scale) {
    char version[16] = {0};
    strncpy(version, RKLLM_EMU_VERSION, sizeof version - 1);
    uint32_t n = (uint32_t)tokens->n;
    uint64_t check = fnv1a(tokens->v, n * sizeof(int32_t), FNV_SEED);
    double bytes = (double)n * h->model.kv_bytes_per_token;
    const void *parts[] = {CACHE_MAGIC, version, &h->model.id, &n, tokens->v, &check};
    size_t sizes[] = {8, sizeof version, sizeof h->model.id, sizeof n, n * sizeof(int32_t), sizeof check};
    if (write_file_atomic(path, parts, sizes, 6, (size_t)bytes) != 0) {
        logmsg('E', "failed to write prompt cache %s", path);
        return -1;
    }
    sleep_ms(storage_model_ms(bytes) * time_scale);
    if (log_level() >= 1) logmsg('I', "saved prompt cache %s (%u tokens)", path, n);
    return 0;
}

int rkllm_load_prompt_cache(LLMHandle handle, const char *path) {
    handle_t *h = handle;
    if (!h || !path || busy(&h->base, "rkllm_load_prompt_cache")) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) {
        logmsg('E', "failed to open prompt cache %s", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    double bytes = (double)ftell(f);
    rewind(f);
    char magic[8], version[16];
    uint64_t model_id = 0, check = 0;
    uint32_t n = 0;
    int ok = fread(magic, 1, 8, f) == 8 && memcmp(magic, CACHE_MAGIC, 8) == 0 &&
             fread(version, 1, sizeof version, f) == sizeof version && fread(&model_id, sizeof model_id, 1, f) == 1 &&
             fread(&n, sizeof n, 1, f) == 1 && n < (1u << 24);
    int32_t *tokens = ok ? malloc((n ? n : 1) * sizeof(int32_t)) : NULL;
    ok = ok && fread(tokens, sizeof(int32_t), n, f) == n && fread(&check, sizeof check, 1, f) == 1 &&
         check == fnv1a(tokens, n * sizeof(int32_t), FNV_SEED);
    fclose(f);
    double written = 8 + sizeof version + sizeof model_id + sizeof n + (double)n * sizeof(int32_t) + sizeof check;
    double nominal = (double)n * h->model.kv_bytes_per_token;
    ok = ok && bytes == (nominal > written ? nominal : written); /* a truncated file is refused */
    if (!ok) {
        logmsg('E', "prompt cache %s is corrupt", path);
        free(tokens);
        return -1;
    }
    version[sizeof version - 1] = 0;
    if (model_id != h->model.id || strcmp(version, RKLLM_EMU_VERSION) != 0) {
        logmsg('E', "prompt cache %s was made by another model or runtime version", path);
        free(tokens);
        return -1;
    }
    sleep_ms(storage_model_ms(bytes) * env_double("RKLLM_EMU_TIME_SCALE", 1));
    pthread_mutex_lock(&h->base.mu);
    ivec_copy(&h->prompt_cache, tokens, n);
    h->has_prompt_cache = 1;
    pthread_mutex_unlock(&h->base.mu);
    free(tokens);
    if (log_level() >= 1) logmsg('I', "loaded prompt cache %s (%u tokens)", path, n);
    return 0;
}

int rkllm_release_prompt_cache(LLMHandle handle) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_release_prompt_cache")) return -1;
    pthread_mutex_lock(&h->base.mu);
    h->prompt_cache.n = 0;
    h->has_prompt_cache = 0;
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}

/* ----------------------------------------------------------------- running */

typedef struct {
    handle_t *h;
    void *userdata;
    double t0, t_first;
    int prefill_tokens, generated;
    double time_scale;
} run_t;

static int emit(run_t *r, RKLLMResult *res, LLMCallState state) {
    return emit_result(&r->h->base, r->userdata, res, state);
}

static void finish(run_t *r, double t_end) {
    RKLLMResult res;
    memset(&res, 0, sizeof res);
    double scale = r->time_scale > 0 ? r->time_scale : 1;
    double first = r->t_first > 0 ? r->t_first : t_end;
    res.perf.prefill_time_ms = (float)((first - r->t0) / scale);
    res.perf.prefill_tokens = r->prefill_tokens;
    res.perf.generate_time_ms = (float)((t_end - first) / scale);
    res.perf.generate_tokens = r->generated;
    res.perf.memory_usage_mb = peak_memory_mb();
    if (log_level() >= 1) {
        logmsg('I', "prefill %d tokens in %.2f ms, generate %d tokens in %.2f ms (%.2f tokens/s), peak memory %.1f MB",
               r->prefill_tokens, res.perf.prefill_time_ms, r->generated, res.perf.generate_time_ms,
               res.perf.generate_time_ms > 0 ? r->generated * 1000.0 / res.perf.generate_time_ms : 0.0,
               res.perf.memory_usage_mb);
        if (log_level() >= 2) logmsg('I', "kv cache size: %zu tokens", r->h->base.kv.n);
    }
    emit(r, &res, RKLLM_RUN_FINISH);
}

static void fail(run_t *r, const char *why) {
    RKLLMResult res;
    memset(&res, 0, sizeof res);
    logmsg('E', "%s", why);
    emit(r, &res, RKLLM_RUN_ERROR);
}

/* Keeps the KV cache within max_context_len by dropping the oldest tokens after
   n_keep (the context shift). Returns 0 when `reserve` more tokens fit. */
static int make_room(handle_t *h, size_t reserve, size_t protect_from) {
    size_t limit = (size_t)h->param.max_context_len;
    if (h->base.kv.n + reserve <= limit) return 0;
    size_t keep = h->param.n_keep < 0 ? h->kv_sys : (size_t)h->param.n_keep;
    if (keep > h->base.kv.n) keep = h->base.kv.n;
    size_t need = h->base.kv.n + reserve - limit;
    size_t room = protect_from > keep ? protect_from - keep : 0;
    size_t drop = (h->base.kv.n - keep) / 2;
    if (need > room) return -1;
    if (drop < need) drop = need;
    if (drop > room) drop = room;
    memmove(h->base.kv.v + keep, h->base.kv.v + keep + drop, (h->base.kv.n - keep - drop) * sizeof(int32_t));
    h->base.kv.n -= drop;
    if (keep < h->kv_sys) h->kv_sys = 0, h->sys_in_kv = 0;
    if (log_level() >= 1) logmsg('I', "context shift: dropped %zu tokens after the first %zu", drop, keep);
    return 0;
}

/* Simulated prefill time: RKLLM_EMU_PREFILL_TPS or the model's prefill_tps is the rate of a
   128-token prompt (what the vendor's tables give); longer contexts cost more per token. */
static double prefill_ms(const handle_t *h, size_t start, size_t n) {
    double tps128 = env_double("RKLLM_EMU_PREFILL_TPS", h->model.prefill_tps);
    return prefill_model_ms(tps128, env_double("RKLLM_EMU_PREFILL_DOUBLE_AT", h->model.prefill_double_at), start, n);
}

static const rule_t *pick_rule(handle_t *h, const char *role, const char *text) {
    char *lower = strdup(text ? text : "");
    for (char *p = lower; *p; p++) *p = (char)tolower((unsigned char)*p);
    const rule_t *found = NULL;
    for (size_t i = 0; i < h->model.n_rules && !found; i++) {
        const rule_t *r = &h->model.rules[i];
        if (r->role && strcmp(r->role, role) != 0) continue;
        if (r->tools == 1 && !h->tools) continue;
        if (r->tools == 0 && h->tools) continue;
        if (r->match && *r->match && !strstr(lower, r->match)) continue;
        if (r->image) {
            char word[64];
            snprintf(word, sizeof word, " %s ", r->image);
            if (!strstr(h->image_colours, word)) continue;
        }
        found = r;
    }
    free(lower);
    return found;
}

/* Reply text for a rule: the optional thinking block, then the reply with {input} (the input text)
   and {image} (the colours of its images) replaced. */
static char *compose_reply(const rule_t *rule, int thinking, const char *input, const char *colours) {
    char *out = NULL;
    str_append(&out, "");
    if (!rule) return str_append(&out, "I am an emulated model and have no reply for that.");
    if (thinking && rule->think) {
        str_append(&out, "<think>\n");
        str_append(&out, rule->think);
        str_append(&out, "\n</think>\n\n");
    }
    const char *reply = rule->reply ? rule->reply : "";
    size_t n = strlen(colours);
    char *image = n > 2 ? strndup(colours + 1, n - 2) : strdup(""); /* " red blue " -> "red blue" */
    for (;;) {
        const char *p = strstr(reply, "{input}"), *q = strstr(reply, "{image}");
        const char *at = !p ? q : !q ? p : p < q ? p : q;
        if (!at) break;
        char *chunk = strndup(reply, (size_t)(at - reply));
        str_append(&out, chunk);
        free(chunk);
        str_append(&out, at == q ? image : input ? input : "");
        reply = at + 7;
    }
    free(image);
    return str_append(&out, reply);
}

/* Streams text token by token from *pos; returns 1 when the callback asked to pause. */
static int stream_text(run_t *r, const char *text, size_t *pos, int max_new, int error_after) {
    handle_t *h = r->h;
    double decode_tps = env_double("RKLLM_EMU_DECODE_TPS", h->model.decode_tps);
    int need = 0; /* continuation bytes still missing for the current character */
    ivec ids = {0}, lens = {0};
    vocab_tokenize(text + *pos, &ids, &lens);
    /* The first token comes with the prefill (its logits); each later one takes a decode step. */
    double token_ms = decode_tps > 0 ? 1000.0 / decode_tps * r->time_scale : 0;
    double next_due = r->generated == 0 ? now_ms() : now_ms() + token_ms;
    int status = 0;
    for (size_t t = 0; t < ids.n && status == 0; t++) {
        if (token_ms > 0) sleep_until_ms(next_due), next_due += token_ms; /* decoding the token */
        if (atomic_load(&h->base.abort_requested)) break; /* an abort meanwhile: it is not emitted */
        if (max_new > 0 && r->generated >= max_new) break;
        if (error_after >= 0 && r->generated >= error_after) {
            status = -1;
            break;
        }
        size_t k = (size_t)lens.v[t];
        char *piece = strndup(text + *pos, k);
        need = utf8_missing(need, (const unsigned char *)piece, k);
        *pos += k;
        if (r->generated == 0) r->t_first = now_ms();
        RKLLMResult res;
        memset(&res, 0, sizeof res);
        res.text = piece;
        res.token_id = ids.v[t];
        make_room(h, 1, h->base.kv.n);
        ivec_push(&h->base.kv, res.token_id);
        r->generated++;
        if (emit(r, &res, need > 0 ? RKLLM_RUN_WAITING : RKLLM_RUN_NORMAL) == 1) status = 1;
        free(piece);
    }
    free(ids.v), free(lens.v);
    return status;
}

static void add_word(char *words, const char *word) {
    strncat(words, word, sizeof(((handle_t *)0)->image_colours) - strlen(words) - 1);
}

/* The colour nearest to an image's mean colour (red, green, blue in 0..1). */
static const char *colour_name(const double rgb[3]) {
    static const struct {
        const char *name;
        double r, g, b;
    } palette[] = {{"black", 0, 0, 0}, {"white", 1, 1, 1},  {"gray", .5, .5, .5},   {"red", 1, 0, 0},
                   {"green", 0, .6, 0}, {"blue", 0, 0, 1}, {"yellow", 1, 1, 0}, {"purple", .5, 0, .5}};
    size_t best = 0;
    double best_d = 1e9;
    for (size_t i = 0; i < sizeof palette / sizeof *palette; i++) {
        double dr = rgb[0] - palette[i].r, dg = rgb[1] - palette[i].g, db = rgb[2] - palette[i].b;
        double d = dr * dr + dg * dg + db * db;
        if (d < best_d) best_d = d, best = i;
    }
    return palette[best].name;
}

/* Tokens of a multimodal input: each <image> of the prompt becomes the start tag, one content token per
   image token and the end tag (ABI 1.2 takes the tags at init). The image rows are checked as the model
   reads them: the token count it was converted for, and rows of its embedding size (the emulated
   encoder starts each row with its length). h->image_colours names each image's mean colour. */
static int multimodal_tokens(handle_t *h, const RKLLMMultiModalInput *mm, ivec *out, const char *prefix,
                             const char *postfix) {
#if RKLLM_ABI >= 13
    const RKLLMImageInput *im = &mm->image;
    const char *start = im->image_start, *end = im->image_end;
#else
    const RKLLMMultiModalInput *im = mm;
    const char *start = h->param.img_start, *end = h->param.img_end;
#endif
    size_t n_image = im->n_image, n_tokens = im->n_image_tokens, e = (size_t)h->model.embed_size;
    h->image_colours[0] = 0;
    if (!im->image_embed || !n_image || !n_tokens || !im->image_width || !im->image_height) {
        logmsg('E', "multimodal input without an image embedding");
        return -1;
    }
    if (h->model.image_tokens && n_tokens != (size_t)h->model.image_tokens) {
        logmsg('E', "the image has %zu tokens, the model takes %d per image", n_tokens, h->model.image_tokens);
        return -1;
    }
    size_t placeholders = 0;
    for (const char *p = mm->prompt; (p = strstr(p, "<image>")); p += 7) placeholders++;
    if (placeholders != n_image) {
        logmsg('E', "the prompt has %zu <image> placeholders for %zu images", placeholders, n_image);
        return -1;
    }
    add_word(h->image_colours, " ");
    for (size_t i = 0; i < n_image; i++) {
        double rgb[3] = {0};
        for (size_t t = 0; t < n_tokens; t++) {
            const float *row = im->image_embed + (i * n_tokens + t) * e;
            if (row[0] != (float)e) { /* read no further: the rows are of another length */
                logmsg('E', "the image embedding does not fit the model: rows of %zu floats expected", e);
                return -1;
            }
            for (int k = 0; k < 3; k++) rgb[k] += row[1 + k] / (double)n_tokens;
        }
        add_word(h->image_colours, colour_name(rgb));
        add_word(h->image_colours, " ");
    }
    tokenize(out, prefix);
    const char *text = mm->prompt;
    for (const char *p; (p = strstr(text, "<image>")); text = p + 7) {
        char *piece = strndup(text, (size_t)(p - text));
        tokenize(out, piece);
        free(piece);
        tokenize(out, start ? start : "");
        for (size_t t = 0; t < n_tokens; t++) ivec_push(out, 151655); /* <|image_pad|>, its row in the cache */
        tokenize(out, end ? end : "");
    }
    tokenize(out, text);
    tokenize(out, postfix);
    return 0;
}

/* Logits mode. The scripted reply is what the model "wants" to say: its next token is the greedy
   choice, the tokens after it come next, everything else is low noise. A fed token that the
   script holds (at or after the next position) moves the script past it; any other token leaves
   the model wanting the same token again, as a real model keeps pulling towards its reply. */
static void set_script(handle_t *h, char *reply) {
    h->script.n = 0, h->script_pos = 0;
    tokenize(&h->script, reply);
    tokenize(&h->script, h->turn_end);
    free(reply);
}

static void follow_script(handle_t *h, const int32_t *fed, size_t n) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = h->script_pos; j < h->script.n; j++)
            if (h->script.v[j] == fed[i]) {
                h->script_pos = j + 1;
                break;
            }
}

static void script_logits(const handle_t *h, float *values) {
    uint64_t seed = fnv1a(h->base.kv.v, h->base.kv.n * sizeof(int32_t), FNV_SEED);
    for (int i = 0; i < VOCAB_SIZE; i++) { /* noise in [-1, 1), from the context and the token */
        uint64_t x = (seed ^ (uint64_t)i) * 0x9E3779B97F4A7C15ULL;
        values[i] = (float)((x >> 40) & 0xFFFF) / 32768.0f - 1.0f;
    }
    for (size_t j = h->script.n; j-- > h->script_pos + 1;) /* later script tokens: the nearer, the higher */
        values[h->script.v[j]] = 5.0f - 0.01f * (float)(j - h->script_pos);
    ivec end = {0};
    tokenize(&end, h->turn_end);
    int32_t next = h->script_pos < h->script.n ? h->script.v[h->script_pos] : end.v[0];
    free(end.v);
    values[next] = 10.0f;
}

/* A logits run costs at least one decode step: like a generated token, its weights are read
   once however few tokens it feeds (RKLLM_EMU_DECODE_TPS or the model's decode_tps), plus the
   per-run overhead RKLLM_EMU_RUN_OVERHEAD_MS or the model's run_overhead_ms. */
static double logits_run_ms(const handle_t *h, double prefill) {
    double decode_tps = env_double("RKLLM_EMU_DECODE_TPS", h->model.decode_tps);
    double step = decode_tps > 0 ? 1000.0 / decode_tps : 0;
    return (prefill > step ? prefill : step) + env_double("RKLLM_EMU_RUN_OVERHEAD_MS", h->model.run_overhead_ms);
}

/* Appends the tokens of one input (wrapped by the chat template) to out; *text gets its text. */
static int input_tokens(handle_t *h, const RKLLMInput *in, ivec *out, const char **text, const char **role) {
    *role = (in->role && strcmp(in->role, "tool") == 0) ? "tool" : "user";
    *text = "";
    h->image_colours[0] = 0;
    int tool = strcmp(*role, "tool") == 0;
    const char *prefix = tool ? h->tool_prefix : h->user_prefix, *postfix = tool ? h->tool_postfix : h->user_postfix;
    switch (in->input_type) {
    case RKLLM_INPUT_PROMPT:
        if (!in->prompt_input) return -1;
        *text = in->prompt_input;
        tokenize(out, prefix);
        tokenize(out, in->prompt_input);
        tokenize(out, postfix);
        return 0;
    case RKLLM_INPUT_TOKEN:
        if (!in->token_input.input_ids && in->token_input.n_tokens) return -1;
        for (size_t i = 0; i < in->token_input.n_tokens; i++) ivec_push(out, in->token_input.input_ids[i]);
        return 0;
    case RKLLM_INPUT_EMBED: {
        size_t e = (size_t)h->model.embed_size;
        if (!in->embed_input.embed && in->embed_input.n_tokens) return -1;
        for (size_t i = 0; i < in->embed_input.n_tokens; i++)
            ivec_push(out, (int32_t)(fnv1a(in->embed_input.embed + i * e, e * sizeof(float), FNV_SEED) % VOCAB_SIZE));
        return 0;
    }
    case RKLLM_INPUT_MULTIMODAL:
        if (!in->multimodal_input.prompt || multimodal_tokens(h, &in->multimodal_input, out, prefix, postfix) != 0)
            return -1;
        *text = in->multimodal_input.prompt;
        return 0;
    }
    return -1;
}

int engine_run_locked(void *handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
    handle_t *h = handle;
    run_t r = {.h = h, .userdata = userdata, .t0 = now_ms(), .time_scale = env_double("RKLLM_EMU_TIME_SCALE", 1)};
    int max_new = h->param.max_new_tokens;
#if RKLLM_ABI >= 13
    if (ip->max_new_tokens > 0) max_new = ip->max_new_tokens;
#endif
    if (h->paused_reply) { /* resume after a pause */
        char *text = h->paused_reply;
        h->paused_reply = NULL;
        r.t_first = r.t0;
        if (stream_text(&r, text, &h->paused_pos, max_new, -1) == 1) {
            h->paused_reply = text;
            return 0;
        }
        free(text);
        finish(&r, now_ms());
        return 0;
    }

    ivec fresh = {0};
    const char *text, *role;
    if (input_tokens(h, in, &fresh, &text, &role) != 0) {
        free(fresh.v);
        fail(&r, "invalid input");
        return -1;
    }
    int text_input = in->input_type == RKLLM_INPUT_PROMPT || in->input_type == RKLLM_INPUT_MULTIMODAL;
    const rule_t *rule = ip->mode == RKLLM_INFER_GENERATE || (ip->mode == RKLLM_INFER_GET_LOGITS && text_input)
                             ? pick_rule(h, role, text)
                             : NULL;
    if (rule && rule->run_fail) {
        free(fresh.v);
        logmsg('E', "rkllm_run failed (run_fail)");
        return -1;
    }
    if (rule && rule->crash) raise(SIGSEGV);

    /* What the cache must hold before generation. keep_history=1 appends the input to
       whatever the cache holds (the system section of a fresh cache otherwise);
       keep_history=0 starts from the current system section. */
    ivec target = {0};
    size_t reuse; /* leading tokens of target the cache already holds */
    int appended = ip->keep_history && h->base.kv.n > 0;
    size_t kept_before = appended ? h->base.kv.n : h->sys.n; /* what a logits run that keeps nothing leaves */
    if (appended) {
        ivec_copy(&target, h->base.kv.v, h->base.kv.n);
        reuse = h->base.kv.n;
    } else {
        ivec_copy(&target, h->sys.v, h->sys.n);
        reuse = h->sys_in_kv ? h->sys.n : 0;
    }
    size_t input_start = target.n;
    for (size_t i = 0; i < fresh.n; i++) ivec_push(&target, fresh.v[i]);
    free(fresh.v);
    /* A loaded prompt cache spares the prefill of the prefix a keep_history=0 run's input
       shares with it (the documented prefix detection). In a keep_history=1 run it is not
       used, as reported for the vendor runtime (rknn-llm #399). */
    if (h->has_prompt_cache && !ip->keep_history) {
        size_t pc = common_prefix(&h->prompt_cache, &target);
        if (pc > reuse) {
            ivec_copy(&h->base.kv, h->prompt_cache.v, pc);
            reuse = pc;
        }
    }
    if (reuse > 0 && reuse == target.n) reuse--; /* the last token is always evaluated, for its logits */
    h->base.kv.n = reuse;

    /* Prefill the rest, shifting the context when it fills up. */
    size_t limit = (size_t)h->param.max_context_len;
    size_t keep = h->param.n_keep < 0 ? h->sys.n : (size_t)h->param.n_keep;
    size_t input_len = target.n - input_start;
    if (input_len + (keep < input_start ? keep : input_start) + 1 > limit) {
        free(target.v);
        char why[160];
        snprintf(why, sizeof why, "the input (%zu tokens) does not fit in max_context_len %zu", input_len, limit);
        fail(&r, why);
        h->base.kv.n = h->kv_sys <= h->base.kv.n ? h->kv_sys : 0;
        return -1;
    }
    if (!appended) h->kv_sys = h->sys.n, h->sys_in_kv = 1;
    for (size_t i = reuse; i < target.n; i++) {
        size_t input_pushed = i > input_start ? i - input_start : 0;
        make_room(h, 1, h->base.kv.n - input_pushed);
        ivec_push(&h->base.kv, target.v[i]);
    }
    r.prefill_tokens = (int)(target.n - reuse);
    double fill_ms = prefill_ms(h, reuse, (size_t)r.prefill_tokens);
    if (ip->mode == RKLLM_INFER_GET_LOGITS) fill_ms = logits_run_ms(h, fill_ms);
    sleep_ms(fill_ms * r.time_scale);
    const char *save_path = ip->prompt_cache_params && ip->prompt_cache_params->save_prompt_cache
                                ? ip->prompt_cache_params->prompt_cache_path
                                : NULL;

    if (ip->mode != RKLLM_INFER_GENERATE) {
        /* One result carrying the last hidden layer or the logits of the last token. */
        int logits = ip->mode == RKLLM_INFER_GET_LOGITS;
        int width = logits ? VOCAB_SIZE : h->model.embed_size;
        float *values = calloc((size_t)width, sizeof(float));
        if (logits) {
            if (text_input) set_script(h, compose_reply(rule, in->enable_thinking, text, h->image_colours));
            else follow_script(h, target.v + input_start, target.n - input_start);
            script_logits(h, values);
        } else {
            for (int i = 0; i < width; i++) values[i] = (float)((h->base.kv.v[h->base.kv.n - 1] + i) % 97) / 97.0f;
        }
        RKLLMResult res;
        memset(&res, 0, sizeof res);
        if (logits) res.logits = (RKLLMResultLogits){values, width, 1};
        else res.last_hidden_layer = (RKLLMResultLastHiddenLayer){values, width, 1};
        r.t_first = now_ms();
        /* Aborted during its prefill: the run ends with no result, as llama.cpp's engine ends it. */
        if (!atomic_load(&h->base.abort_requested)) emit(&r, &res, RKLLM_RUN_NORMAL);
        free(values);
        finish(&r, now_ms());
        if (save_path) save_prompt_cache(h, save_path, &target, r.time_scale);
        free(target.v);
        if (!ip->keep_history) h->base.kv.n = h->kv_sys;
        else if (logits && !h->model.logits_keep && kept_before <= h->base.kv.n) h->base.kv.n = kept_before;
        return 0;
    }

    char *reply = compose_reply(rule, in->enable_thinking, text, h->image_colours);
    size_t pos = 0;
    int status = stream_text(&r, reply, &pos, max_new, rule ? rule->error_after : -1);
    if (status == 1) {
        free(target.v);
        h->paused_reply = reply;
        h->paused_pos = pos;
        return 0;
    }
    free(reply);
    if (status == -1) {
        free(target.v);
        fail(&r, "inference failed (error_after)");
        h->base.kv.n = h->kv_sys <= h->base.kv.n ? h->kv_sys : 0;
        return -1;
    }
    int truncated = max_new > 0 && r.generated >= max_new;
    if (!atomic_load(&h->base.abort_requested) && !truncated) { /* the end-of-turn token closes the reply */
        ivec end = {0};
        tokenize(&end, h->turn_end);
        double decode_tps = env_double("RKLLM_EMU_DECODE_TPS", h->model.decode_tps);
        if (decode_tps > 0) sleep_ms((double)end.n * 1000.0 / decode_tps * r.time_scale); /* decoded too */
        for (size_t i = 0; i < end.n; i++) make_room(h, 1, h->base.kv.n), ivec_push(&h->base.kv, end.v[i]);
        r.generated += (int)end.n;
        free(end.v);
    }
    finish(&r, now_ms());
    /* "After inference ends the PromptCache file is generated": the prefilled input. */
    if (save_path) save_prompt_cache(h, save_path, &target, r.time_scale);
    free(target.v);
    if (!ip->keep_history) h->base.kv.n = h->kv_sys; /* back to the system section */
    return 0;
}





/* Emulator extension (not in the vendor runtime): the modelled prefill time of n tokens after
   `start` cached ones, so the timing model can be checked against the vendor's figures. */
double rkllm_emu_prefill_ms(LLMHandle handle, int start, int n) {
    handle_t *h = handle;
    return h && start >= 0 && n >= 0 ? prefill_ms(h, (size_t)start, (size_t)n) : -1;
}

/* Emulator extension (not in the vendor runtime): tokens an input takes once wrapped by the
   chat template, so benchmarks can relate prefilled tokens to the size of what was new. */
int rkllm_emu_input_tokens(LLMHandle handle, RKLLMInput *in) {
    handle_t *h = handle;
    ivec tokens = {0};
    const char *text, *role;
    if (!h || !in || input_tokens(h, in, &tokens, &text, &role) != 0) return -1;
    int n = (int)tokens.n;
    free(tokens.v);
    return n;
}


