"""Text decoding: bytes in any common encoding to ``str``, and whether bytes look like text at all.

``decode_text`` tries, in order: a BOM, the NUL pattern of unmarked UTF-16/32, UTF-8, then a legacy
code page. Among legacy code pages the Western one (cp1252) wins unless its reading shows the marks
of another language misread (see ``_reads_as_western``); only then does charset-normalizer choose.
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

from ingestion.errors import PermanentError, ReasonCode

HEAD_BYTES = 8192

BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13, 27}
_GUESS_BYTES = 1_000_000  # what charset-normalizer reads: enough to judge, bounded in time

# Letters that Western European text in cp1252 almost never holds, but that Central European and
# Baltic text shows when its bytes are read as cp1252 (cp1250/1257 "š ž", cp1250 "ź" as "Ÿ").
_FOREIGN_IN_CP1252 = re.compile("[šžŠŽŸ]")
# Turkish "ş ğ ı" (cp1254) and Romanian "ţ" (cp1250) read as cp1252 become Icelandic "þ ð ý";
# Icelandic text also has acute vowels and "æ", which those languages lack.
_ICELANDIC_CONSONANTS = re.compile("[ðþýÐÞÝ]")
_ICELANDIC_VOWELS = re.compile("[áíóúæÁÍÓÚÆ]")
# The non-letters cp1252 gives bytes 0x80-0xFF, less those that do occur inside Western words
# (apostrophes, the Catalan middle dot, soft hyphen, dashes). Polish misread as cp1252 puts them
# between letters ("Za¿ó³æ" for "Zażółć"); a Western word never does.
_CP1252_SYMBOLS = "".join(
    char
    for char in bytes(range(0x80, 0x100)).decode("cp1252", errors="ignore")
    if not char.isalpha() and char not in "’‘·\xad–—"
)
# The symbol comes first (its letter neighbours after, by lookaround), so that re scans for the
# rare symbol characters at C speed instead of trying a lookbehind at every position.
_SYMBOL_IN_WORD = re.compile(f"[{re.escape(_CP1252_SYMBOLS)}ªº](?<=[^\\W\\d_].)(?=[^\\W\\d_])")
_NON_ASCII_LETTER = re.compile(r"[^\W\d_\x00-\x7f]")
_ASCII_LETTER = re.compile("[A-Za-z]")


def decode_text(data: bytes) -> str:
    """``data`` decoded (BOM, NUL pattern, UTF-8, then the best legacy guess), newlines as ``\\n``."""
    text = _decode(data)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def looks_like_text(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) is text: a BOM, UTF-16/32 by NULs, or few controls."""
    if any(head.startswith(bom) for bom, _ in BOMS) or _utf16_32_by_nuls(head):
        return True
    if not head or b"\x00" in head:
        return not head
    controls = sum(1 for byte in head if byte in _CONTROL)
    return controls <= len(head) * 0.01


def _decode(data: bytes) -> str:
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    unmarked = _utf16_32_by_nuls(data)
    if unmarked:
        return data.decode(unmarked, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if b"\x00" in data[:HEAD_BYTES] or not looks_like_text(data[:HEAD_BYTES]):
        raise PermanentError(ReasonCode.UNSUPPORTED_TYPE, "binary content: not text in any known encoding")
    return data.decode(_legacy_encoding(data), errors="replace")


def _legacy_encoding(data: bytes) -> str:
    """cp1252 when the text reads as Western European, else charset-normalizer's best guess.

    charset-normalizer alone misreads short Western texts: "Café … façade … Señor Muñoz" scores
    better as Baltic cp1257 ("déją", "faēade"), because its measure of "chaos" cannot tell those
    letters apart. cp1252 is by far the most common legacy encoding (and what browsers assume), so
    it wins unless its reading is implausible.
    """
    if _reads_as_western(data):
        return "cp1252"
    best = charset_normalizer.from_bytes(data[:_GUESS_BYTES]).best()
    if best is None:
        raise PermanentError(ReasonCode.UNSUPPORTED_TYPE, "binary content: no text encoding fits")
    return str(best.encoding)


def _reads_as_western(data: bytes) -> bool:
    """Whether ``data`` read as cp1252 is plausible Western European text, not another language misread.

    Implausible: a byte cp1252 leaves undefined; letters that only Central European, Baltic or
    Turkish text shows when misread; a symbol inside a word; or mostly non-ASCII letters (Cyrillic,
    Greek and CJK bytes read as cp1252 become runs of accented letters). Hungarian, whose "ő ű"
    read as "õ û", still passes: a text that plausible both ways stays ambiguous.
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return False
    if _FOREIGN_IN_CP1252.search(text) or _SYMBOL_IN_WORD.search(text):
        return False
    if _ICELANDIC_CONSONANTS.search(text) and not _ICELANDIC_VOWELS.search(text):
        return False
    sample = text[:_GUESS_BYTES]
    accented = len(_NON_ASCII_LETTER.findall(sample))
    return accented <= len(_ASCII_LETTER.findall(sample))


def _utf16_32_by_nuls(data: bytes) -> str | None:
    """UTF-16/32 without a BOM, recognised by where the NUL bytes of ASCII characters fall."""
    sample = data[:4096]
    size = len(sample) - len(sample) % 4
    if size < 8:
        return None
    sample = sample[:size]
    for encoding, nul_lanes, text_lane, width in (
        ("utf-32-le", (1, 2, 3), 0, 4),
        ("utf-32-be", (0, 1, 2), 3, 4),
        ("utf-16-le", (1,), 0, 2),
        ("utf-16-be", (0,), 1, 2),
    ):
        units = size // width
        nuls = sum(sample[lane::width].count(0) for lane in nul_lanes) / (units * len(nul_lanes))
        if nuls > 0.9 and sample[text_lane::width].count(0) < units * 0.1:
            return encoding
    return None
