"""Tests of rkllm_runtime and the Home Assistant integration."""
