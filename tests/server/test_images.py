"""Images through the official clients: Ollama's ``images``, OpenAI's ``image_url`` parts, remote URLs."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from tests.images import BLUE, RED, write_encoder
from tests.server.conftest import MODEL, RunningServer, StartServer, launch

BIG = b"\xff\xd8\xff\xe0" + b"\0" * 100_000  # 100 kB: more than the small request limit below
VISION = "qwen3-vl:2b"
TEXT = "qwen3:0.6b"
RULES = (
    Rule(image="red", reply="A red car is in the driveway."),
    Rule(image="blue", reply="The door is {image}."),
    Rule(reply="Hello! How can I help?"),
)


class _Snapshots(BaseHTTPRequestHandler):
    """Serves /snapshot.jpg (a red snapshot) and /big.jpg; anything else is 404."""

    def do_GET(self) -> None:
        body = {"/snapshot.jpg": RED, "/big.jpg": BIG}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def camera() -> Iterator[str]:
    """A web server holding a snapshot; its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Snapshots)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _asking(url: str) -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": "is there a parcel?"}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def test_a_remote_image_url_is_refused_in_openais_shape(server: RunningServer, camera: str) -> None:
    with pytest.raises(openai.BadRequestError, match="remote image URLs are refused") as raised:
        server.openai().chat.completions.create(model=MODEL, messages=_asking(f"{camera}/snapshot.jpg"))
    error = raised.value.response.json()["error"]
    assert error["message"].startswith('"messages[0].content[1].image_url.url"')
    assert "--allow-image-urls" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing.jpg", "fetching the image answered HTTP 404"),
        ("/big.jpg", "the image is larger than 65536 bytes"),
    ],
    ids=["not-found", "too-large"],
)
def test_an_allowed_remote_image_is_fetched_within_the_size_limit(
    start_server: StartServer, camera: str, path: str, message: str
) -> None:
    running = start_server("--allow-image-urls", "--max-request-bytes", "65536")
    with pytest.raises(openai.BadRequestError, match=message) as raised:
        running.openai().chat.completions.create(model=MODEL, messages=_asking(camera + path))
    assert raised.value.response.json()["error"]["message"].startswith(
        '"messages[0].content[1].image_url.url"'
    )


def test_an_unreachable_remote_image_is_a_400(start_server: StartServer) -> None:
    running = start_server("--allow-image-urls")
    with pytest.raises(openai.BadRequestError, match="the image could not be fetched"):
        running.openai().chat.completions.create(  # port 9 (discard) has no web server
            model=MODEL,
            messages=_asking("http://127.0.0.1:9/snapshot.jpg"),
        )


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_images_that_are_not_base64_are_a_400_naming_them(server: RunningServer, path: str) -> None:
    if path == "/api/chat":
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "what is it?", "images": ["@@"]}]}
        field = "messages[0].images[0]"
    else:
        body, field = {"prompt": "what is it?", "images": ["@@"]}, "images[0]"
    response = server.http("POST", path, json={"model": MODEL, "stream": False, **body})
    assert response.status_code == 400
    assert response.json()["error"].startswith(f'"{field}" is not valid base64')


def test_the_text_path_is_unaffected(server: RunningServer) -> None:
    """A text request after refused images is answered as ever."""
    encoded = base64.b64encode(RED).decode()
    with pytest.raises(ollama.ResponseError):
        server.ollama().chat(MODEL, messages=[{"role": "assistant", "content": "x", "images": [encoded]}])
    reply = server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello! How can I help?"


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a vision model (its encoder given) and a text model, remote images allowed."""
    directory = tmp_path_factory.mktemp("vision")
    vl = EmulatedModel(rules=list(RULES), image_tokens=16).write(directory / "qwen3-vl-2b_w8a8_rk3588.rkllm")
    text = EmulatedModel(rules=list(RULES)).write(directory / "qwen3-0.6b.rkllm")
    encoder = write_encoder(directory)
    running = launch(
        build_cached("1.3"),
        {VISION: vl, TEXT: text},
        ["--encoder", f"{VISION}={encoder}", "--allow-image-urls"],
        directory / "server.log",
        env={"RKLLM_EMU_TIME_SCALE": "0"},
    )
    yield running
    running.stop()
    running.close()


def test_ollama_images_are_answered_about_in_chat_and_generate(vision: RunningServer) -> None:
    client = vision.ollama()
    reply = client.chat(VISION, messages=[{"role": "user", "content": "What is there?", "images": [RED]}])
    assert reply.message.content == "A red car is in the driveway."
    assert client.generate(VISION, "And the door?", images=[BLUE]).response == "The door is blue."
    assert "vision" in (client.show(VISION).capabilities or [])
    assert "vision" not in (client.show(TEXT).capabilities or [])


def test_openai_image_parts_are_answered_about(vision: RunningServer, camera: str) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(BLUE).decode()
    client = vision.openai()
    reply = client.chat.completions.create(model=VISION, messages=_asking(data_url))
    assert reply.choices[0].message.content == "The door is blue."
    fetched = client.chat.completions.create(model=VISION, messages=_asking(f"{camera}/snapshot.jpg"))
    assert fetched.choices[0].message.content == "A red car is in the driveway."
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 16  # the image's tokens are part of the prompt


def test_a_model_without_an_encoder_refuses_images_in_each_apis_shape(vision: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError, match="has no vision encoder") as ollama_error:
        vision.ollama().chat(TEXT, messages=[{"role": "user", "content": "What is there?", "images": [RED]}])
    assert ollama_error.value.status_code == 400
    data_url = "data:image/jpeg;base64," + base64.b64encode(RED).decode()
    with pytest.raises(openai.BadRequestError, match="has no vision encoder") as openai_error:
        vision.openai().chat.completions.create(model=TEXT, messages=_asking(data_url))
    assert openai_error.value.response.json()["error"]["type"] == "invalid_request_error"
    assert vision.ollama().chat(TEXT, messages=[{"role": "user", "content": "hi"}]).message.content


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([b"GIF89a cut short"], "not an image that can be read"),
        ([RED, BLUE], "2 images in one request"),
    ],
    ids=["not-an-image", "too-many"],
)
def test_images_the_model_cannot_take_are_a_400(
    vision: RunningServer, images: list[bytes], message: str
) -> None:
    with pytest.raises(ollama.ResponseError, match=message) as raised:
        vision.ollama().chat(
            VISION, messages=[{"role": "user", "content": "What is there?", "images": images}]
        )
    assert raised.value.status_code == 400
    assert vision.ollama().chat(VISION, messages=[{"role": "user", "content": "hi"}]).message.content == (
        "Hello! How can I help?"
    )


def test_an_encoder_for_another_chip_is_the_servers_fault(start_server: StartServer, tmp_path: Path) -> None:
    vl = EmulatedModel(rules=list(RULES), image_tokens=16).write(tmp_path / "qwen3-vl-2b.rkllm")
    encoder = write_encoder(tmp_path, "qwen3-vl_vision_rk3576.rknn", target_platform="RK3576")
    running = start_server("--encoder", str(encoder), models={VISION: vl}, env={"RKLLM_EMU_TIME_SCALE": "0"})
    with pytest.raises(ollama.ResponseError, match="vision encoder does not fit") as raised:
        running.ollama().chat(
            VISION, messages=[{"role": "user", "content": "What is there?", "images": [RED]}]
        )
    assert raised.value.status_code == 500
