"""Fixtures for the parser tests: inline limits and a shortcut to ``extract`` (``corpus`` is shared)."""

from __future__ import annotations

import dataclasses
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import ParsedDocument
from ingestion.parsers import extract


@pytest.fixture
def limits() -> ParseLimits:
    return ParseLimits(isolation="inline")


Extract = Callable[..., ParsedDocument]


@pytest.fixture
def parse(limits: ParseLimits) -> Extract:
    """``extract`` with inline limits; the blob name defaults to the file's own name."""

    def run(path: Path, name: str | None = None, **overrides: int) -> ParsedDocument:
        chosen = dataclasses.replace(limits, **overrides)
        return extract(path, path.name if name is None else name, chosen)

    return run


def refusal(run: Callable[[], object]) -> tuple[ReasonCode, str]:
    """The reason and message of the ``PermanentError`` that ``run`` raises."""
    with pytest.raises(PermanentError) as caught:
        run()
    return caught.value.reason, caught.value.message


def minimal_pdf(*page_texts: str, image_on_blank_pages: bool = False) -> bytes:
    """A small valid PDF with one Helvetica text line per page ("" gives a blank page).

    Written by hand because no installed library writes PDF text; ``image_on_blank_pages`` paints
    a 1x1 image on the blank pages (a scanned page without a text layer).
    """
    count = len(page_texts)
    font, image = 3 + 2 * count, 4 + 2 * count
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(count))}] /Count {count} >>",
    ]
    for index, text in enumerate(page_texts):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 300] /Contents {4 + 2 * index} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> /XObject << /Im1 {image} 0 R >> >> >>"
        )
        if text:
            stream = f"BT /F1 12 Tf 20 250 Td ({text}) Tj ET"
        else:
            stream = "q 100 0 0 100 50 50 cm /Im1 Do Q" if image_on_blank_pages else ""
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(
        "<< /Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray "
        "/BitsPerComponent 8 /Length 1 >>\nstream\n\x80\nendstream"
    )
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def with_main_content_type(package: bytes, content_type: str) -> bytes:
    """An Office package (zip) with its main part re-declared as ``content_type`` (.docm, .ppsx, ...)."""
    source = zipfile.ZipFile(io.BytesIO(package))
    out = io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "[Content_Types].xml":
                data = re.sub(
                    rb'(PartName="/(?:word/document|ppt/presentation|xl/workbook)\.xml" ContentType=")[^"]+',
                    rb"\g<1>" + content_type.encode(),
                    data,
                )
                assert content_type.encode() in data
            target.writestr(info, data)
    return out.getvalue()
