"""RFC 6455 §4 opening handshake, server side, without I/O."""

from __future__ import annotations

import base64

import pytest

from takeover.errors import HandshakeError
from takeover.protocol.handshake import (
    Handshake,
    Rejection,
    accept_headers,
    accept_key,
    accept_response,
    header_tokens,
    is_upgrade_request,
    reject_response,
    rejection,
    rejection_for,
    select_protocol,
    validate_request,
)

# RFC 6455 §1.3 / §4.2.2: the sample nonce and its accept value.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

UPGRADE_MESSAGE = "Invalid Header: 'upgrade' header must contain 'websocket'"
CONNECTION_MESSAGE = "Invalid Header: 'connection' header must contain 'Upgrade'"
KEY_MISSING_MESSAGE = "Invalid Header: 'sec-websocket-key' header must be set"
KEY_INVALID_MESSAGE = (
    "Invalid Header: 'sec-websocket-key' must be the base64 encoding of 16 bytes (RFC 6455 §4.1)"
)
VERSION_MISSING_MESSAGE = "Invalid Header: 'sec-websocket-version' header must be set"


def request_headers(*, omit: tuple[str, ...] = (), **overrides: str) -> dict[str, str]:
    """A valid upgrade request's headers; keyword names use ``_`` for ``-``."""
    headers = {
        "Host": "server.example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Origin": "http://example.com",
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    return {name: value for name, value in headers.items() if name not in omit}


def rejected(headers: object, *, method: str = "GET", version: str = "HTTP/1.1") -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        validate_request(method, version, headers)  # type: ignore[arg-type]
    return info.value


def parse_response(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, "no end of headers"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, colon, value = line.partition(": ")
        assert colon, line
        headers.append((name, value))
    return status_line, headers, body


class TestSection1_3AcceptKey:
    def test_rfc_example_key(self) -> None:
        assert accept_key(RFC_KEY) == RFC_ACCEPT

    def test_another_key(self) -> None:
        # Computed independently: base64(sha1(key + GUID)).
        import hashlib

        key = base64.b64encode(b"0123456789abcdef").decode()
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        assert accept_key(key) == base64.b64encode(digest).decode()
        assert accept_key(key) != RFC_ACCEPT


class TestSection4_2_1RequestValidation:
    def test_rfc_example_request_is_valid(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers())
        assert handshake == Handshake(key=RFC_KEY, protocols=(), extensions=())

    @pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "CONNECT", "OPTIONS"])
    def test_method_not_get_is_405_with_allow(self, method: str) -> None:
        error = rejected(request_headers(), method=method)
        assert error.status == 405
        assert error.headers == [("Allow", "GET")]
        assert repr(method) in str(error)

    @pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/0.9", "HTTP/x.y", "SPDY/3", ""])
    def test_http_version_below_1_1_is_400(self, version: str) -> None:
        error = rejected(request_headers(), version=version)
        assert error.status == 400
        assert "HTTP/1.1 or later" in str(error)
        assert error.headers == []

    @pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.2", "HTTP/2", "HTTP/2.0"])
    def test_http_version_1_1_or_later_is_accepted(self, version: str) -> None:
        assert validate_request("GET", version, request_headers()).key == RFC_KEY

    def test_method_is_checked_before_version(self) -> None:
        assert rejected(request_headers(), method="POST", version="HTTP/1.0").status == 405

    # -- Upgrade -----------------------------------------------------------

    def test_upgrade_missing(self) -> None:
        error = rejected(request_headers(omit=("Upgrade",)))
        assert (error.status, str(error)) == (400, UPGRADE_MESSAGE)

    @pytest.mark.parametrize("value", ["", "websockets", "h2c", "web socket", "http/1.1"])
    def test_upgrade_without_websocket_token(self, value: str) -> None:
        error = rejected(request_headers(Upgrade=value))
        assert (error.status, str(error)) == (400, UPGRADE_MESSAGE)

    @pytest.mark.parametrize(
        "value", ["websocket", "WebSocket", "WEBSOCKET", "h2c, websocket", " websocket "]
    )
    def test_upgrade_token_is_case_insensitive_and_listed(self, value: str) -> None:
        assert validate_request("GET", "HTTP/1.1", request_headers(Upgrade=value)).key == RFC_KEY

    # -- Connection --------------------------------------------------------

    def test_connection_missing(self) -> None:
        error = rejected(request_headers(omit=("Connection",)))
        assert (error.status, str(error)) == (400, CONNECTION_MESSAGE)

    @pytest.mark.parametrize("value", ["keep-alive", "close", "Upgraded", "keep-alive upgrade", ""])
    def test_connection_without_upgrade_token(self, value: str) -> None:
        error = rejected(request_headers(Connection=value))
        assert (error.status, str(error)) == (400, CONNECTION_MESSAGE)

    @pytest.mark.parametrize(
        "value",
        ["Upgrade", "upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade,keep-alive", " , upgrade ,"],
    )
    def test_connection_token_list(self, value: str) -> None:
        assert validate_request("GET", "HTTP/1.1", request_headers(Connection=value)).key == RFC_KEY

    def test_upgrade_is_checked_before_connection(self) -> None:
        assert str(rejected(request_headers(omit=("Upgrade", "Connection")))) == UPGRADE_MESSAGE

    # -- Sec-WebSocket-Key -------------------------------------------------

    def test_key_missing(self) -> None:
        error = rejected(request_headers(omit=("Sec-WebSocket-Key",)))
        assert (error.status, str(error)) == (400, KEY_MISSING_MESSAGE)

    @pytest.mark.parametrize(
        "key",
        [
            "",
            base64.b64encode(b"0123456789abcde").decode(),  # 15 bytes, 20 characters
            base64.b64encode(b"0123456789abcdefg").decode(),  # 17 bytes, still 24 characters
            base64.b64encode(b"0123456789abcdefgh").decode(),  # 18 bytes, 24 characters, no padding
            base64.b64encode(b"0123456789abcdef" * 2).decode(),
            "dGhlIHNhbXBsZSBub25jZQ",  # padding removed
        ],
        ids=["empty", "15-bytes", "17-bytes", "18-bytes", "32-bytes", "unpadded"],
    )
    def test_key_wrong_length(self, key: str) -> None:
        error = rejected(request_headers(Sec_WebSocket_Key=key))
        assert (error.status, str(error)) == (400, KEY_INVALID_MESSAGE)

    @pytest.mark.parametrize(
        "key",
        [
            "!" * 24,
            "dGhlIHNhbXBsZSBub25jZQ!=",
            "dGhlIHNhbXBsZSB ub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZ===",
            "é" * 24,
        ],
    )
    def test_key_not_base64(self, key: str) -> None:
        error = rejected(request_headers(Sec_WebSocket_Key=key))
        assert (error.status, str(error)) == (400, KEY_INVALID_MESSAGE)

    def test_two_keys(self) -> None:
        other = base64.b64encode(b"0123456789abcdef").decode()
        headers = [*request_headers().items(), ("Sec-WebSocket-Key", other)]
        error = rejected(headers)
        assert (error.status, str(error)) == (400, KEY_INVALID_MESSAGE)

    def test_two_identical_keys(self) -> None:
        headers = [*request_headers().items(), ("Sec-WebSocket-Key", RFC_KEY)]
        assert str(rejected(headers)) == KEY_INVALID_MESSAGE

    def test_key_surrounding_whitespace_is_ignored(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers(Sec_WebSocket_Key=f" {RFC_KEY} "))
        assert handshake.key == RFC_KEY

    # -- header shapes -----------------------------------------------------

    def test_header_names_are_case_insensitive(self) -> None:
        headers = {name.lower(): value for name, value in request_headers().items()}
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY
        headers = {name.upper(): value for name, value in request_headers().items()}
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY

    def test_headers_as_list_of_pairs(self) -> None:
        pairs = list(request_headers().items())
        assert validate_request("GET", "HTTP/1.1", pairs) == validate_request(
            "GET", "HTTP/1.1", request_headers()
        )

    def test_headers_as_generator(self) -> None:
        pairs = (pair for pair in request_headers().items())
        assert validate_request("GET", "HTTP/1.1", pairs).key == RFC_KEY

    def test_repeated_connection_headers_are_joined(self) -> None:
        headers = [
            *request_headers(omit=("Connection",)).items(),
            ("Connection", "keep-alive"),
            ("connection", "Upgrade"),
        ]
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY

    def test_repeated_upgrade_headers_are_joined(self) -> None:
        headers = [*request_headers(omit=("Upgrade",)).items(), ("Upgrade", "h2c"), ("Upgrade", "websocket")]
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY

    def test_protocols_and_extensions(self) -> None:
        headers = [
            *request_headers().items(),
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Protocol", "v3.example"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-foo"),
        ]
        handshake = validate_request("GET", "HTTP/1.1", headers)
        assert handshake.protocols == ("chat", "superchat", "v3.example")
        assert handshake.extensions == ("permessage-deflate; client_max_window_bits", "x-foo")

    def test_handshake_is_frozen(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers())
        with pytest.raises(AttributeError):
            handshake.key = "x"  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("value", "tokens"),
        [
            ("", []),
            ("a", ["a"]),
            ("a, b", ["a", "b"]),
            (" a ,, b ,", ["a", "b"]),
            ("keep-alive, Upgrade", ["keep-alive", "Upgrade"]),
        ],
    )
    def test_header_tokens(self, value: str, tokens: list[str]) -> None:
        assert header_tokens(value) == tokens


class TestSection4_2_2Accept:
    def test_accept_headers(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers())
        assert accept_headers(handshake) == [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", RFC_ACCEPT),
        ]

    def test_accept_response_bytes(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers())
        assert accept_response(accept_headers(handshake)) == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"\r\n"
        )

    def test_accept_response_with_protocol_and_extensions(self) -> None:
        handshake = validate_request(
            "GET", "HTTP/1.1", request_headers(Sec_WebSocket_Protocol="chat, superchat")
        )
        protocol = select_protocol(handshake, "chat")
        assert accept_response(accept_headers(handshake, protocol, "x-ext")) == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            b"Sec-WebSocket-Protocol: chat\r\n"
            b"Sec-WebSocket-Extensions: x-ext\r\n"
            b"\r\n"
        )

    def test_accept_response_with_no_headers(self) -> None:
        assert accept_response([]) == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"

    def test_select_protocol_offered(self) -> None:
        handshake = validate_request(
            "GET", "HTTP/1.1", request_headers(Sec_WebSocket_Protocol="chat, superchat")
        )
        assert select_protocol(handshake, "superchat") == "superchat"
        assert select_protocol(handshake, "chat") == "chat"

    def test_select_protocol_not_offered(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers(Sec_WebSocket_Protocol="chat"))
        with pytest.raises(HandshakeError) as info:
            select_protocol(handshake, "x")
        assert str(info.value) == "Protocol 'x' not in the request's protocol list (non negotiable)"
        assert info.value.status == 400

    def test_select_protocol_with_none_offered(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers())
        with pytest.raises(HandshakeError, match="Protocol 'chat' not in"):
            select_protocol(handshake, "chat")

    def test_select_protocol_is_case_sensitive(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers(Sec_WebSocket_Protocol="chat"))
        with pytest.raises(HandshakeError):
            select_protocol(handshake, "Chat")

    def test_select_no_protocol(self) -> None:
        handshake = validate_request("GET", "HTTP/1.1", request_headers(Sec_WebSocket_Protocol="chat"))
        assert select_protocol(handshake, None) is None


class TestSection4_4VersionMismatch:
    def test_version_missing_is_400(self) -> None:
        error = rejected(request_headers(omit=("Sec-WebSocket-Version",)))
        assert (error.status, str(error)) == (400, VERSION_MISSING_MESSAGE)
        assert ("Sec-WebSocket-Version", "13") in error.headers

    @pytest.mark.parametrize("version", ["8", "7", "12", "14", "13, 8", "abc", ""])
    def test_unsupported_version_is_426(self, version: str) -> None:
        error = rejected(request_headers(Sec_WebSocket_Version=version))
        assert error.status == 426
        assert error.headers == [("Sec-WebSocket-Version", "13")]
        assert "version 13" in str(error)

    def test_version_8_message(self) -> None:
        error = rejected(request_headers(Sec_WebSocket_Version="8"))
        assert str(error) == (
            "Unsupported WebSocket version '8': this server speaks version 13 (RFC 6455 §4.4)"
        )

    def test_repeated_version_headers(self) -> None:
        headers = [*request_headers().items(), ("Sec-WebSocket-Version", "8")]
        assert rejected(headers).status == 426

    def test_version_13_with_whitespace(self) -> None:
        headers = request_headers(Sec_WebSocket_Version=" 13 ")
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY

    def test_426_response_carries_the_version(self) -> None:
        error = rejected(request_headers(Sec_WebSocket_Version="8"))
        status_line, headers, body = parse_response(rejection_for(error))
        assert status_line == "HTTP/1.1 426 Upgrade Required"
        assert ("Sec-WebSocket-Version", "13") in headers
        assert body == str(error).encode("utf-8")


class TestRejectResponse:
    def test_status_line_and_headers(self) -> None:
        status_line, headers, body = parse_response(reject_response(400, "bad request"))
        assert status_line == "HTTP/1.1 400 Bad Request"
        assert ("Connection", "close") in headers
        assert ("Content-Type", "text/plain; charset=utf-8") in headers
        assert ("Content-Length", "11") in headers
        assert body == b"bad request"

    def test_exact_bytes(self) -> None:
        assert reject_response(405, "no", [("Allow", "GET")]) == (
            b"HTTP/1.1 405 Method Not Allowed\r\n"
            b"Connection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 2\r\n"
            b"Allow: GET\r\n"
            b"\r\n"
            b"no"
        )

    def test_content_length_counts_utf8_bytes(self) -> None:
        message = "RFC 6455 §4.1 — ünïcode"
        _, headers, body = parse_response(reject_response(400, message))
        assert body.decode("utf-8") == message
        assert dict(headers)["Content-Length"] == str(len(message.encode("utf-8")))
        assert len(body) > len(message)

    def test_empty_body(self) -> None:
        data = reject_response(403, "")
        assert data.endswith(b"Content-Length: 0\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n")

    def test_unknown_status_phrase(self) -> None:
        assert reject_response(599, "x").startswith(b"HTTP/1.1 599 Error\r\n")

    @pytest.mark.parametrize(
        ("headers", "status", "extra"),
        [
            (request_headers(omit=("Upgrade",)), 400, []),
            (request_headers(Sec_WebSocket_Version="8"), 426, [("Sec-WebSocket-Version", "13")]),
        ],
    )
    def test_rejection_for_errors(
        self, headers: dict[str, str], status: int, extra: list[tuple[str, str]]
    ) -> None:
        error = rejected(headers)
        status_line, response_headers, body = parse_response(rejection_for(error))
        assert status_line.startswith(f"HTTP/1.1 {status} ")
        assert response_headers[:3] == [
            ("Connection", "close"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        assert response_headers[3:] == extra
        assert body.decode("utf-8") == str(error)

    def test_rejection_for_405(self) -> None:
        error = rejected(request_headers(), method="POST")
        status_line, headers, _ = parse_response(rejection_for(error))
        assert status_line == "HTTP/1.1 405 Method Not Allowed"
        assert headers[-1] == ("Allow", "GET")


class TestRejectionRenderer:
    """The one renderer of a refusal: raw bytes, a WSGI server's answer, and an application's."""

    def test_fields(self) -> None:
        answer = rejection(426, "use 13", [("Sec-WebSocket-Version", "13")])
        assert answer == Rejection(
            "426 Upgrade Required",
            [
                ("Connection", "close"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", "6"),
                ("Sec-WebSocket-Version", "13"),
            ],
            b"use 13",
        )

    def test_raw_bytes_are_built_from_the_fields(self) -> None:
        answer = rejection(405, "no", [("Allow", "GET")])
        assert answer.to_bytes() == reject_response(405, "no", [("Allow", "GET")])
        assert answer.to_bytes().startswith(b"HTTP/1.1 " + answer.status_line.encode() + b"\r\n")

    def test_for_an_error(self) -> None:
        error = rejected(request_headers(Sec_WebSocket_Version="8"))
        answer = Rejection.for_error(error)
        assert answer.status_line == "426 Upgrade Required"
        assert answer.body == str(error).encode("utf-8")
        assert answer.to_bytes() == rejection_for(error)

    def test_app_headers_leave_connection_and_length_to_the_server(self) -> None:
        # PEP 3333: Connection is hop-by-hop, the server's; the framework sets Content-Length.
        answer = rejection(403, "no", [("X-Why", "origin")])
        assert answer.app_headers == [("Content-Type", "text/plain; charset=utf-8"), ("X-Why", "origin")]


class TestRfc9110Section7_8UpgradeRequest:
    """An upgrade is requested by an Upgrade header listed in Connection (RFC 9110 §7.8)."""

    @pytest.mark.parametrize(
        ("upgrade", "connection"),
        [
            ("websocket", "Upgrade"),
            ("WebSocket", "upgrade"),
            ("h2c, websocket", "keep-alive, Upgrade"),
            ("line-echo", "Upgrade, close"),
            ("", "upgrade"),  # an empty Upgrade still asks for one: validate_request refuses it
        ],
    )
    def test_requested(self, upgrade: str, connection: str) -> None:
        assert is_upgrade_request(upgrade, connection)

    @pytest.mark.parametrize(
        ("upgrade", "connection"),
        [(None, "Upgrade"), ("websocket", None), ("websocket", ""), ("websocket", "keep-alive"), (None, "")],
    )
    def test_not_requested(self, upgrade: str | None, connection: str | None) -> None:
        assert not is_upgrade_request(upgrade, connection)

    @pytest.mark.parametrize(
        ("upgrade", "expected"),
        [
            ("websocket", True),
            ("WEBSOCKET", True),
            ("h2c, websocket", True),
            ("line-echo", False),
            ("", False),
        ],
    )
    def test_restricted_to_a_protocol(self, upgrade: str, expected: bool) -> None:
        # RFC 6455 §4.2.1: "websocket", compared case-insensitively.
        assert is_upgrade_request(upgrade, "Upgrade", "websocket") is expected
        assert is_upgrade_request(upgrade, "Upgrade", "WebSocket") is expected

    def test_validate_request_agrees(self) -> None:
        headers = request_headers(Upgrade="h2c, WebSocket", Connection="keep-alive, upgrade")
        assert is_upgrade_request(headers["Upgrade"], headers["Connection"], "websocket")
        assert validate_request("GET", "HTTP/1.1", headers).key == RFC_KEY
