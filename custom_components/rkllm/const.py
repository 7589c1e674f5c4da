"""Constants for the RKLLM integration."""

import logging
from typing import Final

DOMAIN: Final = "rkllm"
LOGGER = logging.getLogger(__package__)

# Parent entry: the runtime library and one model on the NPU.
CONF_LIBRARY_PATH: Final = "library_path"
CONF_MODEL_PATH: Final = "model_path"
CONF_MAX_CONTEXT_LEN: Final = "max_context_len"
CONF_ADVANCED: Final = "advanced"
CONF_PLATFORM: Final = "platform"
CONF_N_KEEP: Final = "n_keep"
CONF_EMBED_FLASH: Final = "embed_flash"
CONF_BASE_DOMAIN_ID: Final = "base_domain_id"
CONF_RUNTIME_RELEASE: Final = "runtime_release"
CONF_KV_STRATEGY: Final = "kv_strategy"

# Subentries: conversation agents and AI tasks.
CONF_MAX_NEW_TOKENS: Final = "max_new_tokens"
CONF_TEMPERATURE: Final = "temperature"
CONF_TOP_K: Final = "top_k"
CONF_TOP_P: Final = "top_p"
CONF_REPEAT_PENALTY: Final = "repeat_penalty"
CONF_THINK: Final = "think"
CONF_MAX_HISTORY: Final = "max_history"
CONF_RECOMMENDED: Final = "recommended"

SUBENTRY_CONVERSATION: Final = "conversation"
SUBENTRY_AI_TASK: Final = "ai_task_data"

DEFAULT_MAX_CONTEXT_LEN: Final = 4096
DEFAULT_MAX_NEW_TOKENS: Final = 256
DEFAULT_TEMPERATURE: Final = 0.7
DEFAULT_TOP_K: Final = 20
DEFAULT_TOP_P: Final = 0.8
DEFAULT_REPEAT_PENALTY: Final = 1.05
DEFAULT_MAX_HISTORY: Final = 10
DEFAULT_PLATFORM: Final = "rk3588"
# keep_history=0 runs only, as the vendor's own examples: see the README's "KV cache" section.
DEFAULT_KV_STRATEGY: Final = "conservative"
DEFAULT_CONVERSATION_NAME: Final = "RKLLM conversation"
DEFAULT_AI_TASK_NAME: Final = "RKLLM AI task"

# NPU platform -> the big CPU cores that feed it (CPU4-CPU7 on both SoCs).
PLATFORM_CPU_MASKS: Final = {"rk3588": 0xF0, "rk3576": 0xF0, "all_cores": 0xFF}

# Requests queued behind the running one before new ones are told the model is busy.
MAX_WAITING_REQUESTS: Final = 2
# Rounds of tool calls in one conversation turn.
MAX_TOOL_ITERATIONS: Final = 10
# Total size of the prompt-cache files under the configuration directory.
PROMPT_CACHE_MAX_BYTES: Final = 1024 * 2**20
