/*
 * The real-model engine of the RKLLM emulator: the RKLLM ABI on top of llama.cpp.
 *
 * The "model file" is a GGUF model. A run behaves as the scripted engine's: the
 * system section (system prompt and tools, set by rkllm_set_function_tools) is
 * prefilled once and kept; keep_history appends to the cached conversation;
 * clear_kv_cache, prompt-cache files, abort, perf stats and UTF-8 split across
 * WAITING callbacks all work the same, with a real language model generating.
 * Turns are formatted by the model's own chat template (llama.cpp's built-in
 * renderers); tool results are wrapped in <tool_response> as RKLLM does for Qwen.
 * Logits mode returns llama.cpp's next-token logits of the input's last position.
 * Not supported here: LoRA, EMBED and multimodal inputs, the hidden-layer mode,
 * and pausing from the callback (they fail with -1 or are ignored).
 */
#define _GNU_SOURCE
#include "common.h"

#include <llama.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIECE_MAX 256

typedef struct {
    handle_base base; /* first: the shared entry points see a handle_base */
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    const char *chat_template; /* owned by the model; NULL: chatml */
    RKLLMParam param;
    char *prefix, *postfix; /* set by rkllm_set_chat_template, else NULL */
    char *system_prompt, *tools, *tool_response;
    ivec sys; /* tokens of the system section */
    int sys_in_kv;
    size_t prompt_cache_len; /* leading kv tokens loaded from a prompt-cache file */
} handle_t;

static void quiet_log(enum ggml_log_level level, const char *text, void *data) {
    (void)data;
    if (level >= GGML_LOG_LEVEL_ERROR || log_level() >= 2) fputs(text, stderr);
}

static bool no_progress(float progress, void *data) {
    (void)progress, (void)data;
    return true;
}

static int tokenize(handle_t *h, ivec *out, const char *text) {
    int32_t n = (int32_t)strlen(text), cap = n + 16;
    llama_token *buf = malloc((size_t)cap * sizeof(llama_token));
    int32_t k = llama_tokenize(h->vocab, text, n, buf, cap, false, true);
    if (k < 0) {
        cap = -k;
        buf = realloc(buf, (size_t)cap * sizeof(llama_token));
        k = llama_tokenize(h->vocab, text, n, buf, cap, false, true);
    }
    for (int32_t i = 0; i < k; i++) ivec_push(out, buf[i]);
    free(buf);
    return k < 0 ? -1 : 0;
}

/* One message rendered by the chat template (malloc'd), optionally opening the assistant turn. */
static char *render(handle_t *h, const char *role, const char *content, bool open_assistant) {
    struct llama_chat_message message = {role, content};
    const char *tmpl = h->chat_template ? h->chat_template : "chatml";
    int32_t cap = (int32_t)(2 * strlen(content) + 256);
    char *buf = malloc((size_t)cap);
    int32_t n = llama_chat_apply_template(tmpl, &message, 1, open_assistant, buf, cap);
    if (n >= cap) {
        buf = realloc(buf, (size_t)n + 1);
        n = llama_chat_apply_template(tmpl, &message, 1, open_assistant, buf, n + 1);
    }
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* The system section ends before its final newline, and every turn starts with it, so the
   end-of-turn token the model samples is the last token of its turn in the cache. */
static void rebuild_system(handle_t *h) {
    h->sys.n = 0;
    if (h->system_prompt && *h->system_prompt) {
        char *content = system_with_tools(h->system_prompt, h->tools);
        char *text = h->prefix ? strdup(content) : render(h, "system", content, false);
        size_t n = text ? strlen(text) : 0;
        if (n && text[n - 1] == '\n') text[n - 1] = 0;
        if (text) tokenize(h, &h->sys, text);
        free(text), free(content);
    }
    /* As in the vendor runtime, a new system section leaves the KV cache as it is: the
       caller clears it (a keep_history=1 run would otherwise append to the old context). */
    h->sys_in_kv = 0;
}

int rkllm_init(LLMHandle *out, RKLLMParam *param, RKLLMInitCallback callback) {
    log_version("EMULATOR (llama.cpp)");
    if (!out || !param || !param->model_path) return -1;
    *out = NULL;
    handle_base probe = {0}; /* check the callback before the slow model load */
    if (set_callback(&probe, callback) != 0) return -1;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params model_params = llama_model_default_params();
    model_params.progress_callback = no_progress;
    struct llama_model *model = llama_model_load_from_file(param->model_path, model_params);
    if (!model) {
        logmsg('E', "failed to load model %s", param->model_path);
        return -1;
    }
    if (param->max_context_len <= 0 || param->max_context_len > llama_model_n_ctx_train(model)) {
        logmsg('E', "max_context_len %d is out of range: the model supports at most %d", param->max_context_len,
               llama_model_n_ctx_train(model));
        llama_model_free(model);
        return -1;
    }
    struct llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = (uint32_t)param->max_context_len;
    ctx_params.n_batch = 512;
    ctx_params.no_perf = true;
    /* As many threads as the CPU mask asks for (or RKLLM_EMU_THREADS), never more than this machine has. */
    int threads = param->extend_param.enabled_cpus_num > 0 ? param->extend_param.enabled_cpus_num : 4;
    threads = (int)env_double("RKLLM_EMU_THREADS", threads);
    if (threads < 1) threads = 1;
    int online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && threads > online) threads = online;
    ctx_params.n_threads = ctx_params.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, ctx_params);
    if (!ctx) {
        logmsg('E', "failed to create a context of %d tokens", param->max_context_len);
        llama_model_free(model);
        return -1;
    }
    handle_t *h = calloc(1, sizeof *h);
    pthread_mutex_init(&h->base.mu, NULL);
    h->model = model, h->ctx = ctx, h->vocab = llama_model_get_vocab(model);
    h->chat_template = llama_model_chat_template(model, NULL);
    h->param = *param;
    h->param.model_path = strdup(param->model_path);
    set_callback(&h->base, callback);
    rebuild_system(h);
    *out = h;
    return 0;
}

static bool abort_requested(void *data) { return atomic_load(&((handle_t *)data)->base.abort_requested) != 0; }

int rkllm_destroy(LLMHandle handle) {
    handle_t *h = handle;
    if (!h) return -1;
    atomic_store(&h->base.abort_requested, 1);
    pthread_mutex_lock(&h->base.mu); /* waits for a run to end */
    pthread_mutex_unlock(&h->base.mu);
    llama_free(h->ctx);
    llama_model_free(h->model);
    free((char *)h->param.model_path), free(h->prefix), free(h->postfix);
    free(h->system_prompt), free(h->tools), free(h->tool_response);
    free(h->sys.v), free(h->base.kv.v);
    pthread_mutex_destroy(&h->base.mu);
    free(h);
    return 0;
}

int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter *adapter) {
    (void)handle, (void)adapter;
    logmsg('E', "rkllm_load_lora: not supported by the llama.cpp engine");
    return -1;
}

int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam *p) {
    (void)handle, (void)p;
    return -1;
}

int rkllm_set_chat_template(LLMHandle handle, const char *system_prompt, const char *prefix, const char *postfix) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_set_chat_template")) return -1;
    pthread_mutex_lock(&h->base.mu);
    free(h->prefix), free(h->postfix), free(h->system_prompt), free(h->tools);
    h->prefix = strdup(prefix ? prefix : ""), h->postfix = strdup(postfix ? postfix : "");
    h->system_prompt = xstrdup(system_prompt), h->tools = NULL;
    rebuild_system(h);
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}

int rkllm_set_function_tools(LLMHandle handle, const char *system_prompt, const char *tools,
                             const char *tool_response_str) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_set_function_tools")) return -1;
    pthread_mutex_lock(&h->base.mu);
    free(h->prefix), free(h->postfix), free(h->system_prompt), free(h->tools), free(h->tool_response);
    h->prefix = h->postfix = NULL;
    h->system_prompt = xstrdup(system_prompt);
    h->tools = tools_or_null(tools);
    h->tool_response = strdup(tool_response_str && *tool_response_str ? tool_response_str : "tool_response");
    rebuild_system(h);
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}

int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int *start_pos, int *end_pos) {
    handle_t *h = handle;
    /* This engine cannot pause, so a range is always refused, as the vendor runtime does. */
    if (!h || busy(&h->base, "rkllm_clear_kv_cache") || range_clear_refused(&h->base, start_pos, end_pos, 0))
        return -1;
    pthread_mutex_lock(&h->base.mu);
    size_t keep = keep_system_prompt && h->sys_in_kv ? h->sys.n : 0;
    llama_memory_seq_rm(llama_get_memory(h->ctx), 0, (llama_pos)keep, -1);
    h->base.kv.n = keep;
    h->sys_in_kv = h->sys_in_kv && keep >= h->sys.n;
    h->prompt_cache_len = 0;
    pthread_mutex_unlock(&h->base.mu);
    return 0;
}


/* A prompt-cache file: magic, runtime version, model identity, token count, tokens, llama.cpp's
   sequence state (size, bytes) and a checksum of tokens and state. Checked whole before llama.cpp
   sees it: its own state reader aborts the process on a truncated file. */
#define CACHE_MAGIC "RKEMULC1"

static uint64_t model_identity(const handle_t *h) {
    char desc[256];
    llama_model_desc(h->model, desc, sizeof desc);
    uint64_t sizes[2] = {llama_model_size(h->model), llama_model_n_params(h->model)};
    return fnv1a(sizes, sizeof sizes, fnv1a(desc, strlen(desc), FNV_SEED));
}

static int save_prompt_cache(handle_t *h, const char *path, const ivec *tokens) {
    uint64_t state_size = llama_state_seq_get_size(h->ctx, 0);
    unsigned char *state = malloc(state_size ? state_size : 1);
    int status = -1;
    if (state && llama_state_seq_get_data(h->ctx, state, state_size, 0) == state_size) {
        char version[16] = {0};
        strncpy(version, RKLLM_EMU_VERSION, sizeof version - 1);
        uint64_t id = model_identity(h), check = fnv1a(tokens->v, tokens->n * sizeof(int32_t), FNV_SEED);
        uint32_t n = (uint32_t)tokens->n;
        check = fnv1a(state, state_size, check);
        const void *parts[] = {CACHE_MAGIC, version, &id, &n, tokens->v, &state_size, state, &check};
        size_t sizes[] = {8, sizeof version, sizeof id, sizeof n, n * sizeof(int32_t), sizeof state_size,
                          state_size, sizeof check};
        status = write_file_atomic(path, parts, sizes, 8, 0);
    }
    free(state);
    if (status != 0) logmsg('E', "failed to write prompt cache %s", path);
    else if (log_level() >= 1) logmsg('I', "saved prompt cache %s (%zu tokens)", path, tokens->n);
    return status;
}

/* Reads `n` bytes at *at into out; 0 when the data ends first. */
static int take(const unsigned char *data, size_t size, size_t *at, void *out, size_t n) {
    if (size - *at < n) return 0;
    memcpy(out, data + *at, n);
    *at += n;
    return 1;
}

int rkllm_load_prompt_cache(LLMHandle handle, const char *path) {
    handle_t *h = handle;
    if (!h || !path || busy(&h->base, "rkllm_load_prompt_cache")) return -1;
    size_t size = 0, at = 0;
    unsigned char *data = read_file(path, &size);
    if (!data) {
        logmsg('E', "failed to open prompt cache %s", path);
        return -1;
    }
    char magic[8], version[16];
    uint64_t id = 0, state_size = 0, check = 0;
    uint32_t n = 0;
    int ok = take(data, size, &at, magic, 8) && memcmp(magic, CACHE_MAGIC, 8) == 0 &&
             take(data, size, &at, version, sizeof version) && take(data, size, &at, &id, sizeof id) &&
             take(data, size, &at, &n, sizeof n) && n <= (size_t)h->param.max_context_len &&
             size - at >= n * sizeof(int32_t);
    const int32_t *tokens = ok ? (const int32_t *)(data + at) : NULL;
    at += ok ? n * sizeof(int32_t) : 0;
    ok = ok && take(data, size, &at, &state_size, sizeof state_size) && size - at == state_size + sizeof check;
    const unsigned char *state = ok ? data + at : NULL;
    if (ok) memcpy(&check, state + state_size, sizeof check);
    ok = ok && check == fnv1a(state, state_size, fnv1a(tokens, n * sizeof(int32_t), FNV_SEED));
    version[sizeof version - 1] = 0;
    if (!ok) {
        logmsg('E', "prompt cache %s is corrupt", path);
        free(data);
        return -1;
    }
    if (id != model_identity(h) || strcmp(version, RKLLM_EMU_VERSION) != 0) {
        logmsg('E', "prompt cache %s was made by another model or runtime version", path);
        free(data);
        return -1;
    }
    pthread_mutex_lock(&h->base.mu);
    llama_memory_clear(llama_get_memory(h->ctx), true);
    int status = -1;
    if (llama_state_seq_set_data(h->ctx, state, state_size, 0) == state_size) {
        ivec_copy(&h->base.kv, tokens, n);
        h->prompt_cache_len = n;
        h->sys_in_kv = n >= h->sys.n && memcmp(tokens, h->sys.v, h->sys.n * sizeof(int32_t)) == 0;
        if (log_level() >= 1) logmsg('I', "loaded prompt cache %s (%u tokens)", path, n);
        status = 0;
    } else {
        logmsg('E', "prompt cache %s does not fit this context", path);
        llama_memory_clear(llama_get_memory(h->ctx), true);
        h->base.kv.n = 0, h->sys_in_kv = 0;
    }
    pthread_mutex_unlock(&h->base.mu);
    free(data);
    return status;
}

int rkllm_release_prompt_cache(LLMHandle handle) {
    handle_t *h = handle;
    if (!h || busy(&h->base, "rkllm_release_prompt_cache")) return -1;
    h->prompt_cache_len = 0;
    return 0;
}

static struct llama_sampler *make_sampler(const handle_t *h, const RKLLMInferParam *ip) {
    int top_k = h->param.top_k;
    float top_p = h->param.top_p, temperature = h->param.temperature, repeat = h->param.repeat_penalty;
    float frequency = h->param.frequency_penalty, presence = h->param.presence_penalty;
#if RKLLM_ABI >= 13
    if (ip->sampling_params) {
        const RKLLMSamplingParam *s = ip->sampling_params;
        top_k = s->top_k, top_p = s->top_p, temperature = s->temperature, repeat = s->repeat_penalty;
        frequency = s->frequency_penalty, presence = s->presence_penalty;
    }
#else
    (void)ip;
#endif
    struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    /* Penalties after top-k: searching the whole vocabulary for repeats is slow. */
    llama_sampler_chain_add(chain, llama_sampler_init_top_k(top_k > 0 ? top_k : 40));
    llama_sampler_chain_add(
        chain, llama_sampler_init_penalties(llama_vocab_n_tokens(h->vocab), 64, repeat, frequency, presence));
    if (temperature <= 0 || top_k == 1) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    llama_sampler_chain_add(chain, llama_sampler_init_top_p(top_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist((uint32_t)env_double("RKLLM_EMU_SEED", 42)));
    return chain;
}

/* Decodes tokens [from, target->n) into the cache, in batches; 0 on success. */
static int prefill(handle_t *h, const ivec *target, size_t from) {
    for (size_t i = from; i < target->n; i += 512) {
        int32_t n = (int32_t)(target->n - i < 512 ? target->n - i : 512);
        if (llama_decode(h->ctx, llama_batch_get_one(target->v + i, n)) != 0) return -1;
        for (int32_t k = 0; k < n; k++) ivec_push(&h->base.kv, target->v[i + (size_t)k]);
    }
    return 0;
}

static int fail(handle_t *h, void *userdata, const char *why) {
    RKLLMResult res;
    memset(&res, 0, sizeof res);
    logmsg('E', "%s", why);
    emit_result(&h->base, userdata, &res, RKLLM_RUN_ERROR);
    llama_memory_seq_rm(llama_get_memory(h->ctx), 0, (llama_pos)(h->sys_in_kv ? h->sys.n : 0), -1);
    h->base.kv.n = h->sys_in_kv ? h->sys.n : 0;
    return -1;
}

/* Whether a logits-mode run with keep_history keeps its input in the cache: the vendor documents
   nothing, so RKLLM_EMU_LOGITS_HISTORY chooses, as the scripted engine's model file does with
   logits_history: "keep" (the default: as a generating run) or "drop" (the cache is left as found). */
static int logits_keep_history(void) {
    const char *s = getenv("RKLLM_EMU_LOGITS_HISTORY");
    return !(s && strcmp(s, "drop") == 0);
}

/* The end of a logits-mode run, prefilled: one NORMAL callback with the next-token logits of the
   input's last position (num_tokens 1), then FINISH with the prefill figures. */
static int logits_run(handle_t *h, const RKLLMInferParam *ip, void *userdata, double t0, int prefill_tokens,
                      size_t before_input) {
    RKLLMResult res;
    memset(&res, 0, sizeof res);
    res.logits.logits = llama_get_logits_ith(h->ctx, -1);
    res.logits.vocab_size = llama_vocab_n_tokens(h->vocab);
    res.logits.num_tokens = 1;
    double t_end = now_ms();
    llama_set_abort_callback(h->ctx, NULL, NULL);
    emit_result(&h->base, userdata, &res, RKLLM_RUN_NORMAL);
    memset(&res, 0, sizeof res);
    res.perf.prefill_time_ms = (float)(t_end - t0);
    res.perf.prefill_tokens = prefill_tokens;
    res.perf.memory_usage_mb = peak_memory_mb();
    if (log_level() >= 1)
        logmsg('I', "logits: prefill %d tokens in %.2f ms, peak memory %.1f MB", prefill_tokens,
               res.perf.prefill_time_ms, res.perf.memory_usage_mb);
    emit_result(&h->base, userdata, &res, RKLLM_RUN_FINISH);
    size_t keep = h->base.kv.n;
    if (!ip->keep_history) keep = h->sys_in_kv ? h->sys.n : 0;
    else if (!logits_keep_history()) keep = before_input;
    llama_memory_seq_rm(llama_get_memory(h->ctx), 0, (llama_pos)keep, -1);
    h->base.kv.n = keep;
    return 0;
}

int engine_run_locked(void *handle, RKLLMInput *in, RKLLMInferParam *ip, void *userdata) {
    handle_t *h = handle;
    double t0 = now_ms(), t_first = 0;
    if (ip->mode != RKLLM_INFER_GENERATE && ip->mode != RKLLM_INFER_GET_LOGITS)
        return fail(h, userdata, "the llama.cpp engine has no hidden-layer mode");

    /* The new turn: "\n" + the rendered message (see rebuild_system). */
    ivec fresh = {0};
    if (in->input_type == RKLLM_INPUT_TOKEN) {
        for (size_t i = 0; i < in->token_input.n_tokens; i++) ivec_push(&fresh, in->token_input.input_ids[i]);
    } else if (in->input_type == RKLLM_INPUT_PROMPT && in->prompt_input) {
        int tool = in->role && strcmp(in->role, "tool") == 0;
        char *content = NULL, *turn = NULL;
        str_append(&content, "");
        if (tool) {
            const char *tag = h->tool_response ? h->tool_response : "tool_response";
            str_append(&content, "<"), str_append(&content, tag), str_append(&content, ">\n");
        }
        str_append(&content, in->prompt_input);
        if (tool) {
            const char *tag = h->tool_response ? h->tool_response : "tool_response";
            str_append(&content, "\n</"), str_append(&content, tag), str_append(&content, ">");
        }
        str_append(&turn, "\n");
        if (h->prefix) {
            str_append(&turn, h->prefix), str_append(&turn, content), str_append(&turn, h->postfix);
        } else {
            char *rendered = render(h, "user", content, true);
            str_append(&turn, rendered ? rendered : content);
            free(rendered);
        }
        tokenize(h, &fresh, turn);
        free(content), free(turn);
    } else {
        free(fresh.v);
        return fail(h, userdata, "the llama.cpp engine takes PROMPT and TOKEN inputs only");
    }

    /* What the cache must hold before generating, and how much of it it already has. */
    ivec target = {0};
    size_t reuse;
    /* keep_history=1 appends to what the cache holds; keep_history=0 starts from the system
       section. A loaded prompt cache counts only for a keep_history=0 run, whose input is matched
       against it (the documented prefix detection); a kept conversation does not use it, as
       reported for the vendor runtime (rknn-llm #399). */
    int appended = ip->keep_history && h->base.kv.n > 0 && h->prompt_cache_len == 0;
    if (appended) {
        ivec_copy(&target, h->base.kv.v, h->base.kv.n);
        reuse = h->base.kv.n;
    } else {
        ivec_copy(&target, h->sys.v, h->sys.n);
        reuse = h->sys_in_kv && h->prompt_cache_len == 0 ? h->sys.n : 0;
        if (!ip->keep_history && h->prompt_cache_len > reuse) reuse = h->prompt_cache_len;
    }
    size_t before_input = target.n; /* where the input starts in the cache */
    for (size_t i = 0; i < fresh.n; i++) ivec_push(&target, fresh.v[i]);
    free(fresh.v);
    size_t shared = common_prefix(&h->base.kv, &target);
    if (shared < reuse) reuse = shared;
    if (reuse > 0 && reuse == target.n) reuse--; /* the last token is always evaluated, for its logits */
    size_t limit = (size_t)h->param.max_context_len;
    if (target.n + 8 > limit) {
        free(target.v);
        char why[160];
        snprintf(why, sizeof why, "the prompt (%zu tokens) does not fit in max_context_len %zu", target.n, limit);
        return fail(h, userdata, why);
    }
    llama_memory_seq_rm(llama_get_memory(h->ctx), 0, (llama_pos)reuse, -1);
    h->base.kv.n = reuse;
    h->prompt_cache_len = 0;
    llama_set_abort_callback(h->ctx, abort_requested, h);
    int prefill_tokens = (int)(target.n - reuse);
    if (prefill(h, &target, reuse) != 0) {
        free(target.v);
        if (atomic_load(&h->base.abort_requested)) {
            RKLLMResult res;
            memset(&res, 0, sizeof res);
            emit_result(&h->base, userdata, &res, RKLLM_RUN_FINISH);
            return 0;
        }
        return fail(h, userdata, "llama_decode failed during prefill");
    }
    h->sys_in_kv = h->base.kv.n >= h->sys.n;
    if (ip->prompt_cache_params && ip->prompt_cache_params->save_prompt_cache &&
        ip->prompt_cache_params->prompt_cache_path)
        save_prompt_cache(h, ip->prompt_cache_params->prompt_cache_path, &target);
    free(target.v);
    if (ip->mode == RKLLM_INFER_GET_LOGITS) return logits_run(h, ip, userdata, t0, prefill_tokens, before_input);

    int max_new = h->param.max_new_tokens;
#if RKLLM_ABI >= 13
    if (ip->max_new_tokens > 0) max_new = ip->max_new_tokens;
#endif
    struct llama_sampler *sampler = make_sampler(h, ip);
    int generated = 0, need = 0;
    char piece[PIECE_MAX + 1];
    while (!atomic_load(&h->base.abort_requested) && !(max_new > 0 && generated >= max_new)) {
        llama_token token = llama_sampler_sample(sampler, h->ctx, -1);
        int end = llama_vocab_is_eog(h->vocab, token);
        if (h->base.kv.n + 1 >= limit) break; /* context full: the answer ends here */
        if (llama_decode(h->ctx, llama_batch_get_one(&token, 1)) != 0) break;
        ivec_push(&h->base.kv, token);
        generated++;
        if (end) break;
        int32_t n = llama_token_to_piece(h->vocab, token, piece, PIECE_MAX, 0, !h->param.skip_special_token);
        if (n <= 0) continue;
        piece[n] = 0;
        need = utf8_missing(need, (const unsigned char *)piece, (size_t)n);
        if (t_first == 0) t_first = now_ms();
        RKLLMResult res;
        memset(&res, 0, sizeof res);
        res.text = piece;
        res.token_id = token;
        emit_result(&h->base, userdata, &res, need > 0 ? RKLLM_RUN_WAITING : RKLLM_RUN_NORMAL);
    }
    llama_sampler_free(sampler);
    llama_set_abort_callback(h->ctx, NULL, NULL);

    double t_end = now_ms();
    if (t_first == 0) t_first = t_end;
    RKLLMResult res;
    memset(&res, 0, sizeof res);
    res.perf.prefill_time_ms = (float)(t_first - t0);
    res.perf.prefill_tokens = prefill_tokens;
    res.perf.generate_time_ms = (float)(t_end - t_first);
    res.perf.generate_tokens = generated;
    res.perf.memory_usage_mb = peak_memory_mb();
    if (log_level() >= 1)
        logmsg('I', "prefill %d tokens in %.2f ms, generate %d tokens in %.2f ms, peak memory %.1f MB",
               prefill_tokens, res.perf.prefill_time_ms, generated, res.perf.generate_time_ms,
               res.perf.memory_usage_mb);
    emit_result(&h->base, userdata, &res, RKLLM_RUN_FINISH);
    if (!ip->keep_history) {
        size_t keep = h->sys_in_kv ? h->sys.n : 0;
        llama_memory_seq_rm(llama_get_memory(h->ctx), 0, (llama_pos)keep, -1);
        h->base.kv.n = keep;
    }
    return 0;
}
