"""The engine across HTTP: its types as JSON (:mod:`.wire`), a model on an rkllm-server (:mod:`.client`)."""
