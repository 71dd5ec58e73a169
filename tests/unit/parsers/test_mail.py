"""E-mail: a header block, the plain or HTML body, attachments named, encryption refused."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Ana Lima <ana@example.com>"
    message["To"] = "team@example.com"
    message["Cc"] = "boss@example.com"
    message["Date"] = "Tue, 01 Oct 2024 12:34:56 -0500"
    message["Subject"] = "Déjà vu in the budget"
    return message


def _save(tmp_path: Path, message: EmailMessage, name: str = "message.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(message.as_bytes())
    return path


def test_headers_body_and_attachments(tmp_path: Path, parse: Extract) -> None:
    """The subject is the title and a heading, then a header block, the plain body, the attachment names."""
    message = _message()
    message.set_content("Numbers look off.\n\nPlease check.\n")
    message.add_alternative("<p>HTML twin that is not used</p>", subtype="html")
    message.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="budget.pdf")
    document = parse(_save(tmp_path, message))
    assert document.content_type == "message/rfc822"
    assert document.title == "Déjà vu in the budget"
    assert list(document.pages[0].blocks) == [
        Block("Déjà vu in the budget", 1),
        Block(
            "From: Ana Lima <ana@example.com>\nTo: team@example.com\nCc: boss@example.com\n"
            "Date: Tue, 01 Oct 2024 12:34:56 -0500\nSubject: Déjà vu in the budget"
        ),
        Block("Numbers look off."),
        Block("Please check."),
        Block("Attachments: budget.pdf"),
    ]


def test_an_html_only_message_goes_through_the_html_parser(tmp_path: Path, parse: Extract) -> None:
    """Without a text/plain part, the HTML body is parsed (scripts dropped)."""
    message = _message()
    message.set_content("<h2>Agenda</h2><script>x()</script><p>Item one</p>", subtype="html")
    blocks = parse(_save(tmp_path, message)).pages[0].blocks
    assert blocks[-2:] == (Block("Agenda", 2), Block("Item one"))


def test_an_encrypted_message_is_refused(tmp_path: Path, parse: Extract) -> None:
    """S/MIME enveloped data is refused as encrypted."""
    message = _message()
    message.set_content(
        b"\x30\x82garbage", maintype="application", subtype="pkcs7-mime", params={"smime-type": "enveloped-data"}
    )
    reason, _ = refusal(lambda: parse(_save(tmp_path, message)))
    assert reason is ReasonCode.ENCRYPTED


def test_a_pgp_encrypted_corpus_message_is_refused(corpus: Path, parse: Extract) -> None:
    """PGP/MIME multipart/encrypted is refused as encrypted."""
    reason, _ = refusal(lambda: parse(corpus / "eml_fake-encrypted.eml"))
    assert reason is ReasonCode.ENCRYPTED


def test_broken_encodings_are_replaced_not_fatal(tmp_path: Path, parse: Extract) -> None:
    """An unknown charset, bytes invalid in the declared one, and a bad encoded-word still give text."""
    raw = (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: =?bogus-charset?Q?Caf=E9?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf8mb4\r\n\r\nUnknown charset body\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Bad \xff\xfe bytes\r\n--XX--\r\n"
    )
    path = tmp_path / "broken.eml"
    path.write_bytes(raw)
    text = parse(path).text
    assert "Unknown charset body" in text
    assert "Bad \ufffd\ufffd bytes" in text


def test_a_legacy_charset_body_is_decoded(corpus: Path, parse: Extract) -> None:
    """A windows-1255 (Hebrew) body and subject decode correctly."""
    document = parse(corpus / "eml_email-no-utf8-2008-07-16.062410.eml")
    assert document.title == "RE: שלום"
    assert "סלבה היקר" in document.text


def test_an_email_named_txt_is_still_an_email(corpus: Path, parse: Extract) -> None:
    """Content decides: a message saved as .txt is parsed as e-mail."""
    assert parse(corpus / "fake-email.txt").content_type == "message/rfc822"


@pytest.mark.parametrize("charset", ["base64", "rot13", "zlib"])
def test_a_charset_that_is_a_codec_but_not_a_text_encoding_falls_back(
    tmp_path: Path, parse: Extract, charset: str
) -> None:
    """charset=base64 (known to codecs.lookup, refused by bytes.decode) is ignored and the body guessed."""
    path = tmp_path / "odd.eml"
    path.write_bytes(
        b"From: a@example.com\nTo: b@example.com\nSubject: hi\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\n\nHello world, this is the body.\n"
    )
    assert "Hello world, this is the body." in parse(path).text


def test_thousands_of_nested_multiparts_are_corrupt(tmp_path: Path, parse: Extract) -> None:
    """A 2,000-deep multipart nesting (past Python's recursion limit) ends as corrupt, not a crash."""
    depth = 2000
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (level, level) for level in range(depth)
    )
    closing = b"".join(b"--b%d--\n" % level for level in reversed(range(depth)))
    path = tmp_path / "deep.eml"
    path.write_bytes(
        b"From: a@example.com\nTo: b@example.com\nSubject: deep\nMIME-Version: 1.0\n"
        + opening
        + b"Content-Type: text/plain\n\nhello deep\n"
        + closing
    )
    assert refusal(lambda: parse(path)) == (ReasonCode.CORRUPT, "MIME parts nested too deeply to read")
