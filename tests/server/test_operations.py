"""Running the server: keys, limits, queueing, concurrency, disconnects, crashes, SIGTERM, TLS, metrics."""

from __future__ import annotations

import datetime
import json
import signal
import ssl
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from rkllm_runtime.emulator import EmulatedModel
from tests.server.conftest import MODEL, SYSTEM, RunningServer, StartServer, generated_counts, prefill_counts

HI = [{"role": "user", "content": "hi"}]
SLOW = {"RKLLM_EMU_DECODE_TPS": "40"}
STORY_TOKENS = 300  # "there was a light." is 5 tokens, 100 times


def test_api_key_is_required_when_set(start_server: StartServer, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    server = start_server("--api-key-file", str(key_file), api_key="s3cret-key")
    assert server.openai().chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    assert server.ollama().chat(MODEL, messages=HI).message.content
    with pytest.raises(openai.AuthenticationError, match="API key"):
        server.openai(api_key="wrong").models.list()
    with pytest.raises(ollama.ResponseError, match="API key") as raised:
        server.ollama(headers={}).list()
    assert raised.value.status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}  # probes need no key


def test_binding_beyond_loopback_needs_a_key(library: Path, model_file: Path) -> None:
    command = [sys.executable, "-m", "rkllm_runtime.server", "--library", str(library),
               "--model", f"m={model_file}", "--host", "0.0.0.0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={"PATH": "/usr/bin"})
    assert done.returncode == 2
    assert "set an API key" in done.stderr


def test_load_parameters_reach_each_models_runtime(start_server: StartServer, model_file: Path) -> None:
    server = start_server(
        "--context-length", "2048", "--n-keep", "64", "--enabled-cpus-mask", "0xF0",
        "--embed-flash", "--base-domain-id", "2",
        models={MODEL: model_file, "second": model_file},
    )  # fmt: skip
    models = httpx.get(f"{server.url}/rkllm/status").json()["models"]
    assert [models[name]["params"]["base_domain_id"] for name in (MODEL, "second")] == [2, 3]
    for status in models.values():
        assert status["state"] == "ready"
        params = status["params"]
        assert (params["max_context_len"], params["n_keep"]) == (2048, 64)
        assert (params["enabled_cpus_mask"], params["embed_flash"]) == (0xF0, True)


def test_request_size_limit(start_server: StartServer) -> None:
    server = start_server("--max-request-bytes", "4096")
    big = [{"role": "user", "content": "x" * 10_000}]
    with pytest.raises(ollama.ResponseError, match="too large") as raised:
        server.ollama().chat(MODEL, messages=big)
    assert raised.value.status_code == 413
    with pytest.raises(openai.APIStatusError, match="too large") as error:
        server.openai().chat.completions.create(model=MODEL, messages=big)  # type: ignore[arg-type]
    assert error.value.status_code == 413


def test_full_queue_is_429_and_a_model_that_failed_is_503(
    start_server: StartServer, model_file: Path, tmp_path: Path
) -> None:
    broken = EmulatedModel(init_fail=True).write(tmp_path / "broken.rkllm")
    server = start_server("--max-waiting", "0", env=SLOW, models={MODEL: model_file, "broken": broken})
    stream = server.ollama().chat(
        MODEL, messages=[{"role": "user", "content": "tell me a story"}], stream=True
    )
    next(stream)  # the story is being told
    with pytest.raises(openai.RateLimitError, match="busy"):
        server.openai().chat.completions.create(model=MODEL, messages=HI)  # type: ignore[arg-type]
    with pytest.raises(ollama.ResponseError, match="not available") as raised:
        server.ollama().chat("broken", messages=HI)
    assert raised.value.status_code == 503
    assert server.http("GET", "/health").status_code == 503  # not every model is ready
    stream.close()  # type: ignore[attr-defined]


def ask(server: RunningServer, conversation: list[dict[str, str]], text: str) -> str:
    """One turn of a stateless client: the whole conversation goes up every time."""
    conversation.append({"role": "user", "content": text})
    reply = server.ollama().chat(MODEL, messages=conversation).message.content
    conversation.append({"role": "assistant", "content": reply})
    return reply


def test_default_strategy_resends_the_history_with_the_system_prompt_cached(
    start_server: StartServer,
) -> None:
    """Conservative (keep_history=0): a follow-up quotes its earlier turns, the system prompt stays cached."""
    server = start_server()
    conversation = [{"role": "system", "content": SYSTEM}]
    ask(server, conversation, "hello")
    ask(server, conversation, "hello again")
    ask(server, [{"role": "system", "content": SYSTEM}], "hi")
    cold, follow_up, new = prefill_counts(server.log())
    assert cold > 350
    assert 20 < follow_up < 60  # the new turn and the quoted earlier one
    assert new < 20


def test_concurrent_conversations_never_cross(start_server: StartServer) -> None:
    """Three satellites talk at once; the model echoes what it was given, so any mix-up would show."""
    server = start_server()
    rooms = ("kitchen", "bedroom", "garage")

    def talk(room: str) -> list[str]:
        conversation = [{"role": "system", "content": SYSTEM}]
        return [ask(server, conversation, f"echo {room} turn {turn}") for turn in range(3)]

    with ThreadPoolExecutor(len(rooms)) as pool:
        replies = dict(zip(rooms, pool.map(talk, rooms), strict=True))
    for room, answers in replies.items():
        for turn, answer in enumerate(answers):
            assert f"echo {room} turn {turn}" in answer
            assert not any(other in answer for other in rooms if other != room)
    assert len(generated_counts(server.log())) == 9


def test_client_gone_mid_stream_aborts_the_run(start_server: StartServer) -> None:
    server = start_server(env=SLOW)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "tell me a story"}]}
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["message"]["content"] == "Once"
    # Gone after one token: the next request is answered in full, and the story was cut short.
    assert server.ollama().chat(MODEL, messages=HI).message.content == "Hello! How can I help?"
    story, hello = generated_counts(server.log())
    assert story < STORY_TOKENS
    assert hello > 0


def test_crash_kills_only_the_server_and_the_restart_is_warm(
    start_server: StartServer, tmp_path: Path
) -> None:
    caches = ("--prompt-cache-dir", str(tmp_path / "caches"))
    server = start_server(*caches)
    with_system = [{"role": "system", "content": SYSTEM}, *HI]
    cold = server.ollama().chat(MODEL, messages=with_system)
    assert cold.prompt_eval_count is not None
    assert cold.prompt_eval_count > 350
    with pytest.raises((httpx.TransportError, ollama.ResponseError)):
        server.ollama().chat(
            MODEL, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "crash now"}]
        )
    assert server.process.wait(30) == -signal.SIGSEGV
    # What systemd does (Restart=on-failure): start it again, with the same prompt-cache directory.
    restarted = start_server(*caches)
    warm = restarted.ollama().chat(
        MODEL, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello"}]
    )
    assert warm.message.content == "Hello! How can I help?"
    assert warm.prompt_eval_count is not None
    assert warm.prompt_eval_count < 20
    assert "loaded prompt cache" in restarted.log()


def test_sigterm_aborts_the_run_and_keeps_the_prompt_cache(start_server: StartServer, tmp_path: Path) -> None:
    caches = ("--prompt-cache-dir", str(tmp_path / "caches"))
    server = start_server(*caches, env=SLOW)
    story = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "tell me a story"}]
    stream = server.ollama().chat(MODEL, messages=story, stream=True)
    assert next(stream).message.content == "Once"
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.extend(_drain(stream)))
    reader.start()
    assert server.stop(signal.SIGTERM) == 0
    reader.join(30)
    assert generated_counts(server.log())[0] < STORY_TOKENS  # aborted, not finished
    assert len(list((tmp_path / "caches" / MODEL).glob("*.json"))) == 1  # the prompt cache was recorded
    restarted = start_server(*caches)
    warm = restarted.ollama().chat(MODEL, messages=[{"role": "system", "content": SYSTEM}, *HI])
    assert warm.prompt_eval_count is not None
    assert warm.prompt_eval_count < 20


def _drain(stream: object) -> list[object]:
    try:
        return list(stream)  # type: ignore[call-overload]
    except (httpx.TransportError, ollama.ResponseError) as err:
        return [err]


def test_metrics_and_health(start_server: StartServer) -> None:
    server = start_server()
    client = server.ollama()
    conversation = [{"role": "system", "content": SYSTEM}]
    ask(server, conversation, "hello")
    ask(server, conversation, "hello again")
    with pytest.raises(ollama.ResponseError):
        client.chat("nope", messages=HI)
    text = server.http("GET", "/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    model = f'model="{MODEL}"'
    assert samples[f"rkllm_kv_cache_hits_total{{{model}}}"] == 1
    assert samples[f"rkllm_kv_cache_misses_total{{{model}}}"] == 1
    assert samples[f'rkllm_responses_total{{{model},api="ollama",status="200"}}'] == 2
    assert samples[f"rkllm_time_to_first_token_seconds_count{{{model}}}"] == 2
    assert samples[f'rkllm_model_state{{{model},state="ready"}}'] == 1
    assert samples[f"rkllm_generated_tokens_total{{{model}}}"] == sum(generated_counts(server.log()))
    assert samples[f"rkllm_prefilled_tokens_total{{{model}}}"] == sum(prefill_counts(server.log()))
    assert server.http("GET", "/health").json() == {"status": "ok"}
    status = server.http("GET", "/rkllm/status").json()["models"][MODEL]
    assert (status["state"], status["engine_state"], status["requests"]) == ("ready", "ready", 2)
    assert (status["cache_hits"], status["cache_misses"]) == (1, 1)
    assert status["last"]["cache_hit"]
    assert status["last"]["perf"]["generate_tokens"] == generated_counts(server.log())[-1]


def test_tls(start_server: StartServer, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_server("--tls-cert", str(cert), "--tls-key", str(key))
    assert server.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=cert)
    client = server.openai(http_client=httpx.Client(verify=trusted))
    assert client.chat.completions.create(model=MODEL, messages=HI).choices[0].message.content  # type: ignore[arg-type]
    with pytest.raises(httpx.TransportError):  # no plain HTTP beside TLS
        httpx.get(server.url.replace("https://", "http://") + "/health")
    assert server.ollama(verify=trusted).list().models


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
