"""Replay protection: once per jti, under concurrency, across restarts, bounded, expiring."""

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from citykey_protocol.codes import AckResult, TokenRejection
from citykey_protocol.messages import UnlockCommand
from citykey_protocol.transport import BrokerAddress
from firmware_sim.lock import SimulatedLock
from lock_gateway.cli import build_parser
from lock_gateway.config import GatewayConfig
from lock_gateway.daemon import Gateway
from lock_gateway.replay import (
    REPLAY_DB_FILE,
    ReplayGuard,
    ReplayStoreError,
    ReplayStoreFullError,
)
from lock_gateway.validator import TokenRejectedError, TokenValidator
from tests.gateway.corpus import (
    DOORS,
    GATEWAY,
    ISSUER,
    LEEWAY,
    LIFETIME,
    NOW,
    Corpus,
    build_corpus,
    make_validator,
)

EXPIRY = NOW + LIFETIME


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return build_corpus()


def reason_for(validator: TokenValidator, token: str | bytes) -> TokenRejection | None:
    """None when accepted, else the refusal reason."""
    try:
        validator.validate(token)
    except TokenRejectedError as exc:
        return exc.reason
    return None


def test_thousand_replays_of_one_token_are_all_refused(corpus: Corpus) -> None:
    validator = make_validator(corpus.key_set())
    token = corpus.valid[0]
    assert reason_for(validator, token) is None
    outcomes = [reason_for(validator, token) for _ in range(1000)]
    assert outcomes == [TokenRejection.REPLAYED] * 1000


@pytest.mark.parametrize("persistent", [False, True], ids=["memory", "sqlite"])
async def test_fifty_concurrent_tasks_exactly_one_accepted(
    corpus: Corpus, tmp_path: Path, persistent: bool
) -> None:
    guard = ReplayGuard(
        leeway=LEEWAY, path=tmp_path / REPLAY_DB_FILE if persistent else None, now=NOW
    )
    validator = make_validator(corpus.key_set(), guard=guard)
    token = corpus.valid[1]
    text = token.decode() if isinstance(token, bytes) else token
    # Distinct copies (alternately str and bytes), validated in 50 threads released together,
    # so the signature checks really overlap and all 50 reach the replay store.
    copies: list[str | bytes] = ["".join(text) if i % 2 else text.encode() for i in range(50)]
    start = threading.Barrier(50)

    def validate(copy: str | bytes) -> TokenRejection | None:
        start.wait(timeout=10)
        return reason_for(validator, copy)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=50) as pool:
        tasks = [
            asyncio.ensure_future(loop.run_in_executor(pool, validate, copy)) for copy in copies
        ]
        outcomes = await asyncio.gather(*tasks)
    assert outcomes.count(None) == 1
    assert outcomes.count(TokenRejection.REPLAYED) == 49
    guard.close()


def test_guard_claim_is_atomic_across_threads() -> None:
    guard = ReplayGuard(leeway=LEEWAY)
    start = threading.Barrier(32)
    wins: list[bool] = []

    def claim() -> None:
        start.wait(timeout=10)
        for i in range(200):
            wins.append(guard.claim(f"jti-{i}", EXPIRY, NOW))

    threads = [threading.Thread(target=claim) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 200
    assert len(guard) == 200


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    # Switch threads every microsecond instead of every 5 ms, so that races show up.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize("attempt", range(5))
def test_claims_stay_exactly_once_while_pruning_runs(attempt: int) -> None:
    """Lock-free claims and locked prune-and-claim interleave; still one winner per jti."""
    guard = ReplayGuard(leeway=LEEWAY)
    # Entries that expire one after another, so that pruning is due on most claims below and
    # the locked path runs alongside the lock-free one.
    for i in range(2000):
        assert guard.claim(f"old-{i}", NOW + i * 0.01, NOW)
    start = threading.Barrier(16)
    wins: list[str] = []

    def claim(offset: int) -> None:
        start.wait(timeout=10)
        for step in range(1000):
            k = (step * 7 + offset * 131) % 1000
            now = NOW + LEEWAY + step * 0.02
            if guard.claim(f"new-{k}", now + 60, now):
                wins.append(f"new-{k}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == sorted(f"new-{k}" for k in range(1000))
    assert all(guard.seen(f"new-{k}") for k in range(1000))


def test_restarted_gateway_refuses_a_jti_seen_before(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "state" / REPLAY_DB_FILE
    first = ReplayGuard(leeway=LEEWAY, path=path, now=NOW)
    before = make_validator(corpus.key_set(), guard=first)
    token, other = corpus.valid[2], corpus.valid[3]
    assert reason_for(before, token) is None
    # No close(): the first process might have died without one.
    after = make_validator(
        corpus.key_set(), guard=ReplayGuard(leeway=LEEWAY, path=path, now=NOW + 1)
    )
    assert reason_for(after, token) is TokenRejection.REPLAYED
    assert reason_for(after, other) is None
    first.close()
    # A third start sees both.
    third = make_validator(
        corpus.key_set(), guard=ReplayGuard(leeway=LEEWAY, path=path, now=NOW + 2)
    )
    assert reason_for(third, token) is TokenRejection.REPLAYED
    assert reason_for(third, other) is TokenRejection.REPLAYED


def test_two_guards_sharing_a_file_accept_a_jti_once(tmp_path: Path) -> None:
    path = tmp_path / REPLAY_DB_FILE
    one = ReplayGuard(leeway=LEEWAY, path=path, now=NOW)
    two = ReplayGuard(leeway=LEEWAY, path=path, now=NOW)
    assert one.claim("jti-1", EXPIRY, NOW)
    assert not two.claim("jti-1", EXPIRY, NOW)  # only the file knew
    assert two.seen("jti-1")
    one.close()
    two.close()


def test_entries_expire_after_exp_plus_leeway() -> None:
    guard = ReplayGuard(leeway=LEEWAY)
    assert guard.claim("early", EXPIRY, NOW)
    assert guard.claim("late", EXPIRY + 60, NOW)
    # Until exp + leeway the token could still be valid somewhere: kept.
    guard.prune(EXPIRY + LEEWAY)
    assert guard.seen("early")
    assert len(guard) == 2
    guard.prune(EXPIRY + LEEWAY + 1)
    assert not guard.seen("early")
    assert guard.seen("late")
    # A claim prunes as it goes.
    assert guard.claim("later", EXPIRY + 120, EXPIRY + 60 + LEEWAY + 1)
    assert len(guard) == 1


def test_expired_rows_are_pruned_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / REPLAY_DB_FILE
    guard = ReplayGuard(leeway=LEEWAY, path=path, now=NOW)
    for i in range(10):
        assert guard.claim(f"old-{i}", EXPIRY, NOW)
    assert guard.claim("new", EXPIRY + 600, EXPIRY + LEEWAY + 1)  # prunes the ten
    assert len(guard) == 1
    guard.close()
    assert _rows(path) == ["new"]
    reopened = ReplayGuard(leeway=LEEWAY, path=path, now=EXPIRY + 600 + LEEWAY + 1)
    assert len(reopened) == 0
    reopened.close()
    assert _rows(path) == []


def _rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT jti FROM seen_jti ORDER BY jti")]


def test_bound_holds_and_fails_closed(corpus: Corpus) -> None:
    guard = ReplayGuard(max_entries=3, leeway=LEEWAY)
    validator = make_validator(corpus.key_set(), guard=guard)
    for token in corpus.valid[4:7]:
        assert reason_for(validator, token) is None
    fourth = corpus.valid[7]
    assert reason_for(validator, fourth) is TokenRejection.REPLAY_STORE_FULL
    assert len(guard) == 3
    # Not recorded while full: once the others have expired, it still can be used ... if it
    # has not expired itself, which is what a full store costs: the citizen asks again.
    with pytest.raises(ReplayStoreFullError):
        guard.claim("one-more", EXPIRY, NOW)
    assert len(guard) == 3
    guard.prune(EXPIRY + LEEWAY + 1)
    assert len(guard) == 0
    assert guard.claim("one-more", EXPIRY + 600, EXPIRY + LEEWAY + 1)


def test_full_store_still_refuses_replays_first(corpus: Corpus) -> None:
    guard = ReplayGuard(max_entries=1, leeway=LEEWAY)
    validator = make_validator(corpus.key_set(), guard=guard)
    token = corpus.valid[8]
    assert reason_for(validator, token) is None
    assert reason_for(validator, token) is TokenRejection.REPLAYED


def test_write_failure_refuses_the_token(corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / REPLAY_DB_FILE
    guard = ReplayGuard(leeway=LEEWAY, path=path, now=NOW)
    validator = make_validator(corpus.key_set(), guard=guard)
    with sqlite3.connect(path) as other:
        other.execute("DROP TABLE seen_jti")  # the file broke under the gateway's feet
    token = corpus.valid[9]
    jti = make_validator(corpus.key_set()).validate(token).jti
    assert reason_for(validator, token) is TokenRejection.REPLAY_STORE_ERROR
    assert not guard.seen(jti)  # not recorded: nothing was accepted
    guard.close()
    # A closed guard refuses too, rather than quietly forgetting to persist.
    assert reason_for(validator, corpus.valid[10]) is TokenRejection.REPLAY_STORE_ERROR


def test_unusable_file_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / REPLAY_DB_FILE
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(ReplayStoreError):
        ReplayGuard(path=path, now=NOW)
    with pytest.raises(ReplayStoreError):
        ReplayGuard(path=tmp_path / REPLAY_DB_FILE / "under-a-file" / "x.sqlite3", now=NOW)


def test_state_dir_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYKEY_GATEWAY_STATE_DIR", raising=False)
    assert build_parser().parse_args([]).state_dir is None
    args = build_parser().parse_args(["--state-dir", "/var/lib/citykey"])
    assert args.state_dir == Path("/var/lib/citykey")
    monkeypatch.setenv("CITYKEY_GATEWAY_STATE_DIR", "/srv/gw")
    assert build_parser().parse_args([]).state_dir == Path("/srv/gw")


async def test_gateway_with_state_dir_remembers_across_restart(
    corpus: Corpus, tmp_path: Path
) -> None:
    """The daemon wires state_dir into its replay guard: a restarted gateway refuses a replay."""
    config = GatewayConfig(
        gateway_id=GATEWAY,
        broker=BrokerAddress.parse("mqtt://127.0.0.1:1"),  # never connected in this test
        issuer=ISSUER,
        doors={DOORS[0]: 1, DOORS[1]: 2},
        state_dir=tmp_path / "gateway-state",
    )
    token = corpus.valid[0]  # dur 1 s: the simulated lock relocks quickly
    text = token.decode() if isinstance(token, bytes) else token
    door = make_validator(corpus.key_set()).validate(text).door

    def command(n: int) -> UnlockCommand:
        return UnlockCommand(command_id=f"c-{n}", door=door, token=text, reply_to="api-1")

    first = Gateway(config, SimulatedLock([1, 2]), corpus.key_set(), clock=lambda: NOW)
    assert (await first.execute(command(1))).result is AckResult.UNLOCKED
    restarted = Gateway(config, SimulatedLock([1, 2]), corpus.key_set(), clock=lambda: NOW + 2)
    ack = await restarted.execute(command(2))
    assert ack.result is AckResult.DENIED
    assert ack.reason == TokenRejection.REPLAYED.value
    assert (tmp_path / "gateway-state" / REPLAY_DB_FILE).exists()
