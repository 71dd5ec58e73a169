"""Writes samples/return-policy.pdf: a two-page PDF with a real text layer, from plain PDF syntax.

Kept as a script so the sample's content is reviewable text; no PDF-writing library is needed for
a file this small.
"""

from __future__ import annotations

from pathlib import Path

PAGES = [
    [
        "Northwind Outfitters return policy",
        "You can return any unused item within 60 days of purchase for a full refund.",
        "Tents and sleeping bags that were used can be returned within 30 days",
        "if they are clean and undamaged.",
    ],
    [
        "Warranty and repairs",
        "Every jacket and tent has a two-year warranty against manufacturing faults.",
        "Broken zips are repaired free of charge during the warranty period.",
        "Send the item to the repair centre with a copy of your receipt.",
    ],
]


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build() -> bytes:
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(PAGES))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(PAGES)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for lines in PAGES:
        content = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
        page_id = len(objects) + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_id + 1} 0 R >>".encode()
        )
        stream = content.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "samples" / "return-policy.pdf"
    target.write_bytes(build())
    print(f"wrote {target}")
