"""The validator against a generated corpus of forged and mutated tokens (tests/gateway/corpus.py).

Zero accepted, and nothing but TokenRejectedError with a TokenRejection reason, for every
hostile token; every valid token accepted. Real cryptography throughout; only the clock is
frozen.
"""

from collections import Counter
from typing import cast

import pytest

from citykey_protocol.codes import TokenRejection
from lock_gateway.keys import KeySet
from lock_gateway.replay import ReplayGuard
from lock_gateway.validator import TokenRejectedError, TokenValidator
from tests.gateway.corpus import (
    KID,
    LEEWAY,
    NOW,
    ROTATED_KID,
    Case,
    Corpus,
    build_corpus,
    make_validator,
    malleated,
)

REQUIRED_CATEGORIES = {
    "alg_none",
    "alg_hmac",
    "other_alg",
    "kid",
    "header_member",
    "typ",
    "bit_flip_header",
    "bit_flip_claims",
    "bit_flip_signature",
    "char_flip",
    "truncated",
    "segments",
    "bad_base64",
    "duplicate_member",
    "non_object_json",
    "claim_missing",
    "claim_type",
    "claim_huge",
    "wrong_iss",
    "wrong_aud",
    "wrong_door",
    "expired",
    "not_yet_valid",
    "lifetime",
    "huge",
    "signature_length",
    "signature_value",
    "impostor_key",
    "not_text",
}


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus()


def outcome(validator: TokenValidator, case: Case) -> TokenRejection | None:
    """The refusal reason, or None when the token was accepted. Other exceptions propagate."""
    try:
        validator.validate(cast(str, case.token))  # a few cases are deliberately not text
    except TokenRejectedError as exc:
        reason = exc.reason
    else:
        return None
    assert isinstance(reason, TokenRejection)
    return reason


def run_cases(validator: TokenValidator, cases: tuple[Case, ...]) -> list[str]:
    """Validate every case; describe each that was accepted, crashed or had the wrong reason."""
    problems: list[str] = []
    for case in cases:
        try:
            reason = outcome(validator, case)
        except Exception as exc:  # the whole point: nothing but TokenRejectedError
            problems.append(f"{case.category}: raised {type(exc).__name__}: {exc}")
            continue
        if reason is None:
            problems.append(f"{case.category}: ACCEPTED {case.token!r:.120}")
        elif case.reasons is not None and reason not in case.reasons:
            problems.append(f"{case.category}: {reason.value}, expected one of {case.reasons}")
    return problems


def test_corpus_is_large_and_covers_every_attack(corpus: Corpus) -> None:
    assert len(corpus.hostile) >= 10_000
    assert corpus.categories >= REQUIRED_CATEGORIES
    assert len(corpus.valid) >= 50
    assert len(corpus.resigned) > 0


def test_corpus_is_deterministic(corpus: Corpus) -> None:
    again = build_corpus.__wrapped__()  # bypass the cache: generate from the seed once more
    # PyJWT-minted valid tokens use random nonces and RSA keys are random; everything else,
    # including every hostile token built from our own deterministic ECDSA, repeats exactly.
    stable = {"other_alg"}
    first = [case.token for case in corpus.hostile if case.category not in stable]
    second = [case.token for case in again.hostile if case.category not in stable]
    assert first == second


def test_every_valid_token_is_accepted(corpus: Corpus) -> None:
    validator = make_validator(corpus.key_set())
    for token in corpus.valid:
        claims = validator.validate(token)
        assert claims.aud == "gw-lib-grunerlokka"


def test_no_hostile_token_is_accepted(corpus: Corpus) -> None:
    validator = make_validator(corpus.key_set())
    problems = run_cases(validator, corpus.hostile)
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:20])


def test_no_hostile_token_is_accepted_after_the_valid_ones(corpus: Corpus) -> None:
    """Same, once the gateway has state: the header cache is warm, the replay store full."""
    validator = make_validator(corpus.key_set())
    for token in corpus.valid:
        validator.validate(token)
    problems = run_cases(validator, corpus.hostile + corpus.after_valid)
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:20])


def test_refusal_reasons_are_spread_not_one_catch_all(corpus: Corpus) -> None:
    validator = make_validator(corpus.key_set())
    reasons = Counter(outcome(validator, case) for case in corpus.hostile)
    assert None not in reasons
    # Every token-level rejection code is exercised by the corpus.
    expected = set(TokenRejection) - {
        TokenRejection.DOOR_MISMATCH,  # decided by the daemon, not the validator
        TokenRejection.REPLAYED,  # covered by after_valid
        TokenRejection.REPLAY_STORE_FULL,  # tests/gateway/test_replay.py
        TokenRejection.REPLAY_STORE_ERROR,  # tests/gateway/test_replay.py
    }
    assert expected <= set(reasons)


def test_malleated_signature_cannot_open_twice(corpus: Corpus) -> None:
    """(r, s) and (r, n - s) both verify: the jti, not the signature, makes a token single-use."""
    validator = make_validator(corpus.key_set())
    for token in corpus.valid[:10]:
        text = token.decode() if isinstance(token, bytes) else token
        twin = malleated(text)
        assert twin != text
        validator.validate(twin)  # the other valid signature, first use of the jti: accepted
        with pytest.raises(TokenRejectedError) as refused:
            validator.validate(text)
        assert refused.value.reason is TokenRejection.REPLAYED


def test_cheap_refusals_come_before_the_signature(corpus: Corpus) -> None:
    """Refused for their own defect, not for the signature, even when it would not verify.

    The gateway here trusts the impostor's key under both kids, so every token signed by the
    real key would fail the signature check; a cheap defect must be reported first.
    """
    impostor_keys = KeySet({KID: corpus.impostor, ROTATED_KID: corpus.impostor})
    cheap_categories = {
        "alg_none",
        "kid",
        "header_member",
        "typ",
        "duplicate_member",
        "non_object_json",
        "claim_missing",
        "claim_type",
        "wrong_iss",
        "wrong_aud",
        "wrong_door",
        "expired",
        "not_yet_valid",
        "lifetime",
        "time_order",
        "dur",
        "jti",
        "huge",
        "signature_length",
        "segments",
        "bad_base64",
        "truncated",
        "not_text",
    }
    validator = make_validator(impostor_keys)
    checked = 0
    for case in corpus.hostile:
        if case.category in cheap_categories and case.reasons is not None:
            reason = outcome(validator, case)
            assert reason is not TokenRejection.BAD_SIGNATURE, case
            assert reason in case.reasons, case
            checked += 1
    assert checked > 3000
    # A replay is also refused before the signature: trust the real keys, accept a token, then
    # present it to a validator that shares the replay store but trusts only the impostor.
    guard = ReplayGuard(leeway=LEEWAY)
    token = corpus.valid[0]
    make_validator(corpus.key_set(), guard=guard).validate(token)
    with pytest.raises(TokenRejectedError) as refused:
        make_validator(impostor_keys, guard=guard).validate(token)
    assert refused.value.reason is TokenRejection.REPLAYED


def test_forged_token_does_not_use_up_a_real_jti(corpus: Corpus) -> None:
    """A token whose signature fails leaves its jti free for the real token."""
    validator = make_validator(corpus.key_set())
    token = corpus.valid[-1]
    text = token.decode() if isinstance(token, bytes) else token
    forged = text[:-86] + ("B" if text[-86] == "A" else "A") + text[-85:]
    with pytest.raises(TokenRejectedError) as refused:
        validator.validate(forged)
    assert refused.value.reason is TokenRejection.BAD_SIGNATURE
    assert validator.validate(token).jti


def test_key_removed_from_the_key_set_stops_cached_headers(corpus: Corpus) -> None:
    keys = corpus.key_set()
    validator = make_validator(keys)
    validator.validate(corpus.valid[0])  # header now cached
    keys.replace({ROTATED_KID: corpus.trusted[ROTATED_KID]})
    with pytest.raises(TokenRejectedError) as refused:
        validator.validate(corpus.valid[1])
    assert refused.value.reason is TokenRejection.UNKNOWN_KEY


def test_same_token_str_or_bytes_same_verdict(corpus: Corpus) -> None:
    for case in corpus.hostile[:: max(1, len(corpus.hostile) // 2000)]:
        if not isinstance(case.token, str) or not case.token.isascii():
            continue
        as_text = outcome(make_validator(corpus.key_set()), case)
        as_bytes = outcome(
            make_validator(corpus.key_set()), Case(case.category, case.token.encode())
        )
        assert as_text == as_bytes, case


def test_clock_decides_expiry(corpus: Corpus) -> None:
    token = corpus.valid[0]
    late = make_validator(corpus.key_set(), now=NOW + 30 + LEEWAY)
    with pytest.raises(TokenRejectedError) as refused:
        late.validate(token)
    assert refused.value.reason is TokenRejection.EXPIRED
    assert make_validator(corpus.key_set(), now=NOW + 30 + LEEWAY - 1).validate(token)
