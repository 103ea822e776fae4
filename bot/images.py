"""Recognise image bytes, because a model's declared format and the URL's extension are not to be trusted."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", "png"),
    (b"\xff\xd8\xff", 0, "image/jpeg", "jpg"),
    (b"GIF87a", 0, "image/gif", "gif"),
    (b"GIF89a", 0, "image/gif", "gif"),
    (b"WEBP", 8, "image/webp", "webp"),
)


def sniff_image_type(data: bytes) -> tuple[str, str]:
    """(content type, file extension) of `data`; unknown bytes are sent as a generic binary file."""
    for magic, offset, content_type, extension in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if extension == "webp" and not data.startswith(b"RIFF"):
                continue
            return content_type, extension
    return "application/octet-stream", "bin"
