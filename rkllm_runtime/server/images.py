"""Images in requests: Ollama's base64 strings, OpenAI's ``image_url`` parts.

An OpenAI part holds a data URL; a remote ``http(s)`` URL is refused unless the server was
started with ``--allow-image-urls``, and then fetched before the request is parsed, its size
bounded as a request body's and its time as a body's arrival. Whether the bytes are an image
the model can read is the engine's call (its errors say so).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp

from .config import ServerConfig
from .errors import bad_request

REMOTE_SCHEMES = ("http://", "https://")


def decode_base64(value: object, where: str) -> bytes:
    """An image sent as base64 text (400 naming ``where`` when it is not)."""
    if not isinstance(value, str) or not value:
        raise bad_request(f'"{where}" must be a base64-encoded image')
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise bad_request(f'"{where}" is not valid base64: {err}') from err


def from_data_url(url: str, where: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL."""
    head, comma, data = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise bad_request(f'"{where}" must be a base64 data URL (data:image/jpeg;base64,...)')
    return decode_base64(data, where)


def image_url(part: Mapping[str, Any], where: str) -> str:
    """The URL of an ``image_url`` part (its object form, or a bare string as some clients send)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str) or not url:
        raise bad_request(f'"{where}.image_url.url" must be a URL')
    return url


def part_image(part: Mapping[str, Any], where: str, fetched: Mapping[str, bytes]) -> bytes:
    """The image of one ``image_url`` part: a data URL, or a remote URL fetched beforehand."""
    url = image_url(part, where)
    if url.startswith(REMOTE_SCHEMES):
        if url not in fetched:
            raise bad_request(
                f'"{where}.image_url.url": remote image URLs are refused; send the image as a data URL '
                "(or start the server with --allow-image-urls)"
            )
        return fetched[url]
    return from_data_url(url, f"{where}.image_url.url")


def _remote_urls(messages: object) -> Iterator[tuple[str, str]]:
    """Each remote ``image_url`` of the messages, with the field that holds it."""
    for index, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, Mapping) else None
        for position, part in enumerate(content if isinstance(content, list) else ()):
            if isinstance(part, Mapping) and part.get("type") == "image_url":
                where = f"messages[{index}].content[{position}]"
                url = image_url(part, where)
                if url.startswith(REMOTE_SCHEMES):
                    yield f"{where}.image_url.url", url


async def fetch_remote(messages: object, config: ServerConfig) -> dict[str, bytes]:
    """The remote images of the messages, by URL (nothing fetched unless the server allows it)."""
    urls = dict(_remote_urls(messages)) if config.allow_image_urls else {}
    if not urls:
        return {}
    timeout = aiohttp.ClientTimeout(total=config.body_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return {url: await _fetch(session, url, where, config) for where, url in urls.items()}


async def _fetch(session: aiohttp.ClientSession, url: str, where: str, config: ServerConfig) -> bytes:
    limit = config.max_request_bytes
    try:
        async with session.get(url) as response:
            if response.status != 200:
                raise bad_request(f'"{where}": fetching the image answered HTTP {response.status}')
            data = bytearray()
            async for chunk in response.content.iter_chunked(2**16):
                data += chunk
                if len(data) > limit:
                    raise bad_request(f'"{where}": the image is larger than {limit} bytes')
    except (aiohttp.ClientError, TimeoutError) as err:
        raise bad_request(f'"{where}": the image could not be fetched: {err or "timed out"}') from err
    return bytes(data)
