"""The cluster secret, request signatures and chunk tokens (gfsfs.common.auth):
the pure logic, with a clock the test moves."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.hmac import SKEW, Signer, Verifier
from gfsfs.common.auth.tokens import LIFETIME, PERIOD, READ, WRITE, TokenKeys, expires
from gfsfs.common.errors import Code, GFSError

A = secrets.Secret.of(b"a" * 32)
B = secrets.Secret.of(b"b" * 32)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(fn, *args) -> GFSError:        # type: ignore[no-untyped-def]
    with pytest.raises(GFSError) as info:
        fn(*args)
    return info.value


# ---------------------------------------------------------------- the secret file

def test_generate_makes_a_0600_file_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secret"
    made = secrets.generate(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert secrets.load(path).signing == made.signing
    assert len(made.signing.material) == secrets.KEY_BYTES
    with pytest.raises(secrets.SecretError, match="exists already"):
        secrets.generate(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_secret_readable_or_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    secrets.generate(path)
    path.chmod(mode)
    with pytest.raises(secrets.SecretError, match=f"chmod 600 {path}"):
        secrets.load(path)


def test_secret_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(secrets.SecretError, match=f"{tmp_path / 'none'} does not exist"):
        secrets.load(tmp_path / "none")
    bad = tmp_path / "bad"
    for text, why in (("zz\n", "line 1 is not hex"), ("# only a comment\n", "no key"),
                      ("abcd\n", "at least 16 bytes")):
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(secrets.SecretError, match=why):
            secrets.load(bad)
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(secrets.SecretError, match="not a regular file"):
        secrets.load(tmp_path / "dir")


def test_every_key_verifies_and_the_first_signs() -> None:
    both = secrets.Secret.of(b"b" * 32, b"a" * 32)    # B rotated in, A still accepted
    clock = Clock()
    v = Verifier(both, clock=clock)
    for signer in (Signer(A, clock), Signer(B, clock), Signer(both, clock)):
        v.check("POST", "/rpc/x", signer.header("POST", "/rpc/x", b"{}"), b"{}")
    assert both.signing.kid == B.signing.kid
    assert A.signing.derive("x") != A.signing.derive("y") != B.signing.derive("x")


# ---------------------------------------------------------------- signatures

def test_a_signed_request_passes_once() -> None:
    clock = Clock()
    s, v = Signer(A, clock), Verifier(A, clock=clock)
    header = s.header("POST", "/rpc/lookup", b"\x81\xa1a\x01")
    v.check("POST", "/rpc/lookup", header, b"\x81\xa1a\x01")
    assert refused(v.check, "POST", "/rpc/lookup", header, b"\x81\xa1a\x01").code \
        == Code.UNAUTHORIZED                                           # a replay
    assert v.refused == 1


@pytest.mark.parametrize("change", ["method", "target", "body", "key", "sig", "kid"])
def test_anything_changed_is_refused(change: str) -> None:
    clock = Clock()
    signer = Signer(B if change == "key" else A, clock)
    header = signer.header("POST", "/rpc/unlink", b"body")
    method, target, body = "POST", "/rpc/unlink", b"body"
    if change == "method":
        method = "PUT"
    elif change == "target":
        target = "/rpc/unlink?x=1"
    elif change == "body":
        body = b"bodY"
    elif change == "sig":
        header = header[:-1] + ("0" if header[-1] != "0" else "1")
    elif change == "kid":
        header = header.replace(f"kid={A.signing.kid}", "kid=00000000")
    err = refused(Verifier(A, clock=clock).check, method, target, header, body)
    assert err.code == Code.UNAUTHORIZED and err.status == 401
    assert err.message == "authentication required"        # the same words for every cause


def test_a_stale_or_future_timestamp_is_refused() -> None:
    clock = Clock()
    s, v = Signer(A, clock), Verifier(A, clock=clock)
    old = s.header("GET", "/status", b"")
    clock.now += SKEW + 1
    refused(v.check, "GET", "/status", old, b"")
    clock.now -= 2 * (SKEW + 1)
    refused(v.check, "GET", "/status", old, b"")        # from the future, to this clock
    clock.now += SKEW + 1 - SKEW / 2
    v.check("GET", "/status", old, b"")                 # within the skew


def test_nonces_are_forgotten_only_after_their_timestamp_is_stale() -> None:
    clock = Clock()
    s, v = Signer(A, clock), Verifier(A, clock=clock)
    for _ in range(100):
        v.check("GET", "/status", s.header("GET", "/status", b""), b"")
    assert len(v.nonces) == 100
    clock.now += 2 * SKEW + 1
    v.check("GET", "/status", s.header("GET", "/status", b""), b"")
    assert len(v.nonces) == 1


def test_an_unsigned_body_is_only_for_streaming_routes() -> None:
    clock = Clock()
    s, v = Signer(A, clock), Verifier(A, clock=clock)
    header = s.header("PUT", "/data/abc", None)
    assert "body=UNSIGNED" in header
    v.check("PUT", "/data/abc", header, None)                  # a streamed route
    header = s.header("POST", "/rpc/create", None)
    refused(v.check, "POST", "/rpc/create", header, b"\x80")     # an RPC: the body is covered


def test_the_header_is_checked_before_the_body_and_the_nonce_kept_after_it() -> None:
    clock = Clock()
    s, v = Signer(A, clock), Verifier(A, clock=clock)
    header = s.header("POST", "/rpc/lookup", b"\x80")
    refused(v.check_head, "POST", "/rpc/lookup", Signer(B, clock).header("POST", "/rpc/lookup",
                                                                         b"\x80"))
    signed = v.check_head("POST", "/rpc/lookup", header)      # no body needed
    assert not v.nonces
    refused(v.check_body, signed, b"\x81")                    # a tampered body
    assert not v.nonces and v.refused == 2
    assert v.check_body(v.check_head("POST", "/rpc/lookup", header), b"\x80") == A.signing.kid
    refused(v.check_body, v.check_head("POST", "/rpc/lookup", header), b"\x80")   # a replay


def test_a_request_signed_before_the_verifier_started_is_refused() -> None:
    clock = Clock()
    s = Signer(A, clock)
    before = s.header("GET", "/status", b"")
    clock.now += 0.0005                     # the same millisecond: clock granularity
    same_ms = Verifier(A, clock=clock)
    same_ms.check("GET", "/status", before, b"")
    clock.now += 1.0                        # a restart a second later: a replay
    v = Verifier(A, clock=clock)
    refused(v.check, "GET", "/status", before, b"")
    v.check("GET", "/status", s.header("GET", "/status", b""), b"")
    refused(v.remember_once, "0" * 16, clock.now - 1.0)        # an export's open, likewise
    v.remember_once("1" * 16, clock.now)


@pytest.mark.parametrize("header", [
    None, "", "Basic dXNlcjpwdw==", "GFS-HMAC", "GFS-HMAC kid=1", "GFS-HMAC " + "x" * 600,
    "GFS-HMAC kid=a,ts=1,nonce=00000000000000000000,body=x,sig=y,extra=z",
    "GFS-HMAC kid=a,ts=-1,nonce=00000000000000000000,body=x,sig=y",
    "GFS-HMAC kid=a,kid=a,ts=1,nonce=0000000000000000,body=x,sig=y",
    "GFS-HMAC kid=a,ts=1,nonce=short,body=x,sig=y"])
def test_malformed_headers_are_refused_without_a_crash(header: str | None) -> None:
    err = refused(Verifier(A).check, "POST", "/rpc/x", header, b"")
    assert err.code == Code.UNAUTHORIZED


# ---------------------------------------------------------------- chunk tokens

def test_a_token_opens_its_chunk_for_its_access_only() -> None:
    clock = Clock()
    keys = TokenKeys(A, clock)
    read, write = keys.issue(7, 3, READ), keys.issue(7, 3, WRITE)
    assert keys.check(read, 7, READ).handle == 7
    assert keys.check(write, 7, READ).access == WRITE        # write includes read
    assert keys.check(write, 7, WRITE, version=3).version == 3
    for token, handle, access in ((read, 7, WRITE), (read, 8, READ), (write, 8, WRITE)):
        assert refused(keys.check, token, handle, access).code == Code.UNAUTHORIZED
    assert expires(read) == pytest.approx(clock.now + LIFETIME, abs=0.01)


def test_a_write_token_of_an_older_version_is_stale() -> None:
    keys = TokenKeys(A, Clock())
    old = keys.issue(7, 3, WRITE)
    assert refused(keys.check, old, 7, WRITE, 4).code == Code.STALE
    keys.check(old, 7, READ, 4)              # a read does not care


def test_an_expired_token_is_stale_and_a_very_old_one_unknown() -> None:
    clock = Clock()
    keys = TokenKeys(A, clock)
    token = keys.issue(1, 1, READ)
    clock.now += LIFETIME + 1
    assert refused(keys.check, token, 1, READ).code == Code.STALE
    clock.now += 3 * PERIOD                  # its period key is no longer accepted at all
    assert refused(keys.check, token, 1, READ).code == Code.UNAUTHORIZED


def test_tokens_survive_the_period_key_rotation_within_their_lifetime() -> None:
    clock = Clock((1_800_000_000 // PERIOD + 1) * PERIOD - 10)   # 10 s before a new period
    master, chunkd = TokenKeys(A, clock), TokenKeys(A, clock)
    token = master.issue(5, 1, WRITE)
    clock.now += 20
    assert chunkd.check(token, 5, WRITE).period == int((clock.now - 20) // PERIOD)
    fresh = master.issue(5, 1, WRITE)
    assert fresh.split(".")[1] != token.split(".")[1]          # signed with the next key


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace(".7.", ".8."), lambda t: t.replace(".r.", ".w."),
    lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"), lambda t: "T2" + t[2:],
    lambda t: t + ".x", lambda t: "", lambda t: "T1." * 70, lambda t: t.replace("T1.", "T1.-")])
def test_forged_tokens_are_refused(mangle) -> None:       # type: ignore[no-untyped-def]
    keys = TokenKeys(A, Clock())
    token = mangle(keys.issue(7, 3, READ))
    assert refused(keys.check, token, 7, READ).code == Code.UNAUTHORIZED
    assert refused(keys.check, token, 8, WRITE).code == Code.UNAUTHORIZED


def test_a_token_of_another_cluster_is_refused() -> None:
    clock = Clock()
    theirs = TokenKeys(B, clock).issue(7, 3, WRITE)
    assert refused(TokenKeys(A, clock).check, theirs, 7, READ).code == Code.UNAUTHORIZED


def test_generated_secrets_differ(tmp_path: Path) -> None:
    one = secrets.generate(tmp_path / "1").signing.material
    two = secrets.generate(tmp_path / "2").signing.material
    assert one != two and os.stat(tmp_path / "2").st_mode & 0o077 == 0


# ---------------------------------------------------------------- the client's signing

def test_httpx_signing_signs_a_refused_request_afresh_once() -> None:
    import httpx

    from gfsfs.common.rpc import Signing
    from gfsfs.common.auth.hmac import parse

    seen: list[tuple[str, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["authorization"], request.read()))
        return httpx.Response(401 if len(seen) == 1 else 200)

    async def go(content: object) -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer),
                                     auth=Signing(Signer(A))) as http:
            resp = await http.post("http://x/rpc/statfs", content=content)
            return resp.status_code

    assert trio.run(go, b"\x80") == 200         # signed before a restart: once more
    (first, body1), (second, body2) = seen
    assert body1 == body2 == b"\x80" and parse(first)["nonce"] != parse(second)["nonce"]
    seen.clear()

    async def stream() -> AsyncIterator[bytes]:
        yield b"chunk data"
    assert trio.run(go, stream()) == 401        # a stream cannot be sent again
    assert len(seen) == 1
