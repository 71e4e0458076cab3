"""The PLC handshake and the last result as an OPC UA server (asyncua), in the shape of the OPC UA Machine Vision
companion specification (OPC 40100-1) where that can be done simply — not a conformant implementation.

Address space (namespace ``urn:edge-stpm``), under Objects/VisionSystem:
  State                      String   Operational | Busy | ResultReady | Error (the handshake's state; a refused
                                      trigger only sets ErrorCode)
  ErrorCode, ErrorText       UInt16, String (the codes of the Modbus map)
  ResultManagement/LastResult/
      ResultId String, TriggerId UInt32, IsPartGood Boolean, Verdict String, NormalisedScore Double (on the score
      scale: 0 = a typical good part, 1 = the threshold), ScoreScale String (good, or threshold for a model
      calibrated before that scale: 0 = a zero score), RawThreshold Double, CreationTime DateTime,
      ProcessingTimeMs Double (trigger seen → result ready),
      CameraFrameId UInt64, CameraTimestamp UInt64 (what an industrial camera reported; 0 for other sources)
      RecipeIndex UInt16, RecipeName String (the recipe that judged the result)
  Counters/ Parts UInt64, NgParts UInt64
  Recipe/ Index UInt16, Name String (the active recipe)
  Trigger()  → TriggerId UInt32  (BadResourceUnavailable while not ready: busy, result not acknowledged, or the
               recipe index written is unknown)
  AckResult()
  SelectRecipe(Index UInt16) → Ok Boolean (False: unknown index — error 6 and triggers refused until a known one)
Node ids are strings in the product's namespace, the node's browse path (``ns=<urn:edge-stpm>;s=VisionSystem.State``,
``…;s=VisionSystem.ResultManagement.LastResult.Verdict``): adding a node never renumbers the others, so a PLC
program may configure them statically. The server names itself edge-stpm (product name and URI, version,
manufacturer) with an application URI unique to the box (``urn:edge-stpm:<hostname>``).
Security: anonymous sessions only on a loopback address, and read-only (they browse, read and subscribe; a Write or
a method call — Trigger, AckResult, SelectRecipe — is BadUserAccessDenied); any other address needs --opcua-user
USER:PASSWORD, the one user who may write (compared in constant time; bad logins throttled per client address, as
the HTTP server's). ``security = "sign_encrypt"`` (Basic256Sha256,
Sign & Encrypt, a certificate and RSA key given or made self-signed on first start) is the only endpoint then: the
password and every value cross the network encrypted, and a client that opens a channel without security anyway may
only discover the endpoints over it (the server refuses every other service, not only the client's endpoint choice).
With security none a non-loopback bind is one warning line.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from edge_stpm import __version__
from edge_stpm.common.errors import UserError
from edge_stpm.common.files import ensure_dir, fsync_dir, write_bytes
from edge_stpm.common.throttle import Throttle
from edge_stpm.runtime.line.plc import ERR_BUSY, ERR_NOT_ACKED, ERROR_TEXT, PlcState
from edge_stpm.runtime.loop.sinks.base import Result

NAMESPACE = "urn:edge-stpm"
SECURITY_NAMES = ("none", "sign_encrypt")  # the choices of [opcua] security and run --opcua-security
CERT_DAYS = 3650  # a self-signed certificate's validity (days); delete the pair to make a new one


@dataclass(frozen=True)
class Security:
    """The server's channel security: ``mode`` none (no encryption, SecurityPolicy None) or sign_encrypt
    (Basic256Sha256, SignAndEncrypt: ``cert`` and ``key``, PEM or DER, the key RSA)."""

    mode: str = "none"
    cert: Path | None = None
    key: Path | None = None


class OpcuaServer:
    """asyncua's server on its own thread and event loop; ``publish`` schedules the writes of one result."""

    def __init__(self, state: PlcState, host: str, port: int, user: tuple[str, str] | None = None,
                 loopback: bool = True, security: Security | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if not loopback and user is None:
            raise UserError(f"--opcua {host}:{port} is not a loopback address: give --opcua-user USER:PASSWORD "
                            "(anonymous access is allowed on loopback only)")
        self.state, self.host, self.port, self.user = state, host, port, user
        self.loopback, self.security = loopback, security or Security()
        self.users = _Users(user, anonymous=loopback, log=log)
        self.endpoint = f"opc.tcp://{host}:{port}/edge-stpm/"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.nodes: dict[str, Any] = {}
        self.server: Any = None
        self._stop: asyncio.Event | None = None

    async def _build(self) -> None:
        from asyncua import ua

        s = _server_class()(user_manager=self.users)
        self.users.server = s
        await s.init()
        s.set_endpoint(self.endpoint)
        await _identify(s)
        await _secure(s, self.security, anonymous=self.loopback, user=self.user is not None)
        idx = await s.register_namespace(NAMESPACE)

        def node(*path: str) -> ua.NodeId:
            """The stable string id of a browse path."""
            return ua.NodeId(".".join(path), idx)  # type: ignore[arg-type]  # a str id (the hint wants ua.String)

        vs = await s.nodes.objects.add_object(node("VisionSystem"), f"{idx}:VisionSystem")
        n = self.nodes
        n["State"] = await vs.add_variable(node("VisionSystem", "State"), f"{idx}:State", "Operational")
        n["ErrorCode"] = await vs.add_variable(node("VisionSystem", "ErrorCode"), f"{idx}:ErrorCode", 0,
                                               ua.VariantType.UInt16)
        n["ErrorText"] = await vs.add_variable(node("VisionSystem", "ErrorText"), f"{idx}:ErrorText", "none")
        rm = await vs.add_object(node("VisionSystem", "ResultManagement"), f"{idx}:ResultManagement")
        last = await rm.add_object(node("VisionSystem", "ResultManagement", "LastResult"), f"{idx}:LastResult")
        for name, value, vt in (("ResultId", "", ua.VariantType.String), ("TriggerId", 0, ua.VariantType.UInt32),
                                ("IsPartGood", False, ua.VariantType.Boolean), ("Verdict", "", ua.VariantType.String),
                                ("IsReview", False, ua.VariantType.Boolean),
                                ("NormalisedScore", 0.0, ua.VariantType.Double),
                                ("ScoreScale", "", ua.VariantType.String),
                                ("RawThreshold", 0.0, ua.VariantType.Double),
                                ("CreationTime", datetime.now(timezone.utc), ua.VariantType.DateTime),
                                ("ProcessingTimeMs", 0.0, ua.VariantType.Double),
                                ("CameraFrameId", 0, ua.VariantType.UInt64),
                                ("CameraTimestamp", 0, ua.VariantType.UInt64),
                                ("RecipeIndex", 0, ua.VariantType.UInt16), ("RecipeName", "", ua.VariantType.String)):
            n[name] = await last.add_variable(node("VisionSystem", "ResultManagement", "LastResult", name),
                                              f"{idx}:{name}", value, vt)
        counters = await vs.add_object(node("VisionSystem", "Counters"), f"{idx}:Counters")
        n["Parts"] = await counters.add_variable(node("VisionSystem", "Counters", "Parts"), f"{idx}:Parts", 0,
                                                 ua.VariantType.UInt64)
        n["NgParts"] = await counters.add_variable(node("VisionSystem", "Counters", "NgParts"), f"{idx}:NgParts", 0,
                                                   ua.VariantType.UInt64)
        n["ReviewParts"] = await counters.add_variable(node("VisionSystem", "Counters", "ReviewParts"),
                                                       f"{idx}:ReviewParts", 0, ua.VariantType.UInt64)
        recipe = await vs.add_object(node("VisionSystem", "Recipe"), f"{idx}:Recipe")
        n["Recipe.Index"] = await recipe.add_variable(node("VisionSystem", "Recipe", "Index"), f"{idx}:Index",
                                                      self.state.recipe_index, ua.VariantType.UInt16)
        n["Recipe.Name"] = await recipe.add_variable(node("VisionSystem", "Recipe", "Name"), f"{idx}:Name", "",
                                                     ua.VariantType.String)
        await vs.add_method(node("VisionSystem", "Trigger"), f"{idx}:Trigger", self._trigger, [],
                            [ua.VariantType.UInt32])
        await vs.add_method(node("VisionSystem", "AckResult"), f"{idx}:AckResult", self._ack, [], [])
        await vs.add_method(node("VisionSystem", "SelectRecipe"), f"{idx}:SelectRecipe", self._select,
                            [ua.VariantType.UInt16], [ua.VariantType.Boolean])
        self.server = s
        self.ng = self.review = 0

    async def _select(self, parent: Any, index: Any) -> list[Any]:
        from asyncua import ua

        ok = self.state.write_recipe(int(getattr(index, "Value", index)))
        await self.nodes["Recipe.Index"].write_value(ua.Variant(self.state.recipe_index, ua.VariantType.UInt16))
        await self.nodes["Recipe.Name"].write_value(self.state.recipe_name())
        await self._write_state()
        return [ua.Variant(ok, ua.VariantType.Boolean)]

    async def _trigger(self, parent: Any) -> list[Any]:
        from asyncua import ua

        tid = self.state.trigger()
        await self._write_state()
        if tid is None:
            # a method may answer a bad StatusCode instead of its outputs (asyncua's hints: a list, a UInt32)
            return ua.StatusCode(ua.StatusCodes.BadResourceUnavailable)  # type: ignore[arg-type, return-value]
        return [ua.Variant(tid, ua.VariantType.UInt32)]

    async def _ack(self, parent: Any) -> list[Any]:
        self.state.ack()
        await self._write_state()
        return []

    async def _write_state(self) -> None:
        st = self.state
        with st.lock:
            code = st.code()
            handshake = code in (ERR_BUSY, ERR_NOT_ACKED)  # a refused trigger: the code says so
            text = ("ResultReady" if st.results_ready else "Busy" if st.busy
                    else "Error" if code and not handshake else "Operational")
        await self.nodes["State"].write_value(text)
        from asyncua import ua

        await self.nodes["ErrorCode"].write_value(ua.Variant(code, ua.VariantType.UInt16))
        await self.nodes["ErrorText"].write_value(ERROR_TEXT.get(code, str(code)))

    async def _write_result(self, r: Result) -> None:
        from asyncua import ua

        n, ins = self.nodes, r.inspection
        self.ng += int(ins.verdict == "NG")
        self.review += int(ins.verdict == "REVIEW")
        values = {"ResultId": (r.result_id, ua.VariantType.String),
                  "TriggerId": (r.trigger_id or 0, ua.VariantType.UInt32),
                  "IsPartGood": (ins.verdict == "OK", ua.VariantType.Boolean),
                  "Verdict": (ins.verdict, ua.VariantType.String),
                  "IsReview": (ins.verdict == "REVIEW", ua.VariantType.Boolean),
                  "NormalisedScore": (float(ins.normalised_score), ua.VariantType.Double),
                  "ScoreScale": (ins.score_scale, ua.VariantType.String),
                  "RawThreshold": (float(ins.image_threshold), ua.VariantType.Double),
                  "CreationTime": (datetime.fromtimestamp(r.wall_time, timezone.utc), ua.VariantType.DateTime),
                  "ProcessingTimeMs": (float(self.state.cycle_ms), ua.VariantType.Double),
                  "CameraFrameId": (int(r.camera.get("frame_id", 0)), ua.VariantType.UInt64),
                  "CameraTimestamp": (int(r.camera.get("timestamp", 0)), ua.VariantType.UInt64),
                  "Parts": (self.state.count, ua.VariantType.UInt64), "NgParts": (self.ng, ua.VariantType.UInt64),
                  "ReviewParts": (self.review, ua.VariantType.UInt64),
                  "RecipeIndex": (int((ins.recipe or {}).get("index", 0)), ua.VariantType.UInt16),
                  "RecipeName": (str((ins.recipe or {}).get("name", "")), ua.VariantType.String)}
        for name, (v, vt) in values.items():
            await n[name].write_value(ua.Variant(v, vt))
        await self._write_state()

    def publish(self, r: Result) -> None:
        """Called from the sink's thread after the handshake state took the result; waits for the writes."""
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._write_result(r), self.loop).result(10)

    def start(self) -> "OpcuaServer":
        for name in ("asyncua", "asyncua.server", "asyncua.uaprotocol"):
            # CRITICAL: asyncua logs a failed bind with its traceback at ERROR before raising; the box reports it in
            # one line itself (below)
            logging.getLogger(name).setLevel(logging.CRITICAL)
        ready = threading.Event()
        box: dict[str, Any] = {}

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop

            async def main() -> None:
                self._stop = asyncio.Event()
                try:
                    await self._build()
                    await self.server.start()
                except BaseException as exc:  # noqa: BLE001 — reported on the caller's thread
                    box["error"] = exc
                    ready.set()
                    return
                ready.set()
                await self._stop.wait()
                await self.server.stop()

            loop.run_until_complete(main())

        self.thread = threading.Thread(target=serve, name="opcua", daemon=True)
        self.thread.start()
        if not ready.wait(30) or "error" in box:
            self.loop = None
            raise UserError(f"--opcua {self.host}:{self.port}: cannot serve ({box.get('error', 'timed out')})")
        return self

    def close(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(15)


async def _identify(s: Any) -> None:
    """The server's identity: edge-stpm's name, version and manufacturer, an application URI unique to this box."""
    host = socket.gethostname() or "box"
    s.set_server_name(f"edge-stpm vision system ({host})")
    await s.set_application_uri(f"urn:edge-stpm:{host}")
    await s.set_build_info("https://pypi.org/project/edge-stpm/", "edge-stpm project", "edge-stpm", __version__,
                           __version__, datetime.now(timezone.utc))


class _Users:
    """asyncua user manager: the one USER:PASSWORD (role User: may write and call methods), compared in constant
    time; an anonymous session (role Anonymous: read-only, see ``_Rules``) only where ``anonymous``. Bad user-name
    logins are throttled per client address as the HTTP server's are (``common/throttle``: 10 within a minute lock
    that address out for 60 s, doubling; loopback never is): a locked address is refused even with the right
    password, and each lockout is one line through ``log`` (the address, never the name or password tried)."""

    def __init__(self, user: tuple[str, str] | None, anonymous: bool,
                 log: Callable[[str], None] | None = None) -> None:
        self.user, self.anonymous, self.log = user, anonymous, log
        self.throttle = Throttle()
        self.server: Any = None  # asyncua's Server, whose connections say which client a login comes from

    def peer(self) -> str:
        """The address of the client whose ActivateSession this is. asyncua does not pass it to ``get_user``; each
        connection's messages run on that connection's own task, so the task names the connection. "unknown" when
        none matches (every such login then counts as one client: throttled, never let through)."""
        bserver = getattr(self.server, "bserver", None)
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop (a direct call)
            task = None
        for proto in getattr(bserver, "clients", None) or ():
            if task is not None and getattr(proto, "_task", None) is task and proto.peer_name:
                return str(proto.peer_name[0])
        return "unknown"

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None and password is None:  # an anonymous token (certificate: the channel's client's, if any;
            return User(role=UserRole.Anonymous) if self.anonymous else None  # X509 user tokens are never offered)
        client = self.peer()
        if not self.throttle.exempt(client) and self.throttle.locked_for(client) > 0:
            self.throttle.refused += 1
            return None
        if self.user is not None and username is not None and password is not None:
            name_ok = hmac.compare_digest(str(username).encode(), self.user[0].encode())
            password_ok = hmac.compare_digest(_bytes(password), self.user[1].encode())
            if name_ok & password_ok:
                return User(role=UserRole.User, name=self.user[0])
        _, lock = self.throttle.fail(client)
        if lock and self.log is not None:
            self.log(f"OPC UA: {self.throttle.max_failures} bad logins from {client}: locked out for {lock:.0f} s")
        return None


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class _Rules:
    """asyncua permission ruleset: the User role may send every session service asyncua allows a user (reads,
    writes, method calls, subscriptions); Anonymous the same less Write and Call (read-only); nobody the address-space
    changes asyncua keeps for Admin (this server never hands out Admin)."""

    def __init__(self) -> None:
        from asyncua import ua
        from asyncua.crypto.permission_rules import USER_TYPES, UserRole

        def ids(*types: Any) -> set[ua.NodeId]:
            """Numeric node ids."""
            return {ua.NodeId(t) for t in types}

        user = ids(*USER_TYPES)
        writes = ids(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary, ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
        self.allowed = {UserRole.User: user, UserRole.Anonymous: user - writes}

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        return user is not None and action_type_id in self.allowed.get(user.role, set())


class _DiscoveryOnly:
    """The permission ruleset of a SecurityPolicy None channel on a server that offers no None endpoint: nothing.
    Clients find the endpoints over such a channel (GetEndpoints, FindServers, and CreateSession / ActivateSession,
    which asyncua never checks) — every other service, reads included, is BadUserAccessDenied. Without it asyncua's
    server let a client that skips the endpoint check keep a None channel (its connection starts as None and stays so
    when no policy matches) with no permission checks at all."""

    def check_validity(self, user: Any, action_type_id: Any, body: Any) -> bool:
        return False


def _server_class() -> Any:
    """asyncua's Server, whose SecurityPolicy None channels serve discovery only when no None endpoint is offered."""
    from asyncua import Server, ua
    from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone

    class _Server(Server):
        async def _setup_server_nodes(self) -> None:
            await super()._setup_server_nodes()
            if ua.SecurityPolicyType.NoSecurity not in self._security_policy:
                self._policies.append(SecurityPolicyFactory(SecurityPolicyNone, ua.MessageSecurityMode.None_,
                                                            permission_ruleset=_DiscoveryOnly()))

    return _Server


async def _secure(s: Any, sec: Security, anonymous: bool, user: bool) -> None:
    """Endpoints, identity tokens and permissions: one endpoint (None, or Basic256Sha256 SignAndEncrypt with the
    certificate), anonymous (read-only) and/or user-name tokens, the ``_Rules`` ruleset on every channel."""
    from asyncua import ua

    if sec.mode == "sign_encrypt":
        cert, key = read_pair(sec)
        await s.load_certificate(cert[0], cert[1])
        await s.load_private_key(key[0], None, key[1])
        policy = ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt
    else:
        policy = ua.SecurityPolicyType.NoSecurity
    s.set_security_policy([policy], permission_ruleset=_Rules())
    s.set_identity_tokens(([ua.AnonymousIdentityToken] if anonymous else []) +
                          ([ua.UserNameIdentityToken] if user else []))


def _format(data: bytes) -> str:
    return "pem" if data.lstrip().startswith(b"-----BEGIN") else "der"


def read_pair(sec: Security) -> tuple[tuple[bytes, str], tuple[bytes, str]]:
    """The certificate and key files as (bytes, "pem" | "der"), checked: readable, a certificate, an RSA key
    without a password, the key of that certificate. One UserError line otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    out = []
    for what, path in (("certificate", sec.cert), ("key", sec.key)):
        try:
            data = Path(str(path)).read_bytes()
        except OSError as exc:
            raise UserError(f"--opcua-{'cert' if what == 'certificate' else 'key'} {path}: cannot read the OPC UA "
                            f"{what} ({exc.strerror or exc})") from None
        out.append((data, _format(data)))
    (cdata, cfmt), (kdata, kfmt) = out
    try:
        cert = (x509.load_pem_x509_certificate if cfmt == "pem" else x509.load_der_x509_certificate)(cdata)
    except ValueError:
        raise UserError(f"--opcua-cert {sec.cert}: not an X.509 certificate (PEM or DER)") from None
    try:
        load = serialization.load_pem_private_key if kfmt == "pem" else serialization.load_der_private_key
        key = load(kdata, password=None)
    except (ValueError, TypeError):
        raise UserError(f"--opcua-key {sec.key}: not a private key without a password (PEM or DER)") from None
    if not isinstance(key, rsa.RSAPrivateKey) or not 2048 <= key.key_size <= 4096:
        raise UserError(f"--opcua-key {sec.key}: Basic256Sha256 needs an RSA key of 2048 to 4096 bits")
    # the certificate's public key is typed as a union of key types (not all of them have public_numbers)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise UserError(f"--opcua-key {sec.key} is not the key of --opcua-cert {sec.cert}")
    return out[0], out[1]


def make_self_signed(cert: Path, key: Path, uri: str, host: str) -> None:
    """An RSA 2048 key and a self-signed OPC UA application certificate (application URI ``uri`` and DNS name
    ``host`` as subject alternative names, server and client authentication, ``CERT_DAYS`` days), PEM, each written
    under a temporary name and renamed; the key created readable by its owner only (0600)."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    k = cert_gen.generate_private_key()
    c = cert_gen.generate_self_signed_app_certificate(
        k, f"edge-stpm vision system ({host})", {"organizationName": "edge-stpm"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=CERT_DAYS)
    ensure_dir(key.parent)
    _write_private(key, cert_gen.dump_private_key_as_pem(k))
    write_bytes(cert, c.public_bytes(serialization.Encoding.PEM))


def _write_private(final: Path, data: bytes) -> None:
    """``data`` into ``final`` through a temporary created 0600 beside it (never readable by others), renamed."""
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {final}: {exc.strerror or exc}") from None
    fsync_dir(final.parent)


def resolve_security(mode: str | None, cert: Path | None, key: Path | None, self_signed: bool,
                     folder: Path) -> Security:
    """The security of ``run``'s options: ``mode`` None means sign_encrypt when a certificate, key or self_signed is
    given, else none. ``self_signed``: the pair at ``cert``/``key`` (default ``folder``/server-cert.pem and
    server-key.pem) is made when neither file exists, and reused after. Every inconsistency is one UserError."""
    given = cert is not None or key is not None or self_signed
    mode = mode or ("sign_encrypt" if given else "none")
    if mode not in SECURITY_NAMES:
        raise UserError(f"--opcua-security takes {' or '.join(SECURITY_NAMES)}, not {mode!r}")
    if mode == "none":
        if given:
            raise UserError("--opcua-cert / --opcua-key / --opcua-self-signed go with --opcua-security sign_encrypt "
                            "(security none encrypts nothing)")
        return Security()
    if self_signed:
        cert, key = Path(cert or folder / "server-cert.pem"), Path(key or folder / "server-key.pem")
        if not cert.exists() and not key.exists():
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            host = socket.gethostname() or "box"
            make_self_signed(cert, key, f"urn:edge-stpm:{host}", host)
        elif not (cert.exists() and key.exists()):
            raise UserError(f"--opcua-self-signed: {cert if cert.exists() else key} exists without its pair "
                            f"({key if cert.exists() else cert}); delete it to make a new pair")
    if cert is None or key is None:
        raise UserError("--opcua-security sign_encrypt needs --opcua-cert and --opcua-key (PEM or DER), or "
                        "--opcua-self-signed")
    sec = Security("sign_encrypt", Path(cert), Path(key))
    read_pair(sec)
    return sec


def secure(servers: list[Any], mode: str | None, cert: Path | None, key: Path | None, self_signed: bool,
           folder: Path, log: Callable[[str], None]) -> None:
    """Give ``run``'s OPC UA server (among ``servers``; none: nothing) its security, before it starts; a non-loopback
    bind without encryption is one warning line through ``log``."""
    for srv in servers:
        if isinstance(srv, OpcuaServer):
            srv.security = resolve_security(mode, cert, key, self_signed, folder)
            if srv.security.mode == "none" and not srv.loopback:
                log(f"OPC UA on {srv.host}:{srv.port} without encryption (--opcua-security none): the password and "
                    "every value cross the network readable — use --opcua-security sign_encrypt "
                    "(--opcua-self-signed makes a certificate)")


def parse_user(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserError("--opcua-user takes USER:PASSWORD")
    return user, password
