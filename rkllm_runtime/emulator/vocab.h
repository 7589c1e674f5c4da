/* The scripted engine's tokenizer: the Qwen2.5 BPE vocabulary, through llama.cpp. */
#ifndef RKLLM_EMULATOR_VOCAB_H
#define RKLLM_EMULATOR_VOCAB_H

#include "common.h"

/* Loads the vocabulary once per process; 0 when it is usable (else logs why). */
int vocab_load(void);
/* Appends the token ids of `text` to `ids` and, when `lens` is not NULL, the byte length of each
   token's piece (the pieces join up to `text`). Chat-template tags are one token each. */
void vocab_tokenize(const char *text, ivec *ids, ivec *lens);

#endif
