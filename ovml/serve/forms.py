"""Reading an HTML form from a request body (multipart/form-data, or url-encoded for text fields)."""
from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qsl

from ..errors import OvmlError


class RequestError(OvmlError):
    """A request that cannot be served; answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class FormField:
    value: bytes           # the field's bytes (a file's content, or UTF-8 text)
    filename: str | None   # set for file fields

    @property
    def text(self) -> str:
        try:
            return self.value.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise RequestError(400, "a text field is not UTF-8") from None


def headers(raw: bytes):
    """The headers in `raw` as an email.message.Message (parameters decoded, quotes handled)."""
    return BytesParser(policy=policy.HTTP).parsebytes(raw + b"\r\n\r\n", headersonly=True)


def parse_form(content_type: str | None, body: bytes) -> dict[str, FormField]:
    """{field name: FormField}; the first of repeated names wins. A body that is no form -> 415,
    a malformed multipart body -> 400."""
    kind = headers(b"Content-Type: " + (content_type or "").encode("latin-1", "replace"))
    if kind.get_content_type() == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="utf-8")
        fields: dict[str, FormField] = {}
        for name, value in pairs:
            fields.setdefault(name, FormField(value.encode("utf-8"), None))
        return fields
    if kind.get_content_type() != "multipart/form-data":
        raise RequestError(415, f"the body is not a form (Content-Type {content_type or 'missing'}); "
                                "send multipart/form-data with fields image, labels, top_k, alpha")
    boundary = kind.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise RequestError(400, "multipart/form-data without a boundary")
    return multipart_fields(body, boundary.encode("latin-1"))


def multipart_fields(body: bytes, boundary: bytes) -> dict[str, FormField]:
    """Split a multipart/form-data body on its boundary (RFC 7578)."""
    parts = (b"\r\n" + body).split(b"\r\n--" + boundary)  # a delimiter is CRLF, "--", the boundary
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise RequestError(400, "malformed multipart body (no closing boundary)")
    fields: dict[str, FormField] = {}
    for part in parts[1:-1]:
        if not part.startswith(b"\r\n") or b"\r\n\r\n" not in part:
            raise RequestError(400, "malformed multipart body (a part without headers)")
        raw_headers, _, value = part[2:].partition(b"\r\n\r\n")
        disposition = headers(raw_headers)
        name = disposition.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise RequestError(400, "malformed multipart body (a part without a field name)")
        fields.setdefault(name, FormField(value, disposition.get_filename()))
    return fields
