"""Django settings, configured by environment variables (see the README)."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from brokeforge.home import ensure_home, read_secret

HOME = ensure_home()

SECRET_KEY = os.environ.get("BROKEFORGE_SECRET_KEY") or read_secret("secret_key")
DEBUG = os.environ.get("BROKEFORGE_DEBUG", "") == "1"
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("BROKEFORGE_ALLOWED_HOSTS", "*").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip()
    for o in os.environ.get("BROKEFORGE_CSRF_TRUSTED_ORIGINS", "").split(",")
    if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_tasks",
    "django_tasks_db",
    "django_htmx",
    "brokeforge.accounts",
    "brokeforge.servers",
    "brokeforge.lifecycle",
    "brokeforge.packages",
    "brokeforge.web",
    "brokeforge.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "brokeforge.web.middleware.FirstRunMiddleware",
]

ROOT_URLCONF = "brokeforge.urls"
ASGI_APPLICATION = "brokeforge.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_SQLITE_OPTIONS = {
    # WAL lets the web process read while a worker writes; IMMEDIATE takes
    # the write lock at BEGIN, so two writers queue on the busy timeout
    # instead of failing a lock upgrade half-way through a transaction.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    # Seconds a writer waits for the lock before "database is locked".
    "timeout": float(os.environ.get("BROKEFORGE_SQLITE_BUSY_TIMEOUT", "20")),
}

_database_url = os.environ.get("BROKEFORGE_DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        DATABASES["default"]["OPTIONS"] = _SQLITE_OPTIONS
    else:
        # A connection per request costs PostgreSQL a new backend process
        # each time: keep each thread's for a while, checked before reuse.
        DATABASES["default"]["CONN_MAX_AGE"] = 60
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(HOME / "brokeforge.sqlite3"),
            "OPTIONS": _SQLITE_OPTIONS,
            "TEST": {"NAME": str(HOME / "test.sqlite3")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "server-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"

# How long apt waits for a dpkg lock held by another process before it gives
# up with its own message (seconds).
BROKEFORGE_APT_LOCK_TIMEOUT = int(os.environ.get("BROKEFORGE_APT_LOCK_TIMEOUT", "300"))
# Seconds to wait for a TCP connection and SSH handshake to a server.
BROKEFORGE_CONNECT_TIMEOUT = float(os.environ.get("BROKEFORGE_CONNECT_TIMEOUT", "15"))
if not 0 < BROKEFORGE_CONNECT_TIMEOUT <= 600:
    raise ImproperlyConfigured("BROKEFORGE_CONNECT_TIMEOUT must be between 0 and 600")


# Where MySQL's own apt repository lives (Debian has no mysql-server).
def _seconds(name: str, default: float, upper: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds") from None
    if not 0 < value <= upper:
        raise ImproperlyConfigured(f"{name} must be between 0 and {upper:g} seconds")
    return value


def _seconds_or_zero(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds") from None


# How long a heartbeat vouches for a worker and its operation.
BROKEFORGE_LEASE_SECONDS = _seconds("BROKEFORGE_LEASE_SECONDS", 15, 3600)
# A queued operation no worker took within this long is failed, saying so.
BROKEFORGE_QUEUE_TIMEOUT = _seconds("BROKEFORGE_QUEUE_TIMEOUT", 1800, 7 * 86400)
# On SIGTERM, a worker's running operation gets this long before it is ended.
BROKEFORGE_SHUTDOWN_GRACE = _seconds("BROKEFORGE_SHUTDOWN_GRACE", 5, 3600)


# Reverse proxies (addresses or networks, comma-separated) whose
# X-Forwarded-For header names the client in the audit log.
def _networks(name: str) -> list[IPv4Network | IPv6Network]:
    found = []
    for part in os.environ.get(name, "").split(","):
        if not part.strip():
            continue
        try:
            found.append(ip_network(part.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {part.strip()!r} is not an IP address or network"
            ) from None
    return found


BROKEFORGE_TRUSTED_PROXIES = _networks("BROKEFORGE_TRUSTED_PROXIES")
# An unused SSH connection to a server is kept this long for the next
# operation (0: no reuse between operations); read by servers.ssh.
if not 0 <= _seconds_or_zero("BROKEFORGE_SSH_IDLE_SECONDS", 60) <= 3600:
    raise ImproperlyConfigured(
        "BROKEFORGE_SSH_IDLE_SECONDS must be from 0 to 3600 seconds"
    )
# `brokeforge serve` reads every server's monitoring samples this often.
BROKEFORGE_METRICS_INTERVAL = _seconds("BROKEFORGE_METRICS_INTERVAL", 60, 86400)
# How often an idle worker looks for new work: 0.1 s on SQLite; on
# PostgreSQL a NOTIFY wakes it and this look is only a safety net (2 s).
BROKEFORGE_QUEUE_POLL_SECONDS = (
    _seconds("BROKEFORGE_QUEUE_POLL_SECONDS", 1, 3600)
    if os.environ.get("BROKEFORGE_QUEUE_POLL_SECONDS")
    else None
)

BROKEFORGE_MYSQL_APT_URL = os.environ.get(
    "BROKEFORGE_MYSQL_APT_URL", "https://repo.mysql.com"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "brokeforge": {
            "handlers": ["console"],
            "level": os.environ.get("BROKEFORGE_LOG_LEVEL", "INFO"),
        },
    },
}
