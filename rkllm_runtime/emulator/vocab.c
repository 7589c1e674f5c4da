/*
 * Token counts as a Qwen model on the NPU has them: the Qwen2.5 byte-level BPE vocabulary
 * (llama.cpp's ggml-vocab-qwen2.gguf, RKLLM_EMU_VOCAB, set by build.py), loaded without
 * weights through the libllama the llama engine also links.
 */
#include "vocab.h"

#include <llama.h>
#include <stdlib.h>
#include <string.h>

#ifndef RKLLM_EMU_VOCAB
#error "RKLLM_EMU_VOCAB must name ggml-vocab-qwen2.gguf (build.py sets it)"
#endif

/* Qwen2.5/Qwen3 added tokens the Qwen2 vocabulary file lacks; <|im_start|> and <|im_end|> are in it. */
static const struct {
    const char *text;
    int32_t id;
} added_tokens[] = {{"<tool_call>", 151657}, {"</tool_call>", 151658}, {"<think>", 151667}, {"</think>", 151668}};
#define N_ADDED (sizeof added_tokens / sizeof added_tokens[0])

static const struct llama_vocab *vocab;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void quiet_log(enum ggml_log_level level, const char *text, void *data) {
    (void)data;
    if (level == GGML_LOG_LEVEL_ERROR) logmsg('E', "%s", text);
}

static void load_once(void) {
    llama_log_set(quiet_log, NULL);
    struct llama_model_params params = llama_model_default_params();
    params.vocab_only = true;
    struct llama_model *model = llama_model_load_from_file(RKLLM_EMU_VOCAB, params);
    if (model) vocab = llama_model_get_vocab(model); /* kept for the life of the process */
}

int vocab_load(void) {
    pthread_once(&once, load_once);
    if (!vocab) logmsg('E', "cannot read the tokenizer vocabulary %s: run scripts/setup", RKLLM_EMU_VOCAB);
    return vocab ? 0 : -1;
}

/* The ordinary text text[0, n) through the BPE vocabulary. */
static void bpe(const char *text, size_t n, ivec *ids, ivec *lens) {
    if (n == 0) return;
    int32_t cap = (int32_t)n + 8;
    llama_token *buf = malloc((size_t)cap * sizeof *buf);
    int32_t k = llama_tokenize(vocab, text, (int32_t)n, buf, cap, false, true);
    if (k < 0) {
        cap = -k;
        buf = realloc(buf, (size_t)cap * sizeof *buf);
        k = llama_tokenize(vocab, text, (int32_t)n, buf, cap, false, true);
    }
    size_t used = 0;
    char piece[256];
    for (int32_t i = 0; i < k; i++) {
        ivec_push(ids, buf[i]);
        int32_t len = llama_token_to_piece(vocab, buf[i], piece, sizeof piece, 0, true);
        if (len < 0 || i == k - 1) len = (int32_t)(n - used); /* the last piece takes what is left */
        used += (size_t)len;
        if (lens) ivec_push(lens, len);
    }
    free(buf);
}

/* Length of the well-formed UTF-8 character at s[0, n), 0 when it is not one. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    size_t k = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (k == 0 || k > n || (k == 2 && s[0] < 0xC2)) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return k;
}

void vocab_tokenize(const char *text, ivec *ids, ivec *lens) {
    if (vocab_load() != 0) return;
    size_t n = strlen(text), start = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = utf8_char((const unsigned char *)text + i, n - i);
        if (k == 0) { /* llama.cpp refuses malformed UTF-8: a byte of it is one byte token */
            bpe(text + start, i - start, ids, lens);
            ivec_push(ids, (unsigned char)text[i]);
            if (lens) ivec_push(lens, 1);
            start = i + 1;
            continue;
        }
        i += k - 1;
        if (text[i] != '<') continue;
        for (size_t t = 0; t < N_ADDED; t++) {
            size_t k = strlen(added_tokens[t].text);
            if (strncmp(text + i, added_tokens[t].text, k) != 0) continue;
            bpe(text + start, i - start, ids, lens);
            ivec_push(ids, added_tokens[t].id);
            if (lens) ivec_push(lens, (int32_t)k);
            start = i + k;
            i = start - 1;
            break;
        }
    }
    bpe(text + start, n - start, ids, lens);
}
