"""rkllm-server: the chat engine in a process of its own, speaking the Ollama and OpenAI APIs.

Needs the ``server`` extra (aiohttp, zeroconf). Start it with ``rkllm-server --help``.
"""
