"""``PxlsSettings``: every knob of the source, validated, with production defaults.

Durations are :class:`datetime.timedelta`; :meth:`PxlsSettings.from_mapping` also
takes them as numbers of seconds (the host's config file). Secrets come from the
environment (``PXLS_TOKEN``, ``PXLS_CF_AUTH``) and are wrapped in :class:`Secret`,
whose repr and str never show the value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs

from .errors import ConfigError, StoreError
from .util.text import shown
from .util.times import fmt_duration
from .version import VERSION

TOKEN_ENV = "PXLS_TOKEN"  # noqa: S105 (the variable name, not a secret)
CF_AUTH_ENV = "PXLS_CF_AUTH"

DEFAULT_USER_AGENT = (
    f"neuro-chat-elo-pxls/{VERSION} (neuro-chat-elo community leaderboard; "
    "one request in flight, at most 1 profile/s)"
)


class Secret:
    """A secret string. ``repr``/``str`` show ``Secret('***')``; call :meth:`reveal`.

    Deliberately not an attrs class: ``attrs.asdict(settings)`` keeps it as this
    object (shown as ``***``) instead of turning it into a dict with the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.isprintable():
            raise ConfigError("a secret must be printable text (no CR, LF or other controls)")
        self._value = value

    def reveal(self) -> str:
        """The secret's text: only for the request that sends it (never log it)."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _secret_from_env(name: str) -> Secret | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isprintable():  # never echo the value
        raise ConfigError(f"{name} contains control characters (CR, LF, ...): set it again")
    return Secret(value)


def _duration(value: object) -> str:
    """A duration in a config error, in the one duration format (``30s`` was printed
    as Python's ``0:00:30``); what ``fmt_duration`` cannot show exactly, in seconds."""
    if not isinstance(value, timedelta):
        return repr(value)
    if value >= timedelta(seconds=1) and not value.microseconds:
        return fmt_duration(value)
    return f"{value.total_seconds():g} s"


def _positive(instance: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ConfigError(f"{attribute.name} must be a positive duration, got {_duration(value)}")


def _at_least(minimum: timedelta) -> Any:
    def check(instance: object, attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _positive(instance, attribute, value)
        if value < minimum:
            raise ConfigError(
                f"{attribute.name} must be at least {_duration(minimum)}, got {_duration(value)}"
            )

    return check


def _base_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ConfigError(f"base_url must be an http(s) URL, got {value!r}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"base_url is not a usable URL: {value!r} ({exc})") from exc
    if not parts.hostname or parts.query or parts.fragment or not value.isprintable():
        raise ConfigError(
            f"base_url must be scheme://host[:port][/path] without query or fragment, got {value!r}"
        )


def _header_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.isprintable() or not value.isascii():
        raise ConfigError(
            f"{attribute.name} must be printable ASCII (it goes into an HTTP header), "
            f"got {value!r:.80}"
        )


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {value!r}")


def _names(value: object) -> tuple[str, ...]:
    """A list of names (strings) as a tuple; validity of each name is the follow
    list's business (invalid ones are reported and skipped, not fatal)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"a name list must be a list of pxls names, got {value!r:.80}")
    if not all(isinstance(name, str) for name in value):
        raise ConfigError(f"a name list must be a list of strings, got {value!r:.80}")
    return tuple(value)


def _faction_ids(value: object) -> tuple[int, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"follow_factions must be a list of faction ids, got {value!r:.80}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value):
        raise ConfigError(f"follow_factions must be positive integers, got {value!r:.80}")
    return tuple(value)


def _optional_path(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{attribute.name} must be a file path, got {value!r:.80}")


def _delivery(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("drain", "ack"):
        raise ConfigError(f"delivery must be 'drain' or 'ack', got {value!r}")


_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _instance(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not (isinstance(value, str) and _INSTANCE.fullmatch(value)):
        raise ConfigError(
            "instance must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
            f"or digit), got {value!r:.80}"
        )


def _profile_endpoint(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("api", "html"):
        raise ConfigError(f"profile_endpoint must be 'api' or 'html', got {value!r}")


@attrs.frozen
class PxlsSettings:
    """Configuration of one :class:`~neuro_chat_elo_pxls.PxlsSource`.

    ``profile_cooldown`` is the minimum host time between two profile requests;
    ``enrichment_hold`` the longest a new user's first delta waits for its profile;
    ``auth_pause`` how long profile requests stop after a 403 or challenge (doubling
    while it repeats, up to ``auth_pause_max``). ``delivery``: ``"drain"`` (the
    contract: ``collect_deltas`` removes what it returns, at-most-once across a host
    crash) or ``"ack"`` (at-least-once: rows stay until
    :meth:`~neuro_chat_elo_pxls.PxlsSource.ack_deltas`; de-duplicate on ``seq``).
    """

    base_url: str = attrs.field(default="https://pxls.space", validator=_base_url)
    db_path: str = attrs.field(default="pxls.sqlite3", validator=attrs.validators.instance_of(str))
    leaderboard_interval: timedelta = attrs.field(
        default=timedelta(hours=1), validator=_at_least(timedelta(minutes=1))
    )
    sweep_interval: timedelta = attrs.field(default=timedelta(hours=24), validator=_positive)
    profile_cooldown: timedelta = attrs.field(default=timedelta(seconds=1), validator=_positive)
    enrichment_hold: timedelta = attrs.field(default=timedelta(hours=1), validator=_positive)
    request_timeout: timedelta = attrs.field(default=timedelta(seconds=20), validator=_positive)
    backoff_initial: timedelta = attrs.field(
        default=timedelta(seconds=30), validator=_at_least(timedelta(seconds=1))
    )
    backoff_max: timedelta = attrs.field(default=timedelta(minutes=15), validator=_positive)
    auth_pause: timedelta = attrs.field(
        default=timedelta(minutes=15), validator=_at_least(timedelta(minutes=15))
    )
    auth_pause_max: timedelta = attrs.field(default=timedelta(hours=2), validator=_positive)
    max_attempts: int = attrs.field(default=5, validator=_positive_int)
    max_stats_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int)
    max_page_bytes: int = attrs.field(default=1024 * 1024, validator=_positive_int)
    profile_endpoint: str = attrs.field(default="api", validator=_profile_endpoint)
    delivery: str = attrs.field(default="drain", validator=_delivery)
    #: people to follow beyond the top 1000 (DESIGN 7): names, a file of names (one
    #: per line, ``#`` comments, re-read when it changes), displayed faction ids
    follow: tuple[str, ...] = attrs.field(default=(), converter=_names)
    follow_file: str | None = attrs.field(default=None, validator=_optional_path)
    follow_factions: tuple[int, ...] = attrs.field(default=(), converter=_faction_ids)
    #: people who asked not to be counted (DESIGN 10): names, and a file of names
    opt_out: tuple[str, ...] = attrs.field(default=(), converter=_names)
    opt_out_file: str | None = attrs.field(default=None, validator=_optional_path)
    follow_interval: timedelta = attrs.field(
        default=timedelta(hours=1), validator=_at_least(timedelta(minutes=10))
    )
    user_agent: str = attrs.field(default=DEFAULT_USER_AGENT, validator=_header_text)
    #: the pxls instance's name, carried by every EloDelta (None: ``base_url``'s host)
    instance: str | None = attrs.field(default=None, validator=_instance)
    #: the environment variables the secrets came from (messages name them; a
    #: ``[pxls.instances.NAME]`` table's are ``PXLS_TOKEN_NAME``, ``PXLS_CF_AUTH_NAME``)
    secret_envs: tuple[str, str] = (TOKEN_ENV, CF_AUTH_ENV)
    #: the ``[pxls.instances.NAME]`` table these settings came from (None: none); not a
    #: config key: the operator's name for the instance in headings, tags and errors
    table: str | None = None
    token: Secret | None = attrs.field(factory=lambda: _secret_from_env(TOKEN_ENV), repr=False)
    cf_auth: Secret | None = attrs.field(factory=lambda: _secret_from_env(CF_AUTH_ENV), repr=False)

    def __attrs_post_init__(self) -> None:
        """Settings that only make sense together."""
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                f"backoff_max ({_duration(self.backoff_max)}) is shorter than backoff_initial "
                f"({_duration(self.backoff_initial)}): raise backoff_max or lower backoff_initial"
            )
        if self.auth_pause_max < self.auth_pause:
            raise ConfigError(
                f"auth_pause_max ({_duration(self.auth_pause_max)}) is shorter than auth_pause "
                f"({_duration(self.auth_pause)}): raise auth_pause_max or lower auth_pause"
            )

    @property
    def label(self) -> str | None:
        """The name an operator knows this instance by, for log tags, headings and
        errors: the table's name (with the instance name when the table sets another:
        ``space (pxls.space)``), or the explicit ``instance``; None without either."""
        if self.table is None:
            return self.instance
        if self.instance is None or self.instance == self.table:
            return self.table
        return f"{self.table} ({self.instance})"

    @property
    def instance_name(self) -> str:
        """``instance``, or the host name of ``base_url`` (``pxls.space``): with ``seq``
        it names a delta uniquely across sources (each has its own database)."""
        if self.instance is not None:
            return self.instance
        host = urllib.parse.urlsplit(self.base_url).hostname or "pxls"
        return host.lower()

    @property
    def profiles_enabled(self) -> bool:
        """Profiles need a logged-in session: without ``PXLS_TOKEN`` none is requested."""
        return self.token is not None

    def summary(self) -> str:
        """The version and the effective settings that matter, for the start-up line
        (no secret: only whether ``PXLS_TOKEN`` is set)."""
        return (
            f"neuro-chat-elo-pxls {VERSION}, instance {self.instance_name} ({self.base_url}), "
            "profiles "
            f"{'on' if self.profiles_enabled else f'off ({self.secret_envs[0]} not set)'}, "
            f"leaderboard every {_duration(self.leaderboard_interval)}, sweep every "
            f"{_duration(self.sweep_interval)}, profile cooldown "
            f"{_duration(self.profile_cooldown)}, delivery {self.delivery}"
        )

    @classmethod
    def field_names(cls) -> list[str]:
        """Keys accepted by :meth:`from_mapping` (secrets excluded: they come from env)."""
        return [
            f.name
            for f in attrs.fields(cls)
            if f.name not in ("token", "cf_auth", "secret_envs", "table")
        ]

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> PxlsSettings:
        """Build settings from a config section; durations may be numbers of seconds.

        Raises :class:`ConfigError` naming an unknown key and listing the valid ones.
        """
        if not isinstance(section, Mapping):
            raise ConfigError(f"the pxls config section must be a mapping, got {type(section)}")
        valid = cls.field_names()
        unknown = sorted(set(section) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown pxls setting(s) {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(valid)}"
            )
        kwargs: dict[str, Any] = {}
        durations = {f.name for f in attrs.fields(cls) if f.type in ("timedelta", timedelta)}
        for key, value in section.items():
            if key in durations and not isinstance(value, timedelta):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{key} must be a number of seconds, got {value!r}")
                try:
                    value = timedelta(seconds=value)
                except (OverflowError, ValueError) as exc:  # 1e300, nan, inf
                    raise ConfigError(
                        f"{key} must be a finite number of seconds, got {value!r}"
                    ) from exc
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # wrong type for a plain field
            raise ConfigError(str(exc)) from exc


def _env_suffix(name: str) -> str:
    """``ironmouse-canvas`` → ``IRONMOUSE_CANVAS``: an instance's secrets' names."""
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def instance_env(name: str) -> tuple[str, str]:
    """The environment variables of an instance's secrets (``[pxls.instances.NAME]``):
    ``PXLS_TOKEN_NAME`` and ``PXLS_CF_AUTH_NAME``."""
    return f"{TOKEN_ENV}_{_env_suffix(name)}", f"{CF_AUTH_ENV}_{_env_suffix(name)}"


def instances_from_config(section: Mapping[str, Any]) -> list[PxlsSettings]:
    """The settings of every pxls instance of a ``[pxls]`` section (DESIGN 9).

    Without an ``instances`` table: one instance, exactly as before (secrets from
    ``PXLS_TOKEN``/``PXLS_CF_AUTH``). With ``[pxls.instances.NAME]`` tables: one each,
    named ``NAME`` (unless it sets ``instance``), inheriting every other ``[pxls]`` key
    and overriding what it sets, with its own secrets from :func:`instance_env`'s
    variables. Two instances on one database file, or with one name, are refused.
    Raises :class:`ConfigError`.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(f"the pxls config section must be a mapping, got {type(section)}")
    tables = section.get("instances")
    if tables is None:
        return [PxlsSettings.from_mapping(section)]
    if not isinstance(tables, Mapping) or not tables:
        raise ConfigError("pxls.instances must be tables: [pxls.instances.NAME]")
    defaults = {k: v for k, v in section.items() if k != "instances"}
    found: list[PxlsSettings] = []
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"pxls.instances.{name} must be a table, got {table!r:.40}")
        if len(tables) > 1 and "base_url" not in table:  # (else its token goes to
            raise ConfigError(  # the inherited site, in the name of another instance)
                f"pxls.instances.{name} sets no base_url: with several instances, each "
                "table names its own site"
            )
        try:
            settings = PxlsSettings.from_mapping({**defaults, "instance": name, **table})
        except ConfigError as exc:
            raise ConfigError(f"pxls.instances.{name}: {exc}") from exc
        token_env, cf_env = instance_env(name)
        found.append(
            attrs.evolve(
                settings,
                token=_secret_from_env(token_env),
                cf_auth=_secret_from_env(cf_env),
                secret_envs=(token_env, cf_env),
                table=name,
            )
        )
    _check_apart(found)
    return found


def site_of(base_url: str) -> tuple[str, int]:
    """The site a ``base_url`` names: its host (lower case) and port (the scheme's
    default if none). One site gets one source: its politeness budget (one request in
    flight, one profile a second) is per site, not per table."""
    parts = urllib.parse.urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.hostname or "").lower(), port


def _check_apart(found: list[PxlsSettings]) -> None:
    """Instances of one config: distinct names, sites, secrets and database files."""
    names = [s.instance_name for s in found]
    paths = [os.path.realpath(s.db_path) for s in found]
    sites = [site_of(s.base_url) for s in found]
    for i, settings in enumerate(found):
        for j in range(i):
            if names[i] == names[j]:
                raise ConfigError(f"two pxls instances are named {names[i]!r}")
            if sites[i] == sites[j]:
                raise ConfigError(
                    f"pxls instances {names[j]!r} and {names[i]!r} are one site "
                    f"({found[j].base_url} and {settings.base_url}): two sources would "
                    "double the requests its admins allowed; keep one"
                )
            if settings.secret_envs == found[j].secret_envs:
                raise ConfigError(
                    f"pxls instances {names[j]!r} and {names[i]!r} would read the same "
                    f"secrets ({settings.secret_envs[0]}): rename one"
                )
            if paths[i] == paths[j]:
                raise ConfigError(
                    f"pxls instances {names[j]!r} and {names[i]!r} share db_path "
                    f"{settings.db_path!r}: each instance needs its own database"
                )


def credentials_fingerprint(settings: PxlsSettings, salt: str, *, profiles: bool = True) -> str:
    """A salted HMAC of the secrets one key's requests carry, to tell a restart with
    other credentials from one with the same (never the secrets themselves; "" without
    any). Profile requests carry ``PXLS_TOKEN`` and ``PXLS_CF_AUTH``; stats.json and
    ``/info`` only ``PXLS_CF_AUTH`` (``profiles=False``): a new token does not lift a
    leaderboard pause."""
    secrets = (settings.token, settings.cf_auth) if profiles else (settings.cf_auth,)
    if all(s is None for s in secrets):
        return ""
    material = "\0".join(s.reveal() if s is not None else "" for s in secrets)
    return hmac.new(salt.encode(), material.encode(), hashlib.sha256).hexdigest()[:32]


def check_database_instance(recorded: str, settings: PxlsSettings) -> None:
    """Every command (``run``, ``status``, ``export``) refuses a database that belongs to
    another pxls instance than ``settings`` names (``recorded``: the instance the
    database remembers, "" if none yet). Raises :class:`StoreError` saying what to do."""
    instance = settings.instance_name
    if recorded and recorded != instance:
        raise StoreError(
            f"{settings.db_path} belongs to pxls instance {shown(recorded)}, not "
            f"{shown(settings.label or instance)}: if it is the same pxls (a new base_url, a "
            f'config moved into [pxls.instances.NAME]), set instance = "{shown(recorded)}" '
            "there; if not, give this instance its own db_path (seqs are per database)"
        )
