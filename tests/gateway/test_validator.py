"""Unit tests of the validator's building blocks (the corpus tests cover the whole)."""

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from citykey_protocol.codes import TokenRejection
from lock_gateway.validator import TokenRejectedError, _der_signature
from tests.gateway.corpus import (
    KID,
    P256_ORDER,
    Corpus,
    build_corpus,
    make_validator,
    token_factory,
)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus()


def test_der_signature_matches_cryptography() -> None:
    rng = random.Random(7)
    top = 2**256 - 1
    edges = [0, 1, 0x7F, 0x80, 0xFF, 2**255 - 1, 2**255, P256_ORDER - 1, P256_ORDER, top]
    pairs = [(r, s) for r in edges for s in edges]
    pairs += [(rng.getrandbits(256), rng.getrandbits(256)) for _ in range(5000)]
    # Many leading zero bytes and high bits: the cases where minimal DER differs from raw.
    pairs += [
        (rng.getrandbits(rng.randrange(257)), rng.getrandbits(rng.randrange(257)))
        for _ in range(5000)
    ]
    for r, s in pairs:
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert _der_signature(raw) == encode_dss_signature(r, s), (r, s)


def test_header_cache_stays_bounded_and_right(corpus: Corpus) -> None:
    builder = token_factory(11)
    validator = make_validator(corpus.key_set())
    for blanks in range(200):
        # 200 spellings of a good header (all legal JSON): every one accepted, cache bounded.
        header = f'{{"alg":"ES256","kid":"{KID}",{" " * blanks}"typ":"{UNLOCK_TOKEN_TYPE}"}}'
        assert len(header) < 300
        assert validator.validate(builder.token(header=header.encode())).jti
    assert len(validator._kid_by_header) <= 64


def test_unknown_kids_are_not_cached(corpus: Corpus) -> None:
    builder = token_factory(12)
    validator = make_validator(corpus.key_set())
    for i in range(100):
        token = builder.token(header={"alg": "ES256", "kid": f"k-{i}", "typ": UNLOCK_TOKEN_TYPE})
        with pytest.raises(TokenRejectedError) as refused:
            validator.validate(token)
        assert refused.value.reason is TokenRejection.UNKNOWN_KEY
    assert not validator._kid_by_header
