"""The ``Origin`` check (RFC 6454 §6.2 serialisation, RFC 6455 §10.2's 403), without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from takeover.errors import HandshakeError
from takeover.options import OPTIONS_KEY, WebSocketOptions
from takeover.protocol.origin import OriginPolicy, normalize_origin, origin_policy
from takeover.upgrade import HTTPHandshakeError, upgrade_websocket

APP = "https://app.example.com"


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("https://app.example.com:80", "https://app.example.com:80"),  # not https's default
        ("http://app.example.com:443", "http://app.example.com:443"),
        ("wss://chat.example.com:443", "wss://chat.example.com"),
        ("https://example.com:0443", "https://example.com"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://[::1]:80", "http://[::1]"),
        ("http://[FE80::1]:8080", "http://[fe80::1]:8080"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("chrome-extension://abcdef", "chrome-extension://abcdef"),
        ("null", "null"),
    ],
)
def test_normalize_origin(origin: str, expected: str) -> None:
    assert normalize_origin(origin) == expected


@pytest.mark.parametrize(
    ("origin", "explanation"),
    [
        ("app.example.com", "an origin is scheme://host[:port], as 'https://app.example.com'"),
        ("//app.example.com", "an origin is scheme://host[:port]"),
        ("https://app.example.com/", "no path, query or fragment: use 'https://app.example.com'"),
        ("https://app.example.com/chat", "no path, query or fragment: use 'https://app.example.com'"),
        ("https://app.example.com?x=1", "no path, query or fragment"),
        ("https://user:pw@app.example.com", "no user name or password"),
        ("https://", "it has no host"),
        ("https://app.example.com:", "the port a number from 0 to 65535"),
        ("https://app.example.com:65536", "the port a number from 0 to 65535"),
        ("https://bücher.example", "ASCII (punycode) form"),
        ("https://a.example https://b.example", "give each origin as an item of its own"),
        ("*", "leave allowed_origins as None to allow every origin"),
        ("NULL", "is not an origin"),  # RFC 6454 §7.1 spells it in lower case
        ("", "is not an origin"),
    ],
)
def test_normalize_origin_refuses_what_is_not_an_origin(origin: str, explanation: str) -> None:
    with pytest.raises(ValueError, match=r"is not an origin") as raised:
        normalize_origin(origin)
    assert explanation in str(raised.value)


class TestOriginPolicy:
    def test_listed_origins_after_normalising(self) -> None:
        policy = origin_policy(["HTTPS://App.Example.com:443", "http://localhost:8000"])
        assert policy == OriginPolicy(origins=frozenset({APP, "http://localhost:8000"}))
        assert policy.allows(APP)
        assert policy.allows("https://APP.example.com:443")
        assert policy.allows("http://localhost:8000")
        assert not policy.allows("http://app.example.com")  # the scheme is part of the origin
        assert not policy.allows("https://app.example.com:8443")
        assert not policy.allows("https://evil.example")
        assert not policy.allows("http://localhost")
        assert not policy.allows("https://app.example.com.evil.example")

    def test_a_missing_origin_is_allowed_by_a_list(self) -> None:
        # RFC 6455 §4.1: browsers always send Origin; a client without it is not a browser.
        policy = origin_policy([APP])
        assert policy is not None
        assert policy.allows(None)
        assert not origin_policy([]).allows(APP)  # type: ignore[union-attr]
        assert origin_policy([]).allows(None)  # type: ignore[union-attr]

    def test_null_matches_only_when_listed(self) -> None:
        assert not origin_policy([APP]).allows("null")  # type: ignore[union-attr]
        assert origin_policy([APP, "null"]).allows("null")  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        "header",
        ["https://app.example.com https://evil.example", "https://app.example.com, https://evil.example",
         "https://app.example.com/", "app.example.com", "", "https://app.example.com\x00"],
    )
    def test_a_header_that_is_not_one_origin_is_refused(self, header: str) -> None:
        policy = origin_policy([APP])
        assert policy is not None
        assert not policy.allows(header)
        with pytest.raises(HandshakeError) as raised:
            policy.check(header)
        assert raised.value.status == 403

    def test_a_function_gets_the_value_as_sent_and_none(self) -> None:
        seen: list[str | None] = []

        def check(origin: str | None) -> bool:
            seen.append(origin)
            return origin is not None and origin.endswith(".example.com")

        policy = origin_policy(check)
        assert policy == OriginPolicy(function=check)
        assert policy.allows("https://a.example.com")
        assert not policy.allows(None)
        assert not policy.allows("https://evil.example")
        assert seen == ["https://a.example.com", None, "https://evil.example"]

    def test_check_raises_403_naming_the_origin_and_the_option(self) -> None:
        with pytest.raises(HandshakeError) as listed:
            origin_policy([APP]).check("https://evil.example")  # type: ignore[union-attr]
        assert listed.value.status == 403
        assert str(listed.value) == (
            "Origin 'https://evil.example' is not allowed to open a WebSocket here: "
            "add it to allowed_origins to accept WebSockets from its pages"
        )
        with pytest.raises(HandshakeError) as by_function:
            origin_policy(lambda origin: False).check(None)  # type: ignore[union-attr]
        assert by_function.value.status == 403
        assert str(by_function.value) == (
            "A WebSocket request without an Origin header is not allowed here: "
            "the allowed_origins function refused it"
        )
        origin_policy([APP]).check(APP)  # type: ignore[union-attr]

    def test_a_long_origin_is_shortened_in_the_message(self) -> None:
        with pytest.raises(HandshakeError) as raised:
            origin_policy([APP]).check("https://" + "a" * 5000)  # type: ignore[union-attr]
        assert len(str(raised.value)) < 400

    def test_none_and_policies_pass_through(self) -> None:
        assert origin_policy(None) is None
        policy = origin_policy([APP])
        assert origin_policy(policy) is policy
        assert policy is not None and policy(APP) and not policy("https://evil.example")


class TestBadArguments:
    def test_a_single_string_says_to_pass_a_list(self) -> None:
        with pytest.raises(TypeError) as raised:
            origin_policy(APP)
        assert str(raised.value) == (
            "allowed_origins must be a list of origins or a function, not a single string: "
            "write allowed_origins=['https://app.example.com']"
        )

    @pytest.mark.parametrize("value", [b"https://app.example.com", 42, [APP, 42], [APP, None]])
    def test_other_types(self, value: Any) -> None:
        with pytest.raises(TypeError, match="allowed_origins"):
            origin_policy(value)

    @pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/", "*"])
    def test_an_item_that_is_not_an_origin(self, origin: str) -> None:
        with pytest.raises(ValueError, match=r"^Invalid origin in allowed_origins: .* is not an origin"):
            origin_policy([APP, origin])


# -- upgrade_websocket, from a WSGI environ ---------------------------------------


def environ(**headers: str) -> dict[str, Any]:
    """A valid handshake request's environ, plus ``headers`` (as ``HTTP_*`` keys)."""
    env = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "app.example.com",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "wsgi.url_scheme": "https",
    }
    env.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    return env


class TestUpgradeWebsocket:
    def test_a_refused_origin_is_an_http_403(self) -> None:
        env = environ(origin="https://evil.example")
        with pytest.raises(HTTPHandshakeError) as raised:
            upgrade_websocket(env, allowed_origins=[APP])
        error = raised.value
        assert (error.status, error.code) == (403, 403)
        assert "'https://evil.example'" in error.description and "allowed_origins" in error.description
        assert "takeover.websocket" not in env  # nothing was prepared

    def test_bad_arguments_raise_whatever_the_request(self) -> None:
        # Checked before the request is looked at: an empty environ is no handshake at all.
        with pytest.raises(TypeError, match=r"write allowed_origins=\['https://app.example.com'\]"):
            upgrade_websocket({}, allowed_origins=APP)
        with pytest.raises(ValueError, match="Invalid origin in allowed_origins"):
            upgrade_websocket({}, allowed_origins=["app.example.com"])

    def test_the_environ_default_applies_and_a_call_overrides_it(self) -> None:
        env = environ(origin="https://evil.example")
        env[OPTIONS_KEY] = WebSocketOptions(allowed_origins=[APP])
        with pytest.raises(HTTPHandshakeError) as raised:
            upgrade_websocket(env)
        assert raised.value.status == 403
        # Options left there by middleware are checked and used the same way.
        env[OPTIONS_KEY] = WebSocketOptions(allowed_origins=[APP])
        with pytest.raises(HTTPHandshakeError):
            upgrade_websocket(env)
        # Refused by the call's own list even where the environ would allow it.
        env = environ(origin=APP)
        env[OPTIONS_KEY] = WebSocketOptions(allowed_origins=[APP])
        with pytest.raises(HTTPHandshakeError):
            upgrade_websocket(env, allowed_origins=["https://other.example"])

    def test_a_malformed_handshake_is_answered_before_the_origin(self) -> None:
        env = environ(origin="https://evil.example", sec_websocket_version="8")
        with pytest.raises(HTTPHandshakeError) as raised:
            upgrade_websocket(env, allowed_origins=[APP])
        assert raised.value.status == 426
