"""Benchmark: the gateway's unlock-token validation against raw ES256 and PyJWT.

Run: .venv/bin/python bench/validator.py   (about 10-20 s, no services needed)

Prints, for one set of valid tokens minted by the real issuer code (api.keys.keyring through
api.unlock.tokens), the median and p99 cost in microseconds of:

- raw:     the bare signature check, ``public_key.verify(der_sig, signing_input, ECDSA(SHA256))``
           on inputs prepared in advance, with the ECDSA(SHA256) object built once, as the
           validator does (the floor for any ES256 validator);
- pyjwt:   PyJWT doing the same job as the gateway validator: ``jwt.get_unverified_header``
           to pick the key by kid and check typ (a gateway trusts several keys during a
           rotation, so it cannot hand ``jwt.decode`` a key without reading the kid first),
           then ``jwt.decode`` with algorithms=["ES256"], audience, issuer, leeway,
           exp/iat/nbf/jti/iss/aud/sub required and strict audience, then the checks PyJWT has
           no option for (door, dur, lifetime, replay set);
- pyjwt decode only: the bare ``jwt.decode`` call above with the key handed to it, for
           reference (it checks less than the validator does);
- citykey: ``TokenValidator.validate``, everything included (parsing, claims, replay record);

then the ratios citykey/raw and pyjwt/citykey, validations per second on one core, and the
median cost of typical refusals, which must not include a signature check.

Method: every token is measured by all three, one right after the other, in an order that
rotates from token to token, so that machine noise (other processes, frequency changes, cache
pollution) hits the three alike. A warm-up round runs first; the garbage collector is paused
while timing. Replay: each measured round uses a fresh ReplayGuard (and validator), so every
token is new to the guard it meets, and the cost of recording its jti is part of the figure.
"""

import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from api.keys.keyring import KeyRing, KeyState, SigningKey, generate_private_key
from api.unlock.tokens import UnlockTokenMinter
from citykey_protocol.claims import UNLOCK_TOKEN_TYPE
from lock_gateway.keys import KeySet
from lock_gateway.replay import REPLAY_DB_FILE, ReplayGuard
from lock_gateway.validator import TokenRejectedError, TokenValidator

ISSUER = "https://citykey.example.org"
GATEWAY = "gw-deichman-grunerlokka"
DOORS = ("main-entrance", "staff-door")
LEEWAY = 5.0
LIFETIME = 120  # the longest the policy allows, so PyJWT's wall clock never expires them mid-run
TOKENS = 2000
ROUNDS = 5
WARMUP = 400
REFUSAL_REPEATS = 3000
PERSISTED = 500

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def median_p99(samples_ns: list[int]) -> tuple[float, float]:
    """Median and 99th percentile, in microseconds."""
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) / 1000, p99 / 1000


def raw_inputs(token: str) -> tuple[bytes, bytes]:
    """(DER signature, signing input) of a token, prepared outside the timed region."""
    signing_input, _, signature_b64 = token.encode().rpartition(b".")
    signature = jwt.utils.base64url_decode(signature_b64)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    return der, signing_input


def new_validator(
    keys: KeySet, clock: Callable[[], float], guard: ReplayGuard | None = None
) -> TokenValidator:
    """A validator with ``guard``, by default a fresh, in-memory replay guard."""
    return TokenValidator(
        keys=keys,
        issuer=ISSUER,
        gateway_id=GATEWAY,
        doors=DOORS,
        replay_guard=guard if guard is not None else ReplayGuard(leeway=LEEWAY),
        leeway=LEEWAY,
        max_lifetime=120.0,
        clock=clock,
    )


def time_refusal(validator: TokenValidator, token: str) -> float:
    """Median cost in microseconds of refusing ``token`` (which must be refused)."""
    samples: list[int] = []
    perf = time.perf_counter_ns
    for _ in range(REFUSAL_REPEATS):
        start = perf()
        try:
            validator.validate(token)
        except TokenRejectedError:
            pass
        else:
            raise SystemExit(f"bench: expected a refusal for {token[:40]}...")
        samples.append(perf() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    """Mint tokens, measure, print."""
    kid = "k-bench"
    private_key = generate_private_key()
    ring = KeyRing([SigningKey(kid, KeyState.ACTIVE, private_key)])
    keys = KeySet.from_jwks(ring.jwks())  # the gateway's path: from the published JWKS
    public_key = keys.get(kid)
    assert public_key is not None

    # The clock is frozen at minting time so tokens cannot expire during the run, however
    # slow the machine; PyJWT reads the wall clock, which stays well inside the lifetime.
    now = time.time()
    minter = UnlockTokenMinter(ring, ISSUER, LIFETIME, clock=lambda: now)
    tokens = [
        minter.mint(gateway_id=GATEWAY, door_id=DOORS[i % 2], subject=f"u_{i:016x}", seconds=5)[0]
        for i in range(TOKENS + WARMUP)
    ]
    prepared = [raw_inputs(token) for token in tokens]

    def raw(i: int) -> None:
        der, signing_input = prepared[i]
        public_key.verify(der, signing_input, _ECDSA_SHA256)

    decode_options: jwt.types.Options = {
        "require": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"],
        "strict_aud": True,
    }
    pyjwt_seen: set[str] = set()

    def pyjwt_decode_only(i: int) -> None:
        jwt.decode(
            tokens[i],
            public_key,
            algorithms=["ES256"],
            audience=GATEWAY,
            issuer=ISSUER,
            leeway=LEEWAY,
            options=decode_options,
        )

    def pyjwt(i: int) -> None:
        token = tokens[i]
        header = jwt.get_unverified_header(token)
        key = keys.get(header["kid"])
        if key is None or header.get("typ") != UNLOCK_TOKEN_TYPE:
            raise SystemExit("bench: PyJWT path refused a valid token")
        claims = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=GATEWAY,
            issuer=ISSUER,
            leeway=LEEWAY,
            options=decode_options,
        )
        jti = claims["jti"]
        if (
            claims["door"] not in DOORS
            or not 0 < claims["dur"] <= 3600
            or claims["exp"] - claims["iat"] > 120
            or jti in pyjwt_seen
        ):
            raise SystemExit("bench: PyJWT path refused a valid token")
        pyjwt_seen.add(jti)

    validator = new_validator(keys, lambda: now)

    def citykey(i: int) -> None:
        validator.validate(tokens[i])

    contenders: dict[str, Callable[[int], None]] = {
        "raw": raw,
        "pyjwt": pyjwt,
        "pyjwt_decode_only": pyjwt_decode_only,
        "citykey": citykey,
    }
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    orders = list(itertools.permutations(contenders))
    perf = time.perf_counter_ns

    def run(indices: range, record: bool) -> None:
        for i in indices:
            for name in orders[i % len(orders)]:
                function = contenders[name]
                start = perf()
                function(i)
                elapsed = perf() - start
                if record:
                    samples[name].append(elapsed)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    run(range(TOKENS, TOKENS + WARMUP), record=False)
    for _ in range(ROUNDS):
        validator = new_validator(keys, lambda: now)  # fresh guard: see the module docstring
        pyjwt_seen.clear()  # likewise for the PyJWT path's replay set
        gc.collect()
        gc.disable()
        try:
            run(range(TOKENS), record=True)
        finally:
            gc.enable()

    # Throughput on one core: back-to-back validations of fresh tokens, nothing interleaved.
    validator = new_validator(keys, lambda: now)
    gc.collect()
    gc.disable()
    loop_start = perf()
    for token in tokens[:TOKENS]:
        validator.validate(token)
    loop_ns = perf() - loop_start
    gc.enable()

    # The production set-up with --state-dir: every accepted jti is also committed to SQLite.
    # Compared with the in-memory guard on the same tokens, the two interleaved.
    with tempfile.TemporaryDirectory() as state_dir:
        guard = ReplayGuard(leeway=LEEWAY, path=Path(state_dir) / REPLAY_DB_FILE, now=now)
        persistent = new_validator(keys, lambda: now, guard)
        in_memory = new_validator(keys, lambda: now)
        store_ns: dict[str, list[int]] = {"memory": [], "sqlite": []}
        for i, token in enumerate(tokens[:PERSISTED]):
            pair = (("memory", in_memory), ("sqlite", persistent))
            for name, contender in pair if i % 2 else pair[::-1]:
                start = perf()
                contender.validate(token)
                store_ns[name].append(perf() - start)
        guard.close()

    # Refusals. The validator above has seen every token, so the first one is a replay.
    replayed = tokens[0]
    malformed = tokens[1][:-1]  # one character short: not a compact ES256 JWS
    bad_char = tokens[2].replace(".", ".*", 1)  # junk in the claims segment
    expired_validator = new_validator(keys, lambda: now + LIFETIME + LEEWAY + 1)
    header, claims, _ = tokens[3].split(".")
    # Fresh and well-formed, with a signature that is in range but belongs to another token,
    # so OpenSSL does the whole computation before refusing it.
    forged = f"{header}.{claims}.{tokens[5].rpartition('.')[2]}"
    fresh = new_validator(keys, lambda: now)
    refusals = {
        "refused replay": time_refusal(validator, replayed),
        "refused malformed (truncated)": time_refusal(validator, malformed),
        "refused malformed (bad base64url)": time_refusal(validator, bad_char),
        "refused expired": time_refusal(expired_validator, tokens[4]),
        "refused bad signature (full check)": time_refusal(fresh, forged),
    }
    elapsed = time.perf_counter() - started

    stats = {name: median_p99(values) for name, values in samples.items()}
    print(f"citykey validator benchmark: {TOKENS} ES256 tokens x {ROUNDS} rounds, interleaved")
    print(
        f"python {sys.version.split()[0]}, pyjwt {jwt.__version__}, cpus {os.cpu_count()}, "
        f"run {elapsed:.1f} s, load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} "
        "(other busy processes skew Python-heavy code more than OpenSSL)"
    )
    print()
    print(f"{'':34s}{'median us':>12s}{'p99 us':>12s}")
    labels = {
        "raw": "raw ES256 verify",
        "pyjwt": "PyJWT, equivalent checks",
        "pyjwt_decode_only": "PyJWT jwt.decode alone",
        "citykey": "citykey TokenValidator",
    }
    for name, label in labels.items():
        median, p99 = stats[name]
        print(f"{label:34s}{median:12.1f}{p99:12.1f}")
    print()
    raw_median, pyjwt_median, citykey_median = (stats[n][0] for n in ("raw", "pyjwt", "citykey"))
    print(f"{'citykey / raw':34s}{citykey_median / raw_median:12.3f}   (target <= 1.15)")
    print(f"{'pyjwt / citykey':34s}{pyjwt_median / citykey_median:12.3f}   (target >= 1.6)")
    print(f"{'validations/s/core (from median)':34s}{1e6 / citykey_median:12.0f}")
    print(f"{'validations/s/core (tight loop)':34s}{TOKENS / (loop_ns / 1e9):12.0f}")
    memory_median = statistics.median(store_ns["memory"]) / 1000
    sqlite_median = statistics.median(store_ns["sqlite"]) / 1000
    print(
        f"{'SQLite replay store adds':34s}{sqlite_median - memory_median:12.1f}"
        f"   us median ({memory_median:.1f} -> {sqlite_median:.1f}; WAL, synchronous=NORMAL)"
    )
    print()
    for label, median in refusals.items():
        print(f"{label:34s}{median:12.2f} us median")


if __name__ == "__main__":
    main()
