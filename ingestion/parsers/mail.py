"""E-mail (RFC 5322 / MIME): a header block, the text body, and the attachments' names.

The body comes from the ``text/plain`` parts, else from the ``text/html`` parts through the HTML
parser. Attachments are listed, not parsed. Encrypted messages (PGP/MIME, S/MIME enveloped) are
refused. Damaged headers and bodies are decoded with replacement characters, never fatally.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
from email import policy
from pathlib import Path

from ingestion import sniff, sniff_text
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget, paragraph_blocks
from ingestion.parsers.html import html_blocks

_SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_ENCRYPTED_TYPES = frozenset({"multipart/encrypted", "application/pkcs7-mime", "application/x-pkcs7-mime"})


def parse_email(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page: the subject as a heading, the header block, the body, then the attachment list."""
    try:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        return _parse_message(message, limits)
    except RecursionError as error:
        # The email package parses and walks MIME parts recursively; thousands of nested
        # multiparts are damage (or an attack), not a message anyone wrote.
        raise PermanentError(ReasonCode.CORRUPT, "MIME parts nested too deeply to read") from error


def _parse_message(message: email.message.Message, limits: ParseLimits) -> ParsedDocument:
    _refuse_encrypted(message)
    budget = TextBudget(limits.max_text_chars)
    subject = _header(message, "Subject")
    blocks: list[Block] = []
    if subject:
        blocks.append(Block(budget.take(subject), heading_level=1))
    header_lines = [f"{name}: {value}" for name in _SHOWN_HEADERS if (value := _header(message, name))]
    if header_lines:
        blocks.append(Block(budget.take("\n".join(header_lines))))
    plain, html, attachments = _parts(message)
    if plain:
        for text in plain:
            blocks.extend(Block(budget.take(block.text)) for block in paragraph_blocks(text))
    else:
        for markup in html:
            blocks.extend(html_blocks(markup, budget)[1])
    if attachments:
        blocks.append(Block(budget.take("Attachments: " + ", ".join(attachments))))
    return ParsedDocument(sniff.EMAIL, (Page(None, tuple(blocks)),), title=subject or None)


def _refuse_encrypted(message: email.message.Message) -> None:
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in _ENCRYPTED_TYPES and part.get_param("smime-type") != "signed-data":
            raise PermanentError(ReasonCode.ENCRYPTED, f"the message is encrypted ({content_type})")


def _parts(message: email.message.Message) -> tuple[list[str], list[str], list[str]]:
    """The inline text/plain bodies, inline text/html bodies and attachment names, in order."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = _filename(part)
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        if filename or disposition == "attachment":
            attachments.append(filename or content_type)
        elif content_type == "text/plain":
            plain.append(_body_text(part))
        elif content_type == "text/html":
            html.append(_body_text(part))
    return plain, html, attachments


def _body_text(part: email.message.Message) -> str:
    """The part's decoded text: its declared charset when Python knows it, else a guess."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = _declared_decode(payload, part.get_content_charset())
    if text is None:
        try:
            text = sniff_text.decode_text(payload)
        except PermanentError:
            text = payload.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _declared_decode(payload: bytes, charset: str | None) -> str | None:
    """``payload`` in its declared charset; None when there is none or Python cannot decode with it.

    ``bytes.decode`` raises LookupError both for unknown labels ("utf8mb4", typos) and for codecs
    that are not text encodings ("base64", "rot13"), which ``codecs.lookup`` alone accepts.
    """
    if not charset:
        return None
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return None


def _filename(part: email.message.Message) -> str | None:
    try:
        return part.get_filename()
    except (email.errors.HeaderParseError, ValueError, IndexError, TypeError):
        return None  # a damaged Content-Disposition: treated as having no name


def _header(message: email.message.Message, name: str) -> str:
    """A header's decoded value, or its raw text when the structured parser cannot read it."""
    try:
        value = message.get(name)
        text = str(value) if value is not None else ""
    except (email.errors.HeaderParseError, ValueError, IndexError, TypeError, AttributeError):
        # policy.default parses structured headers when they are read, and some malformed ones
        # defeat it; the raw value, with its encoded words decoded leniently, is still worth showing.
        text = _raw_header(message, name)
    return " ".join(text.split())


def _raw_header(message: email.message.Message, name: str) -> str:
    raw = next((str(value) for key, value in message.raw_items() if key.lower() == name.lower()), "")
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError):
        return raw
