"""OPC UA hardening, with real asyncua clients against the box's server on loopback, each test bounded in time:
anonymous sessions read but never write or call a method; the one user writes with the right password only (compared
in constant time); with ``sign_encrypt`` only Basic256Sha256 SignAndEncrypt connects — refused by the server itself,
not only by a well-behaved client's endpoint choice; the certificate made self-signed once and reused; a
non-loopback bind without encryption is one warning line; the station file and ``run`` carry the options."""
from __future__ import annotations

import asyncio
import contextlib
import stat
from pathlib import Path
from typing import Any, Awaitable, Iterator

import pytest

pytest.importorskip("asyncua")

from asyncua import Client, ua  # noqa: E402
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256  # noqa: E402

from edge_stpm.common.errors import UserError  # noqa: E402
from edge_stpm.runtime.line import opcua, plc  # noqa: E402
from edge_stpm.runtime.line.opcua import NAMESPACE, OpcuaServer, Security  # noqa: E402
from helpers.line_parts import free_port  # noqa: E402

USER = ("plc", "correct-horse-battery")
LIMIT_S = 60.0


def _bounded(coro: Awaitable[Any], limit_s: float = LIMIT_S) -> Any:
    return asyncio.run(asyncio.wait_for(coro, limit_s))


@contextlib.contextmanager
def _serving(user: tuple[str, str] | None = None, security: Security | None = None) -> Iterator[tuple[Any, str]]:
    """The box's OPC UA server on a free loopback port, a result published (Verdict NG); yields (state, url)."""
    port = free_port()
    st = plc.PlcState()
    srv = OpcuaServer(st, "127.0.0.1", port, user, True, security).start()
    try:
        asyncio.run_coroutine_threadsafe(srv.nodes["Verdict"].write_value("NG"), srv.loop).result(10)
        yield st, f"opc.tcp://127.0.0.1:{port}/edge-stpm/"
    finally:
        srv.close()


async def _nodes(c: Client) -> tuple[Any, Any, Any]:
    idx = await c.get_namespace_index(NAMESPACE)
    return (c.get_node(f"ns={idx};s=VisionSystem"), c.get_node(f"ns={idx};s=VisionSystem.ResultManagement.LastResult"
                                                              ".Verdict"), idx)


async def _refused(call: Awaitable[Any]) -> None:
    with pytest.raises(ua.UaStatusCodeError) as info:
        await call
    assert info.value.code == ua.StatusCodes.BadUserAccessDenied, info.value


def test_anonymous_reads_the_verdict_but_cannot_write_or_call() -> None:
    """Anonymous on loopback was asyncua's permissive user: it selected recipes, triggered and acknowledged."""
    with _serving() as (st, url):
        async def main() -> None:
            async with Client(url, timeout=10) as c:
                vs, verdict, idx = await _nodes(c)
                assert await verdict.read_value() == "NG"
                await _refused(vs.call_method(f"{idx}:SelectRecipe", ua.Variant(5, ua.VariantType.UInt16)))
                await _refused(vs.call_method(f"{idx}:Trigger"))
                await _refused(vs.call_method(f"{idx}:AckResult"))
                index = c.get_node(f"ns={idx};s=VisionSystem.Recipe.Index")
                await _refused(index.write_value(ua.Variant(5, ua.VariantType.UInt16)))
                assert await verdict.read_value() == "NG", "still readable after the refusals"

        _bounded(main())
        assert st.recipe_index == 0 and st.next_trigger == 1 and st.error_code == plc.ERR_NONE


def test_the_user_writes_with_the_right_password_only() -> None:
    with _serving(USER) as (st, url):
        async def main() -> None:
            c = Client(url, timeout=10)
            c.set_user(USER[0])
            c.set_password(USER[1])
            async with c:
                vs, verdict, idx = await _nodes(c)
                assert await verdict.read_value() == "NG"
                assert await vs.call_method(f"{idx}:SelectRecipe", ua.Variant(7, ua.VariantType.UInt16)) is False
                assert await vs.call_method(f"{idx}:SelectRecipe", ua.Variant(0, ua.VariantType.UInt16)) is True
                assert await vs.call_method(f"{idx}:Trigger") == 1
            for name, password in ((USER[0], USER[1] + "x"), (USER[0], USER[1][:-1]), ("admin", USER[1])):
                bad = Client(url, timeout=10)
                bad.set_user(name)
                bad.set_password(password)
                with pytest.raises(ua.UaStatusCodeError) as info:
                    await bad.connect()
                with contextlib.suppress(Exception):
                    await bad.disconnect()
                assert info.value.code == ua.StatusCodes.BadUserAccessDenied, (name, info.value)
            async with Client(url, timeout=10) as anonymous:  # loopback: still there, still read-only
                vs, _, idx = await _nodes(anonymous)
                await _refused(vs.call_method(f"{idx}:AckResult"))

        _bounded(main())
        assert st.next_trigger == 2, "exactly the user's one trigger"


def test_the_password_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = opcua.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(opcua.hmac, "compare_digest", spy)
    users = opcua._Users(USER, anonymous=False)
    assert users.get_user(None, USER[0], USER[1]) is not None
    assert users.get_user(None, USER[0], "wrong") is None
    assert users.get_user(None) is None, "anonymous off loopback"
    assert (b"wrong", USER[1].encode()) in seen and len(seen) == 4, seen  # name and password, both every time


def test_bad_logins_lock_the_address_out_not_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """The throttle in-process (the address given): 10 bad logins lock 10.0.0.5 out for 60 s — the right password
    from it is refused then — while 10.0.0.6 logs in and loopback is never locked; one log line per lockout, with
    the address and neither the name nor the password tried."""
    said: list[str] = []
    users = opcua._Users(USER, anonymous=False, log=said.append)
    who = {"peer": "10.0.0.5"}
    monkeypatch.setattr(users, "peer", lambda: who["peer"])
    for i in range(10):
        assert users.get_user(None, USER[0], f"guess-{i}") is None
    assert said == ["OPC UA: 10 bad logins from 10.0.0.5: locked out for 60 s"], said
    assert users.get_user(None, USER[0], USER[1]) is None, "locked: even the right password"
    who["peer"] = "10.0.0.6"
    assert users.get_user(None, USER[0], USER[1]) is not None
    who["peer"] = "127.0.0.1"
    for i in range(12):
        users.get_user(None, USER[0], f"guess-{i}")
    assert users.get_user(None, USER[0], USER[1]) is not None, "the box itself is never locked out"
    assert len(said) == 1


def _own_address() -> str:
    """This machine's own non-loopback address (the route a packet would take; nothing is sent), or a skip."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            addr = ""
    if not addr or addr.startswith("127.") or addr == "0.0.0.0":
        pytest.skip("no non-loopback IPv4 address on this machine")
    return addr


def test_a_client_guessing_passwords_is_locked_out_from_outside() -> None:
    """Real asyncua clients against the server bound on every address: ten bad logins through this machine's own
    non-loopback address lock that address out (the right password from it refused with BadUserAccessDenied), while
    a client on loopback still logs in and writes — the server tells the clients apart by their connection."""
    addr, port = _own_address(), free_port()
    said: list[str] = []
    st = plc.PlcState()
    srv = OpcuaServer(st, "0.0.0.0", port, USER, loopback=False, log=said.append).start()

    async def login(host: str, password: str) -> int:
        c = Client(f"opc.tcp://{host}:{port}/edge-stpm/", timeout=10)
        c.set_user(USER[0])
        c.set_password(password)
        try:
            await c.connect()
        except ua.UaStatusCodeError as exc:
            return exc.code
        try:
            vs, _, idx = await _nodes(c)
            assert await vs.call_method(f"{idx}:Trigger") >= 1
            return ua.StatusCodes.Good
        finally:
            with contextlib.suppress(Exception):
                await c.disconnect()

    async def main() -> None:
        for i in range(10):
            assert await login(addr, f"guess-{i}") == ua.StatusCodes.BadUserAccessDenied
        assert await login(addr, USER[1]) == ua.StatusCodes.BadUserAccessDenied, "locked out"
        assert await login("127.0.0.1", USER[1]) == ua.StatusCodes.Good, "another client is not"

    try:
        _bounded(main())
    finally:
        srv.close()
    assert said == [f"OPC UA: 10 bad logins from {addr}: locked out for 60 s"], said
    assert srv.users.throttle.refused == 1


def _der_copy(pem: Path, key: bool) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = pem.read_bytes()
    if key:
        der = serialization.load_pem_private_key(data, None).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    else:
        der = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    out = pem.with_suffix(".der")
    out.write_bytes(der)
    return out


def test_sign_encrypt_refuses_plain_clients_and_serves_basic256sha256(tmp_path: Path) -> None:
    """With only SecurityPolicy None the password crossed the network in clear. Now: a self-signed pair made once
    (key 0600), served from DER copies; a plain client finds no endpoint, and one that skips that check (a rogue
    client) is refused by the server; Basic256Sha256 SignAndEncrypt with the server's certificate reads the verdict,
    and the user calls a method over it."""
    sec = opcua.resolve_security(None, None, None, True, tmp_path / "opcua")
    assert sec.mode == "sign_encrypt" and sec.cert.is_file() and sec.key.is_file()
    assert stat.S_IMODE(sec.key.stat().st_mode) == 0o600
    first = sec.cert.read_bytes()
    assert opcua.resolve_security(None, None, None, True, tmp_path / "opcua").cert.read_bytes() == first, "reused"
    served = Security("sign_encrypt", _der_copy(sec.cert, False), _der_copy(sec.key, True))
    client_cert, client_key = tmp_path / "client-cert.pem", tmp_path / "client-key.pem"
    opcua.make_self_signed(client_cert, client_key, "urn:edge-stpm:test-client", "localhost")

    with _serving(USER, served) as (st, url):
        async def secure_client(user: bool) -> Client:
            c = Client(url, timeout=10)
            c.application_uri = "urn:edge-stpm:test-client"
            await c.set_security(SecurityPolicyBasic256Sha256, str(client_cert), str(client_key),
                                 server_certificate=str(sec.cert), mode=ua.MessageSecurityMode.SignAndEncrypt)
            if user:
                c.set_user(USER[0])
                c.set_password(USER[1])
            return c

        async def main() -> None:
            with pytest.raises(ua.UaError):
                async with Client(url, timeout=10):
                    pass
            await _rogue_plain_client_is_refused(url)
            async with await secure_client(user=False) as c:
                _, verdict, _ = await _nodes(c)
                assert await verdict.read_value() == "NG"
            async with await secure_client(user=True) as c:
                vs, _, idx = await _nodes(c)
                assert await vs.call_method(f"{idx}:Trigger") == 1

        _bounded(main())
        assert st.next_trigger == 2


async def _rogue_plain_client_is_refused(url: str) -> None:
    """A client that ignores the endpoints the server lists and opens a SecurityPolicy None channel anyway: asyncua's
    server accepted it with no permission checks at all; now it may only discover (a read is refused)."""
    real = Client.find_endpoint
    Client.find_endpoint = staticmethod(lambda endpoints, mode, uri: endpoints[0])  # type: ignore[method-assign]
    try:
        rogue = Client(url, timeout=5)
        with pytest.raises(ua.UaStatusCodeError) as info:
            await rogue.connect()
            await rogue.nodes.objects.read_browse_name()
        assert info.value.code == ua.StatusCodes.BadUserAccessDenied, info.value
        with contextlib.suppress(Exception):
            await rogue.disconnect()
    finally:
        Client.find_endpoint = real  # type: ignore[method-assign]


def test_security_options_are_checked_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--opcua-security sign_encrypt needs --opcua-cert"):
        opcua.resolve_security("sign_encrypt", None, None, False, tmp_path)
    with pytest.raises(UserError, match="go with --opcua-security sign_encrypt"):
        opcua.resolve_security("none", tmp_path / "c.pem", None, False, tmp_path)
    a = opcua.resolve_security(None, tmp_path / "a.pem", tmp_path / "a.key", True, tmp_path)
    b = opcua.resolve_security(None, tmp_path / "b.pem", tmp_path / "b.key", True, tmp_path)
    with pytest.raises(UserError, match="is not the key of"):
        opcua.resolve_security("sign_encrypt", a.cert, b.key, False, tmp_path)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(UserError, match="not an X.509 certificate"):
        opcua.resolve_security("sign_encrypt", tmp_path / "junk.pem", a.key, False, tmp_path)
    with pytest.raises(UserError, match="cannot read"):
        opcua.resolve_security("sign_encrypt", tmp_path / "missing.pem", a.key, False, tmp_path)
    b.cert.unlink()
    with pytest.raises(UserError, match="exists without its pair"):
        opcua.resolve_security(None, b.cert, b.key, True, tmp_path)
    assert opcua.resolve_security(None, None, None, False, tmp_path) == Security()


def test_a_non_loopback_bind_without_encryption_is_one_warning(tmp_path: Path) -> None:
    said: list[str] = []
    wide = OpcuaServer(plc.PlcState(), "0.0.0.0", 4840, USER, loopback=False)
    opcua.secure([wide], None, None, None, False, tmp_path, said.append)
    assert len(said) == 1 and "without encryption" in said[0] and USER[1] not in said[0], said
    opcua.secure([wide], None, None, None, True, tmp_path, said.append)
    assert len(said) == 1 and wide.security.mode == "sign_encrypt", said
    local = OpcuaServer(plc.PlcState(), "127.0.0.1", 4840)
    opcua.secure([local], None, None, None, False, tmp_path, said.append)
    assert len(said) == 1, "loopback: no warning"


def test_station_file_and_run_carry_the_options(tmp_path: Path) -> None:
    from edge_stpm.cli import app
    from edge_stpm.runtime.station.config import Station, run_values

    st = Station.model_validate({"recipes": [{"name": "a", "index": 0, "model": "m"}],
                                 "opcua": {"bind": "0.0.0.0:4840", "user": "plc:pw", "security": "sign_encrypt",
                                           "cert": "c.pem", "key": "k.pem", "self_signed": True}})
    rv = run_values(st)
    assert (rv["opcua_security"], rv["opcua_cert"], rv["opcua_key"], rv["opcua_self_signed"]) == (
        "sign_encrypt", Path("c.pem"), Path("k.pem"), True)
    with pytest.raises(Exception, match="sign_encrypt"):
        Station.model_validate({"recipes": [{"name": "a", "index": 0, "model": "m"}], "opcua": {"security": "tls"}})
    import typer.main

    from edge_stpm.cli import _choices

    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    params = {p.name: p for p in run.params}
    assert _choices(params["opcua_security"]) == opcua.SECURITY_NAMES
    assert {"opcua_cert", "opcua_key", "opcua_self_signed"} <= set(params)
