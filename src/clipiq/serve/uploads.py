"""Uploads: a multipart body read with caps as it streams, held in memory only, decoded from bytes.

Nothing is written to disk (Starlette's own form parser spools files above 1 MiB to temporary files) and
reading stops at the first byte beyond a limit: a file above ``max_upload_bytes`` (413 upload_too_large), a
file beyond ``max_files`` (422 too_many_files), a form field above :data:`MAX_FIELD_BYTES`.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError
from torch import Tensor

from clipiq.clip.preprocess import check_aspect_ratio
from clipiq.core.image import pil_to_tensor
from clipiq.data.io import displayed
from clipiq.serve.errors import ServeError

#: Form fields (``method``, ``scale``) are short; a longer one is refused.
MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16
#: Upload file names are echoed back as ``path``; longer ones are cut.
MAX_NAME_CHARS = 255


@dataclass
class Upload:
    """One uploaded file, in memory."""

    field: str
    filename: str
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


async def read_form(content_type: str | None, stream: AsyncIterator[bytes], *, max_upload_bytes: int,
                    max_files: int) -> Form:
    """Parse a ``multipart/form-data`` body as it streams, under the caps (ServeError on any breach)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise ServeError("no_files", "expected a multipart/form-data body with image files "
                                     f"(got content type {(content_type or 'none')[:80]!r})")
    form = Form()
    state: dict = {"name": b"", "value": b"", "disposition": b"", "part": None, "field": None}

    def on_part_begin() -> None:
        state.update(disposition=b"", part=None, field=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        if state["name"].lower() == b"content-disposition":
            state["disposition"] = state["value"]
        state["name"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state["disposition"])
        if b"name" not in options:
            raise ServeError("bad_request", 'a multipart part has no Content-Disposition "name"')
        name = options[b"name"].decode("utf-8", "replace")[:64]
        if b"filename" in options:
            if len(form.files) >= max_files:
                raise ServeError("too_many_files", f"more than {max_files} files in one request; send at most "
                                                   f"{max_files}")
            filename = options[b"filename"].decode("utf-8", "replace")[:MAX_NAME_CHARS] or f"upload-{len(form.files)}"
            upload = Upload(name, filename)
            form.files.append(upload)
            state["part"] = upload
        else:
            if len(form.fields) >= MAX_FIELDS:
                raise ServeError("bad_option", f"more than {MAX_FIELDS} form fields")
            state["field"] = [name, bytearray()]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        upload: Upload | None = state["part"]
        if upload is not None:
            if len(upload.data) + (end - start) > max_upload_bytes:
                raise ServeError("upload_too_large", f"{upload.filename}: upload is larger than the limit of "
                                                     f"{max_upload_bytes} bytes", upload.filename)
            upload.data += data[start:end]
        elif state["field"] is not None:
            buf = state["field"][1]
            if len(buf) + (end - start) > MAX_FIELD_BYTES:
                raise ServeError("bad_option", f"form field {state['field'][0]!r} is longer than "
                                               f"{MAX_FIELD_BYTES} bytes")
            buf += data[start:end]

    def on_part_end() -> None:
        if state["field"] is not None:
            name, buf = state["field"]
            form.fields[name] = bytes(buf).decode("utf-8", "replace")

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
                 "on_header_field": on_header_field, "on_header_value": on_header_value,
                 "on_header_end": on_header_end, "on_headers_finished": on_headers_finished}
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except ServeError:
        raise
    except Exception as e:  # the parser's own errors: a malformed body
        raise ServeError("bad_request", f"malformed multipart body ({type(e).__name__})") from None
    return form


def decode_upload(upload: Upload, *, max_pixels: int, max_aspect: float) -> tuple[Tensor, str | None]:
    """An upload's bytes as a float (3,H,W) tensor in [0,1] as a viewer shows it, and the decoder's note.

    The pixel and aspect limits are checked on the header's size, before a pixel is decoded.
    """
    name = upload.filename
    if not upload.data:
        raise ServeError("bad_image", f"{name}: empty file", name)
    try:
        im = Image.open(io.BytesIO(bytes(upload.data)))
    except Image.DecompressionBombError:
        raise ServeError("image_too_large", f"{name}: refused by the decompression-bomb guard", name) from None
    except UnidentifiedImageError:
        raise ServeError("bad_image", f"{name}: not a recognised image format", name) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ServeError("bad_image", f"{name}: corrupt or truncated image ({e})", name) from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise ServeError("image_too_large", f"{name}: image is {w}x{h} = {w * h} pixels, above the limit of "
                                                f"{max_pixels}", name)
        try:
            check_aspect_ratio(h, w, max_aspect)
        except ValueError:
            raise ServeError("bad_aspect_ratio", f"{name}: image is {w}x{h} pixels, more elongated than the limit "
                                                 f"of 1:{max_aspect:g}", name) from None
        try:
            decoded = displayed(im)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ServeError("bad_image", f"{name}: corrupt or truncated image ({e})", name) from None
    return pil_to_tensor(decoded.image), decoded.note
