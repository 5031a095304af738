"""Differential test: the gateway's own validator against PyJWT under the same policy.

Every corpus token (valid, hostile, replays, re-signed mutations) goes through both, in the same
order, each with its own replay memory, and they must agree on accept or refuse for every one.

PyJWT is a general JWT library and more lenient than the gateway's policy in several places.
``reference_validate`` wraps it and enforces the documented policy explicitly where PyJWT does
not; it never relies on the fast validator's code. The fast validator is never loosened to
match PyJWT.
"""

import base64
import json
import re
from collections.abc import Iterator
from datetime import datetime, tzinfo
from typing import Any, cast

import jwt
import jwt.api_jwt
import pytest

from citykey_protocol.claims import MAX_TOKEN_BYTES, UNLOCK_TOKEN_TYPE
from lock_gateway.keys import KeySet
from lock_gateway.validator import MAX_UNLOCK_SECONDS, TokenRejectedError
from tests.gateway.corpus import (
    DOORS,
    GATEWAY,
    ISSUER,
    LEEWAY,
    MAX_LIFETIME,
    NOW,
    Corpus,
    build_corpus,
    make_validator,
)

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_HEADER_MEMBERS = {"alg", "kid", "typ"}
_STRING_CLAIMS = ("iss", "aud", "sub", "door", "jti")
_INTEGER_CLAIMS = ("dur", "iat", "nbf", "exp")


class ReferenceRefusalError(Exception):
    """The reference validator refuses the token."""


def _strict_b64url(segment: str) -> bytes:
    # PyJWT's base64url_decode pads and calls urlsafe_b64decode, which silently drops any
    # character outside the alphabet (blanks, '+', '/', '=', '*' ...) and ignores unused bits
    # in the last character, so many spellings decode to one token. Policy (RFC 7515 §2,
    # RFC 4648 §3.5): the URL-safe alphabet only, no padding, the canonical spelling only.
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ReferenceRefusalError("not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
        raise ReferenceRefusalError("non-canonical base64url")
    return data


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise ReferenceRefusalError("duplicate member name")
    return members


def _no_constant(name: str) -> object:
    raise ReferenceRefusalError(f"{name} is not JSON")


def _strings(value: object) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _i_json(data: bytes) -> object:
    # PyJWT calls json.loads on the bytes, which guesses UTF-16/32 from the first bytes,
    # accepts a BOM, keeps the last of duplicate names, takes NaN and Infinity, and allows
    # lone surrogates from \u escapes. Policy: I-JSON (RFC 7493): UTF-8, no duplicate names,
    # no lone surrogates; and RFC 8259 JSON, which has no NaN or Infinity.
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ReferenceRefusalError(f"not I-JSON: {exc}") from exc
    for string in _strings(value):
        try:
            string.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ReferenceRefusalError("lone surrogate") from exc
    return value


def reference_validate(token: object, keys: KeySet, seen: set[str]) -> dict[str, Any]:
    """PyJWT's jwt.decode, wrapped so that it applies the gateway's documented policy.

    Raises ReferenceRefusalError for every token the policy refuses; on acceptance records the
    jti in ``seen``. PyJWT's clock must be frozen at NOW (see the fixture below).
    """
    # PyJWT takes str or bytes of any size and content; policy: ASCII text, at most
    # MAX_TOKEN_BYTES.
    if isinstance(token, bytes):
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise ReferenceRefusalError("too long or not ASCII")
        text = token.decode("ascii")
    elif isinstance(token, str):
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise ReferenceRefusalError("too long or not ASCII")
        text = token
    else:
        raise ReferenceRefusalError("not text")
    segments = text.split(".")
    if len(segments) != 3:
        raise ReferenceRefusalError("not three segments")
    header = _i_json(_strict_b64url(segments[0]))
    claims = _i_json(_strict_b64url(segments[1]))
    _strict_b64url(segments[2])  # PyJWT checks the signature's length, not its spelling
    # PyJWT accepts any header members (it even implements "crit": ["b64"]) and has no notion
    # of typ. Policy: exactly {alg, kid, typ}, all strings, typ = the unlock type.
    if not isinstance(header, dict) or set(header) != _HEADER_MEMBERS:
        raise ReferenceRefusalError("header members")
    if not all(isinstance(header[name], str) for name in _HEADER_MEMBERS):
        raise ReferenceRefusalError("header member types")
    if header["typ"] != UNLOCK_TOKEN_TYPE:
        raise ReferenceRefusalError("typ")
    key = keys.get(header["kid"])
    if key is None:
        raise ReferenceRefusalError("unknown kid")
    # PyJWT cannot require a claim's JSON type; checked here before it runs, so that it never
    # sees, say, an exp of "1800000000" (which its int() conversion would accept).
    if not isinstance(claims, dict):
        raise ReferenceRefusalError("claims are not an object")
    for name in _STRING_CLAIMS:
        if not isinstance(claims.get(name), str):
            raise ReferenceRefusalError(f"{name} is not a string")
    for name in _INTEGER_CLAIMS:
        # type() rather than isinstance(): a JSON true is a Python bool, which is an int.
        if type(claims.get(name)) is not int:
            raise ReferenceRefusalError(f"{name} is not an integer")
    try:
        payload = jwt.decode(
            text,
            key,
            algorithms=["ES256"],
            audience=GATEWAY,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={
                "require": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"],
                "strict_aud": True,  # aud must be this gateway's id as a string, not a list
            },
        )
    except jwt.PyJWTError as exc:
        raise ReferenceRefusalError(f"PyJWT: {exc}") from exc
    assert payload == claims
    # Policy PyJWT has no option for.
    if payload["door"] not in DOORS:
        raise ReferenceRefusalError("door")
    if payload["exp"] - payload["iat"] > MAX_LIFETIME:
        raise ReferenceRefusalError("lifetime")
    if not payload["iat"] <= payload["nbf"] <= payload["exp"]:
        raise ReferenceRefusalError("nbf outside [iat, exp]")
    if not 0 < payload["dur"] <= MAX_UNLOCK_SECONDS or not payload["jti"]:
        raise ReferenceRefusalError("dur or jti")
    if payload["jti"] in seen:
        raise ReferenceRefusalError("replayed")
    seen.add(payload["jti"])
    return payload


class _FrozenDatetime(datetime):
    """datetime whose now() is the corpus's NOW."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> "_FrozenDatetime":
        return cls.fromtimestamp(NOW, tz)


@pytest.fixture
def pyjwt_at_corpus_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyJWT reads the wall clock (datetime.now) and takes no clock argument. Its own exp, nbf
    # and iat checks are kept, not re-implemented, by freezing the datetime it uses.
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus()


def fast_accepts(validator_call: Any, token: object) -> bool:
    try:
        validator_call(cast(str, token))
    except TokenRejectedError:
        return False
    return True


def reference_accepts(token: object, keys: KeySet, seen: set[str]) -> bool:
    try:
        reference_validate(token, keys, seen)
    except ReferenceRefusalError:
        return False
    return True


@pytest.mark.usefixtures("pyjwt_at_corpus_time")
def test_reference_accepts_the_valid_tokens(corpus: Corpus) -> None:
    seen: set[str] = set()
    for token in corpus.valid:
        reference_validate(token, corpus.key_set(), seen)


@pytest.mark.usefixtures("pyjwt_at_corpus_time")
def test_fast_validator_and_pyjwt_agree_on_every_token(corpus: Corpus) -> None:
    keys = corpus.key_set()
    fast = make_validator(keys)
    seen: set[str] = set()
    sequence: list[tuple[str, object]] = [("valid", token) for token in corpus.valid]
    sequence += [(case.category, case.token) for case in corpus.hostile + corpus.after_valid]
    sequence += [("resigned", token) for token in corpus.resigned]
    disagreements: list[str] = []
    accepted = {"valid": 0, "resigned": 0}
    for category, token in sequence:
        ours = fast_accepts(fast.validate, token)
        theirs = reference_accepts(token, keys, seen)
        if ours != theirs:
            verdict = (
                "fast accepts, reference refuses" if ours else "fast refuses, reference accepts"
            )
            disagreements.append(f"{category}: {verdict}: {token!r:.200}")
        elif ours and category in accepted:
            accepted[category] += 1
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(
        disagreements[:20]
    )
    # Sanity: the comparison covered both verdicts, including among the random mutations.
    assert accepted["valid"] == len(corpus.valid)
    assert 0 < accepted["resigned"] < len(corpus.resigned)
