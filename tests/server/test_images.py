"""Images through the official clients: Ollama's ``images``, OpenAI's ``image_url`` parts, remote URLs."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import ollama
import openai
import pytest

from tests.server.conftest import MODEL, RunningServer, StartServer

SNAPSHOT = b"\xff\xd8\xff\xe0" + b"\0" * 100_000  # 100 kB: more than the small request limit below


class _Snapshots(BaseHTTPRequestHandler):
    """Serves /snapshot.jpg; anything else is 404."""

    def do_GET(self) -> None:
        if self.path != "/snapshot.jpg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.wfile.write(SNAPSHOT)

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
        ("/snapshot.jpg", "the image is larger than 65536 bytes"),
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
    encoded = base64.b64encode(SNAPSHOT).decode()
    with pytest.raises(ollama.ResponseError):
        server.ollama().chat(MODEL, messages=[{"role": "assistant", "content": "x", "images": [encoded]}])
    reply = server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "Hello! How can I help?"
