"""Settings: one frozen object read from the environment at start.

A bad value stops the process with a message that names the variable, so an
operator never has to guess which of twenty knobs was wrong.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from persistence.errors import Refused
from rules.loading import load
from rules.shooter.map import read_map
from server.proxy import Network, networks

Number = TypeVar("Number", int, float)


class ConfigError(Exception):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    nats_url: str  # one server, or a cluster's: comma-separated
    # The JWT signing keys, (key id, secret), the first signs and all verify: JWT_KEYS, or
    # JWT_SECRET alone as the key "default".
    jwt_keys: tuple[tuple[str, str], ...]
    jwt_ttl_s: int = 900  # an access token's life
    refresh_ttl_s: int = 30 * 86400  # a session's (its refresh tokens'), from its login
    character_cache_ttl_s: int = 60
    world_zone_id: str = "z1"
    world_tick_rate_hz: float = 20.0
    world_max_step: float = 5.0
    # The game every zone runs (docs/rules.md): package.module:name; the shooter by default.
    world_rules: str = "rules.shooter:Shooter"
    world_map: str = ""  # the shooter's map file: walls and spawn points ("": an empty map)
    world_max_rewind_s: float = 0.2  # lag compensation: how far back a shot may be judged
    world_respawn_s: float = 3.0  # how long the dead stay dead
    max_characters_per_user: int = 10
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Where /metrics is served: a process without the API (zone, provisioner) on this
    # port (unset: any free one); the API on its own port unless this is set.
    metrics_port: int | None = None
    # Log lines as JSON (one object a line) or text; `outpost dev` defaults to text.
    log_format: str = "json"
    max_body_bytes: int = 16 * 1024
    # A request's whole body must arrive within this of its head (then 400, and a close).
    http_body_timeout_s: float = 10.0
    # Redis is a cache: a call that takes longer than this is treated as a miss.
    redis_timeout_s: float = 0.25
    # A Postgres statement or pool acquire that takes longer answers 503.
    db_timeout_s: float = 5.0
    # Argon2id cost (parallelism 1): OWASP's recommendation (Password Storage Cheat Sheet:
    # 19 MiB, 2 iterations). Measured here, 23 ms of one core a hash: ~43 registrations or
    # logins a core-second (docs/operations.md, "Password hashing"). argon2-cffi's own
    # default (RFC 9106's low-memory profile, 64 MiB, 3) costs 169 ms: 6 a core-second.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    # In a window, per api process: login attempts per client address, and failed logins
    # per account (by username or email alike) from one address and from all.
    login_failures_per_account_and_address: int = 10
    login_failures_per_account: int = 100
    login_rate_per_address: int = 50
    login_rate_window_s: float = 60.0
    # Registrations per client address and in all, per api process, in a window: each
    # costs an Argon2 hash (about 0.25 s of a core at the default cost) and four rows.
    register_rate_per_address: int = 5
    register_rate_total: int = 60
    register_rate_window_s: float = 60.0
    outbox_poll_s: float = 1.0
    # The world (docs/protocol.md, "World"). Bounds: min_x, min_y, max_x, max_y.
    world_bounds: tuple[float, float, float, float] = (-1000.0, -1000.0, 1000.0, 1000.0)
    world_checkpoint_s: float = 5.0
    # Interest management: a player sees the players around it, not farther than twice
    # this on either axis (docs/protocol.md); 0 is the whole zone.
    world_view_radius: float = 0.0
    # Browsers (requests with an Origin header) must come from one of these; "*" is any.
    world_allowed_origins: tuple[str, ...] = ()
    world_handshake_timeout_s: float = 5.0
    world_join_timeout_s: float = 10.0
    world_idle_timeout_s: float = 60.0
    world_slow_close_s: float = 3.0
    world_max_message_bytes: int = 4096
    world_max_messages_per_s: float = 30.0
    # Every frame counts here, fragments and control frames too (docs/protocol.md).
    world_max_frames_per_s: float = 120.0
    world_max_sockets_per_user: int = 10
    # A world socket's send buffer, bytes (the kernel doubles it for its bookkeeping); 0:
    # the kernel's own, which Linux grows to tcp_wmem's maximum (4 MiB): a reader that
    # stops would be sent seconds of snapshots before it counts as behind.
    world_send_buffer_bytes: int = 256 * 1024
    # Connections open at once to the API port from one client address (HTTP and world
    # alike; behind a trusted proxy, the address its PROXY header names); 0: no cap.
    max_connections_per_address: int = 256
    # Peers whose connections must start with a PROXY protocol header naming the client
    # (server/proxy.py): the proxies in front of the API port. Nobody by default.
    trusted_proxies: tuple[Network, ...] = ()
    # Zones listed by GET /v1/world/zones even while down (running ones are found in the
    # zone directory), and the lease a zone process holds there: a standby takes over
    # after it.
    world_zones: tuple[str, ...] = ()
    zone_lease_s: float = 3.0
    # Copies JetStream keeps of each stream and of the zone directory: 1, or 3 (or 5) on a
    # cluster of at least as many servers, which then survive the loss of one (or two).
    nats_replicas: int = 1
    # Service credentials beyond their URLs' (docs/operations.md, "Service credentials"):
    # a NATS credentials file (a user JWT and its nkey seed); the CA that signed the NATS
    # server's certificate and a client certificate and key, for NATS's TLS; the CA of a
    # rediss:// server. "": none (TLS then trusts the system's CAs).
    nats_creds: str = ""
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""
    redis_tls_ca: str = ""

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.world_zone_id, *self.world_zones)))


# Variable name -> (field, parser). Each parser raises ValueError on bad input.
def _positive(parse: Callable[[str], Number]) -> Callable[[str], Number]:
    def parse_positive(raw: str) -> Number:
        value = parse(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        if not value > 0:
            raise ValueError("must be greater than zero")
        return value

    return parse_positive


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse_choice(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse_choice


def _not_negative(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number, 0 or more")
    return value


def _whole(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse_whole(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be {what} {low}..{high}")
        return value

    return parse_whole


_port = _whole(0, 65535, "a port number")


def _urls(*schemes: str) -> Callable[[str], str]:
    """One URL or a comma-separated list of them (a cluster's servers), each checked."""
    one = _url(*schemes)

    def parse_urls(raw: str) -> str:
        return ",".join(one(url.strip()) for url in raw.split(","))

    return parse_urls


def _url(*schemes: str) -> Callable[[str], str]:
    def parse_url(raw: str) -> str:
        if not raw.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse_url


def _bounds(raw: str) -> tuple[float, float, float, float]:
    parts = [float(p) for p in raw.split(",")]
    if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
        raise ValueError("must be four finite numbers: min_x,min_y,max_x,max_y")
    min_x, min_y, max_x, max_y = parts
    if not (min_x < max_x and min_y < max_y):
        raise ValueError("min must be below max")
    if not (min_x <= 0 <= max_x and min_y <= 0 <= max_y):
        raise ValueError("must contain (0, 0), where new characters start")
    if max(abs(p) for p in parts) > 1e9:  # positions travel as float32 (docs/protocol.md)
        raise ValueError("must be within -1e9..1e9")
    return min_x, min_y, max_x, max_y


def _origins(raw: str) -> tuple[str, ...]:
    """A comma-separated list (origins lose a trailing slash)."""
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _game(raw: str) -> str:
    """A game that loads (rules/loading.py): `package.module:name`."""
    load(raw)
    return raw


def _map_file(raw: str) -> str:
    """A map file that reads (rules/shooter/map.py), or empty: no walls."""
    if raw:
        read_map(raw)
    return raw


def _readable(raw: str) -> str:
    """A file this process can read (a credential or a certificate): checked at start,
    rather than at a connect that would only retry."""
    try:
        Path(raw).open("rb").close()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    return raw


def _ca_file(raw: str) -> str:
    """PEM certificates to trust."""
    try:
        ssl.create_default_context(cafile=_readable(raw))
    except ssl.SSLError as exc:
        raise ValueError(f"holds no PEM certificate ({exc.reason})") from None
    return raw


def nats_tls(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for NATS, when a TLS setting is given (else nats-py's: a tls:// URL,
    or a server that demands TLS, is then verified against the system's CAs)."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca or None)
    if settings.nats_tls_cert:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key)
    return context


def _check_together(settings: Settings) -> None:
    """What no one variable can tell alone."""
    if bool(settings.nats_tls_cert) != bool(settings.nats_tls_key):
        given, missing = (("NATS_TLS_CERT", "NATS_TLS_KEY") if settings.nats_tls_cert
                          else ("NATS_TLS_KEY", "NATS_TLS_CERT"))
        raise ConfigError(f"{missing} is not set: {given} needs it (a client certificate "
                          "and its key)")
    try:
        nats_tls(settings)
    except ssl.SSLError as exc:
        raise ConfigError(f"NATS_TLS_KEY={settings.nats_tls_key!r} is invalid: not the key "
                          f"of NATS_TLS_CERT ({exc.reason})") from None
    if settings.redis_tls_ca and not settings.redis_url.startswith("rediss://"):
        raise ConfigError("REDIS_TLS_CA is set, but REDIS_URL is not rediss:// (TLS)")


def refused(settings: Settings, exc: Refused) -> ConfigError:
    """A service's refusal (persistence/errors.py) as the setting an operator must fix."""
    variable = {
        ("postgres", "credentials"): "DATABASE_URL",  # its password, user, sslmode: the URL
        ("postgres", "certificate"): "DATABASE_URL",  # sslrootcert=
        ("postgres", "tls"): "DATABASE_URL",
        ("redis", "credentials"): "REDIS_URL",
        ("redis", "certificate"): "REDIS_TLS_CA",
        ("redis", "tls"): "REDIS_URL",
        ("nats", "credentials"): "NATS_CREDS" if settings.nats_creds else "NATS_URL",
        ("nats", "certificate"): "NATS_TLS_CA",
        ("nats", "tls"): "NATS_TLS_CERT",
    }[exc.service, exc.what]
    what = {"credentials": "refused the credentials",
            "certificate": "has a certificate this process does not trust",
            "tls": "refused TLS"}[exc.what]
    return ConfigError(f"{variable}: {_SERVICE_NAMES[exc.service]} {what}: {exc.detail}")


_SERVICE_NAMES = {"postgres": "Postgres", "redis": "Redis", "nats": "NATS"}


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


JWT_TTL_MOST_S = 86400  # an access token cannot be revoked by lack of use: a day at most
REFRESH_TTL_MOST_S = 365 * 86400
KEY_LEAST_BYTES = 32  # HS256's key: as many bytes as its hash (RFC 7518, 3.2)
KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
DEFAULT_KEY_ID = "default"  # JWT_SECRET's: JWT_KEYS="new:...,default:<it>" rotates from it


def _keys(raw: str) -> tuple[tuple[str, str], ...]:
    """`id:secret,id:secret`: unique ids of [A-Za-z0-9_.-], non-empty secrets (no comma)."""
    keys: list[tuple[str, str]] = []
    for part in raw.split(","):
        kid, colon, secret = part.strip().partition(":")
        if not colon or not KEY_ID.fullmatch(kid) or not secret:
            raise ValueError("must be id:secret pairs separated by commas (an id is 1 to 32 "
                             "of A-Z a-z 0-9 _ . -)")
        if kid in dict(keys):
            raise ValueError(f"key id {kid} is listed twice")
        keys.append((kid, secret))
    return tuple(keys)


def _signing_keys(environ: Mapping[str, str], fallbacks: Mapping[str, str],
                  *, dev: bool) -> tuple[tuple[str, str], ...]:
    """JWT_KEYS, or JWT_SECRET as the one key "default" (from the environment, else a
    fallback); outside dev, a key of the environment shorter than KEY_LEAST_BYTES stops
    the process (a fallback is the program's own: dev's random secret, or a placeholder
    of a command that signs nothing)."""
    if environ.get("JWT_KEYS") and environ.get("JWT_SECRET"):
        raise ConfigError("JWT_KEYS and JWT_SECRET are both set: set one (JWT_KEYS lists "
                          f"JWT_SECRET's key as {DEFAULT_KEY_ID}:<secret>)")
    for name in ("JWT_KEYS", "JWT_SECRET"):
        raw, given = environ.get(name), True
        if not raw:
            raw, given = fallbacks.get(name), False
        if not raw:
            continue
        try:
            keys = _keys(raw) if name == "JWT_KEYS" else ((DEFAULT_KEY_ID, _nonempty(raw)),)
        except ValueError as exc:  # the value is a secret: never repeated in the message
            raise ConfigError(f"{name} is invalid: {exc}") from None
        short = [kid for kid, secret in keys if len(secret.encode()) < KEY_LEAST_BYTES]
        if given and short and not dev:
            raise ConfigError(f"{name} is invalid: a key shorter than {KEY_LEAST_BYTES} bytes "
                              f"can be guessed ({', '.join(short)})")
        return keys
    raise ConfigError("JWT_SECRET is not set (nor JWT_KEYS)")


_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "DATABASE_URL": ("database_url", _url("postgresql", "postgres")),
    "REDIS_URL": ("redis_url", _url("redis", "rediss", "unix")),
    "NATS_URL": ("nats_url", _urls("nats", "tls")),
    "NATS_REPLICAS": ("nats_replicas", _whole(1, 5, "a replica count (JetStream's limit)")),
    "JWT_TTL": ("jwt_ttl_s", _whole(1, JWT_TTL_MOST_S, "a number of seconds")),
    "REFRESH_TTL": ("refresh_ttl_s", _whole(60, REFRESH_TTL_MOST_S, "a number of seconds")),
    "CHARACTER_CACHE_TTL": ("character_cache_ttl_s", _positive(int)),
    "WORLD_ZONE_ID": ("world_zone_id", _nonempty),
    "WORLD_TICK_RATE": ("world_tick_rate_hz", _positive(float)),
    "WORLD_MAX_STEP": ("world_max_step", _positive(float)),
    "WORLD_RULES": ("world_rules", _game),
    "WORLD_MAP": ("world_map", _map_file),
    "WORLD_MAX_REWIND_MS": ("world_max_rewind_s", lambda raw: _not_negative(raw) / 1000),
    "WORLD_RESPAWN_S": ("world_respawn_s", _not_negative),
    "MAX_CHARACTERS_PER_USER": ("max_characters_per_user", _positive(int)),
    "HTTP_HOST": ("http_host", _nonempty),
    "HTTP_PORT": ("http_port", _port),
    "METRICS_PORT": ("metrics_port", _port),
    "LOG_FORMAT": ("log_format", _one_of("json", "text")),
    "MAX_BODY_BYTES": ("max_body_bytes", _positive(int)),
    "HTTP_BODY_TIMEOUT": ("http_body_timeout_s", _positive(float)),
    "REDIS_TIMEOUT_MS": ("redis_timeout_s", lambda raw: _positive(float)(raw) / 1000),
    "DB_TIMEOUT_MS": ("db_timeout_s", lambda raw: _positive(float)(raw) / 1000),
    "ARGON2_TIME_COST": ("argon2_time_cost", _positive(int)),
    "ARGON2_MEMORY_KIB": ("argon2_memory_kib", _positive(int)),
    "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS": ("login_failures_per_account_and_address",
                                               _positive(int)),
    "LOGIN_FAILURES_PER_ACCOUNT": ("login_failures_per_account", _positive(int)),
    "LOGIN_RATE_PER_ADDRESS": ("login_rate_per_address", _positive(int)),
    "LOGIN_RATE_WINDOW": ("login_rate_window_s", _positive(float)),
    "REGISTER_RATE_PER_ADDRESS": ("register_rate_per_address", _positive(int)),
    "REGISTER_RATE_TOTAL": ("register_rate_total", _positive(int)),
    "REGISTER_RATE_WINDOW": ("register_rate_window_s", _positive(float)),
    "OUTBOX_POLL_MS": ("outbox_poll_s", lambda raw: _positive(float)(raw) / 1000),
    "WORLD_BOUNDS": ("world_bounds", _bounds),
    "WORLD_CHECKPOINT": ("world_checkpoint_s", _positive(float)),
    "WORLD_VIEW_RADIUS": ("world_view_radius", _not_negative),
    "WORLD_ALLOWED_ORIGINS": ("world_allowed_origins", _origins),
    "WORLD_HANDSHAKE_TIMEOUT": ("world_handshake_timeout_s", _positive(float)),
    "WORLD_JOIN_TIMEOUT": ("world_join_timeout_s", _positive(float)),
    "WORLD_IDLE_TIMEOUT": ("world_idle_timeout_s", _positive(float)),
    "WORLD_SLOW_CLOSE": ("world_slow_close_s", _positive(float)),
    "WORLD_MAX_MESSAGE_BYTES": ("world_max_message_bytes", _positive(int)),
    "WORLD_MAX_MESSAGES_PER_S": ("world_max_messages_per_s", _positive(float)),
    "WORLD_MAX_FRAMES_PER_S": ("world_max_frames_per_s", _positive(float)),
    "WORLD_MAX_SOCKETS_PER_USER": ("world_max_sockets_per_user", _positive(int)),
    "WORLD_SEND_BUFFER": ("world_send_buffer_bytes", _whole(0, 64 << 20, "a number of bytes")),
    "MAX_CONNECTIONS_PER_ADDRESS": ("max_connections_per_address",
                                    _whole(0, 1_000_000, "a number of connections")),
    "TRUSTED_PROXIES": ("trusted_proxies", networks),
    "WORLD_ZONES": ("world_zones", _origins),
    "ZONE_LEASE": ("zone_lease_s", _positive(float)),
    "NATS_CREDS": ("nats_creds", _readable),
    "NATS_TLS_CA": ("nats_tls_ca", _ca_file),
    "NATS_TLS_CERT": ("nats_tls_cert", _readable),
    "NATS_TLS_KEY": ("nats_tls_key", _readable),
    "REDIS_TLS_CA": ("redis_tls_ca", _ca_file),
}

# JWT_SECRET (or JWT_KEYS instead) is read by _signing_keys.
REQUIRED = ("DATABASE_URL", "REDIS_URL", "NATS_URL", "JWT_SECRET")
# Variables no longer read, and what took their place: one still set stops the process
# rather than be ignored (its value would silently stop applying).
RETIRED = {
    "LOGIN_RATE_PER_USERNAME": "LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS and "
                               "LOGIN_FAILURES_PER_ACCOUNT (only failed logins count now, "
                               "per account whichever of its names is typed)",
}


def load_dev_settings(environ: Mapping[str, str], **fallbacks: str) -> Settings:
    """load_settings for `outpost dev` (and a zone joining it): short JWT keys pass."""
    return _load(environ, fallbacks, dev=True)


def load_settings(environ: Mapping[str, str], **fallbacks: str) -> Settings:
    """Read settings from `environ`; `fallbacks` (by variable name) fill what is unset.

    `outpost dev` passes the URLs of the embedded services and a kept secret as
    fallbacks; every other process must be given them.
    """
    return _load(environ, fallbacks, dev=False)


def _load(environ: Mapping[str, str], fallbacks: Mapping[str, str], *, dev: bool) -> Settings:
    for name, instead in RETIRED.items():
        if name in environ:
            raise ConfigError(f"{name} is no longer read: set {instead}")
    values: dict[str, object] = {}
    for name, (field, parse) in _VARIABLES.items():
        raw = environ.get(name) or fallbacks.get(name)
        if raw is None:
            if name in REQUIRED:
                raise ConfigError(f"{name} is not set")
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None
    values["jwt_keys"] = _signing_keys(environ, fallbacks, dev=dev)
    settings = Settings(**values)  # type: ignore[arg-type]  # each parser makes its field's type
    _check_together(settings)
    return settings

