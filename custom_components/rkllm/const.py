"""Constants for the RKLLM integration."""

import logging
from typing import Final

DOMAIN: Final = "rkllm"
LOGGER = logging.getLogger(__package__)

# Parent entry: where the model runs, then its library and file, or its server.
CONF_MODE: Final = "mode"
MODE_IN_PROCESS: Final = "in_process"
MODE_CHILD: Final = "child"
MODE_SERVER: Final = "server"
MODES: Final = (MODE_IN_PROCESS, MODE_CHILD, MODE_SERVER)
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
# Subentry options named as the fields of rkllm_runtime.Sampling; one left out keeps the runtime's value.
SAMPLING_OPTIONS: Final = (CONF_TEMPERATURE, CONF_TOP_K, CONF_TOP_P, CONF_REPEAT_PENALTY)
# What a turn that offers tools samples with, for each setting the subentry leaves unset: greedy, so the
# model answers with the call instead of describing it (bench/accuracy.py, see the README's benchmarks).
TOOL_TURN_SAMPLING: Final = {CONF_TOP_K: 1}
CONF_THINK: Final = "think"
CONF_MAX_HISTORY: Final = "max_history"
CONF_RECOMMENDED: Final = "recommended"
CONF_ACTION_SPEECH: Final = "action_speech"

SUBENTRY_CONVERSATION: Final = "conversation"
SUBENTRY_AI_TASK: Final = "ai_task_data"

DEFAULT_MAX_CONTEXT_LEN: Final = 4096
DEFAULT_MAX_NEW_TOKENS: Final = 256
DEFAULT_MAX_HISTORY: Final = 10
# A done action is confirmed in Home Assistant's own words, without a second run of the model.
DEFAULT_ACTION_SPEECH: Final = True
DEFAULT_PLATFORM: Final = "rk3588"
# keep_history=0 runs only, as the vendor's own examples: see the README's "KV cache" section.
DEFAULT_KV_STRATEGY: Final = "conservative"
DEFAULT_CONVERSATION_NAME: Final = "RKLLM conversation"
DEFAULT_AI_TASK_NAME: Final = "RKLLM AI task"

# NPU platform -> the big CPU cores that feed it (CPU4-CPU7 on both SoCs).
PLATFORM_CPU_MASKS: Final = {"rk3588": 0xF0, "rk3576": 0xF0, "all_cores": 0xFF}

# Rounds of tool calls in one conversation turn.
MAX_TOOL_ITERATIONS: Final = 10
# Total size of the prompt-cache files under the configuration directory.
PROMPT_CACHE_MAX_BYTES: Final = 1024 * 2**20

# Child process: how long it may take to load the model, and restarts after a crash.
CHILD_START_TIMEOUT_S: Final = 300.0
RESTART_BACKOFF_S: Final = (1.0, 2.0, 5.0, 15.0, 60.0)
CRASHES_FOR_ISSUE: Final = 3
CRASH_WINDOW_S: Final = 600.0
# A restarted child that runs this long without crashing clears the crash repair.
HEALTHY_AFTER_S: Final = 60.0
# A server is asked for its status this often; once it is away, after these pauses (the last
# repeats), so that its entities come back within seconds of it. A server that is away is
# asked briefly (rkllm_runtime.remote.client.AWAY_STATUS_TIMEOUT_S), so this costs it little.
STATUS_INTERVAL_S: Final = 30.0
RECONNECT_S: Final = (1.0, 2.0, 5.0)
