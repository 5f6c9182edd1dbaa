"""VirtLab settings: one file, driven by environment variables.

SQLite and a local Redis are the embedded default; DATABASE_URL switches to PostgreSQL.
Secrets come from the environment or from a file named by <NAME>_FILE.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def env(name: str, default: str = "") -> str:
    """Read NAME from the environment, or the contents of the file named by NAME_FILE.

    An empty or unreadable NAME_FILE is an error: a secret that silently became "" would be worse.
    """
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path}: cannot read the file ({exc.strerror})") from exc
        if not value:
            raise ImproperlyConfigured(f"{name}_FILE={path}: the file is empty")
        return value
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """1/0, true/false, yes/no, on/off (any case); unset or empty means the default. Anything else,
    a typo like `ture`, is an error rather than a silent False."""
    value = env(name).strip()
    if not value:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def env_int(name: str, default: int) -> int:
    """An integer; unset or empty means the default, anything else that is not an integer is an error."""
    value = env(name).strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None


def env_count(name: str, default: int) -> int:
    """env_int that must not be negative (0 is meaningful: none, or a limit turned off)."""
    value = env_int(name, default)
    if value < 0:
        raise ImproperlyConfigured(f"{name}={value} must not be negative")
    return value


def env_positive_int(name: str, default: int) -> int:
    """env_int that must be at least 1 (a count or a window: 0 or less would disable or break it)."""
    value = env_int(name, default)
    if value < 1:
        raise ImproperlyConfigured(f"{name}={value} must be at least 1")
    return value


DEBUG = env_bool("DEBUG", False)
# Runtime files (SQLite DB, dev secret key, beat schedule); scripts/setup.sh creates the directory.
# Importing settings writes nothing: read-only containers and parallel test stacks import it too.
VAR_DIR = Path(env("VIRTLAB_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    # Production sets SECRET_KEY (or SECRET_KEY_FILE); `check --deploy` enforces its strength.
    # In development, scripts/setup.sh (`make setup`) keeps a random key in var/secret_key.
    key = env("SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        raise ImproperlyConfigured(
            f"No secret key: set SECRET_KEY (or SECRET_KEY_FILE), or run `make setup`, which creates {path}"
        ) from None
    except OSError as exc:
        raise ImproperlyConfigured(f"{path}: cannot read the secret key ({exc.strerror})") from exc
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: run `make setup` (it writes a new key) or set SECRET_KEY")
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [h for h in env("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "csp",
    "axes",
    "django_ratelimit",
    "ninja",  # /api/docs serves Swagger UI from our static files, not a CDN (CONTENT_SECURITY_POLICY)
    "portal",
    "portal.kb",
    "labs",
    "labs.timeline",
    "classes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # tells portal.client_share whose session cookie a request carried, once it is checked
    "portal.client_share.LearnClients",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'virtlab.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web tier read while a worker writes; busy timeout avoids "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")


# What one consumer's channel may hold in its web process when the consumer falls behind (a web
# process short of CPU under a console flood); past it the consumer resyncs (portal/channel_layer.py).
CHANNEL_QUEUE_MAX_BYTES = env_positive_int("CHANNEL_QUEUE_MAX_BYTES", 1024 * 1024)


def channel_layers(redis_url: str, queue_max_bytes: int = CHANNEL_QUEUE_MAX_BYTES) -> dict[str, Any]:
    """Redis pub/sub layer: nothing is queued in Redis (the terminal keeps its own scrollback,
    pages reload state on connect), and no consumer blocks in BZPOPMIN. A cancelled blocking pop
    can swallow its CancelledError in redis-py (redis/redis-py#2028), which left closed sockets'
    tasks looping forever with the list-based layer. Each channel's queue in the process is
    bounded (portal/channel_layer.py)."""
    return {"default": {"BACKEND": "portal.channel_layer.BoundedPubSubChannelLayer",
                        "CONFIG": {"hosts": [{"address": redis_url}], "queue_max_bytes": queue_max_bytes}}}  # fmt: skip


CHANNEL_LAYERS = channel_layers(REDIS_URL)
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "virtlab",
    }
}

# Celery: Redis broker; long VM tasks are acknowledged late and survive a lost worker.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 900  # the longest VM task (a cold boot plus setup) is far below this
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_DEFAULT_QUEUE = "web"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers (only they) import the host side's tasks; web processes send them work by name
# through labs.task_calls and never load libvirt.
CELERY_IMPORTS = ["labs.host.tasks"]
# Beat writes its schedule file after every task it sends: the file's age is beat's heartbeat
# (the docker-compose.yml healthcheck reads it).
CELERY_BEAT_SYNC_EVERY = 1

# The hypervisor host this process serves when it runs as a host agent.
VIRTLAB_HOST_NAME = env("VIRTLAB_HOST_NAME", "local")
LIBVIRT_URI = env("LIBVIRT_URI", "qemu:///system")
# A host agent proves at start-up that VMs run confined (per-VM uid, seccomp, CPU quota) and takes
# no VMs otherwise; 1 runs them anyway (a development host without libvirt's DAC driver, say).
LABS_ALLOW_UNCONFINED = env_bool("LABS_ALLOW_UNCONFINED", False)
GUEST_IMAGE_DIR = Path(env("VIRTLAB_GUEST_IMAGE", "/var/cache/virtlab/guest/current"))
CONTENT_DIR = Path(env("VIRTLAB_CONTENT_DIR", str(BASE_DIR / "content")))

# GET /healthz (portal/health.py): anyone gets ok/degraded; the checks (hosts, URLs, paths) go to
# staff and to requests sending `Authorization: Bearer <HEALTHZ_TOKEN>` (empty: staff only).
HEALTHZ_TOKEN = env("HEALTHZ_TOKEN")
HEALTHZ_CACHE_S = env_int("HEALTHZ_CACHE_S", 5)  # each web process probes at most once per this

# Lab sessions (labs/services/limits.py): per-learner limits, lifetimes, warm pool, id namespace.
LABS_MAX_RUNNING_PER_USER = env_int("LABS_MAX_RUNNING_PER_USER", 1)
LABS_START_RATE = env_int("LABS_START_RATE", 6)  # starts per learner per window
LABS_START_RATE_WINDOW_S = env_int("LABS_START_RATE_WINDOW_S", 600)
# Checks run on the host over output the learner controls: one in flight per session (the marker
# expires after LABS_CHECK_INFLIGHT_TTL_S should its worker die), a rate per learner, and a cap on
# what a check command may print (each of stdout and stderr; at most 1536 KiB, libvirt's limit).
LABS_CHECK_RATE = env_int("LABS_CHECK_RATE", 20)  # checks per learner per window
LABS_CHECK_RATE_WINDOW_S = env_int("LABS_CHECK_RATE_WINDOW_S", 60)
# ... and seconds of check-worker time per learner per window: a quick check takes < 1 s; checks a
# guest stalls to their timeout (30 s) would hold a worker other learners' checks wait for.
LABS_CHECK_SECONDS = env_int("LABS_CHECK_SECONDS", 20)
LABS_CHECK_INFLIGHT_TTL_S = env_int("LABS_CHECK_INFLIGHT_TTL_S", 180)
LABS_CHECK_OUTPUT_MAX_BYTES = env_int("LABS_CHECK_OUTPUT_MAX_BYTES", 1024 * 1024)
LABS_STEP_RESULTS_KEPT = env_int("LABS_STEP_RESULTS_KEPT", 20)  # stored check results per step of a session
LABS_TTL_S = env_int("LABS_TTL_S", 45 * 60)
LABS_EXTEND_S = env_int("LABS_EXTEND_S", 15 * 60)
LABS_MAX_LIFETIME_S = env_int("LABS_MAX_LIFETIME_S", 2 * 3600)
LABS_IDLE_TIMEOUT_S = env_int("LABS_IDLE_TIMEOUT_S", 20 * 60)
LABS_MAX_VMS_PER_HOST = env_int("LABS_MAX_VMS_PER_HOST", 0)  # 0: as many as memory allows
# CPU, under TCG: a boot costs ~8 s of one core, so a host boots at most LABS_BOOTS_PER_CPU VMs per
# core at once (more only slows every boot and every learner's echo); idle guests cost ~0.2 % of a
# core each and answer commands in 40-50 ms with 32 running on 2 cores (shared/notes/vm-probe.md,
# clone-probe.md), so a TCG host runs at most LABS_TCG_VMS_PER_CPU per core (0: memory only).
LABS_BOOTS_PER_CPU = env_int("LABS_BOOTS_PER_CPU", 1)
# Disk: each new session is budgeted this much (overlay growth plus checkpoints of ~75 MiB each),
# and a host keeps the reserve free (no new VM or checkpoint below it: a VM that finds its disk full pauses).
LABS_DISK_PER_SESSION_MIB = env_int("LABS_DISK_PER_SESSION_MIB", 1024)
LABS_DISK_RESERVE_MIB = env_int("LABS_DISK_RESERVE_MIB", 2048)
LABS_MAX_QUEUED = env_int("LABS_MAX_QUEUED", 100)  # starts waiting for a slot, over all hosts
LABS_QUEUE_TIMEOUT_S = env_int("LABS_QUEUE_TIMEOUT_S", 15 * 60)  # a start waiting longer expires
LABS_TCG_VMS_PER_CPU = env_int("LABS_TCG_VMS_PER_CPU", 16)
# Warm VMs per host: "<profile>=N" serves any lab of that profile; "lab:<slug>=N" is prepared
# for one lab (step 1 set up and checkpointed in advance), e.g. "tiny=1,lab:qemu-img=1".
LABS_POOL_SIZES = env("LABS_POOL_SIZES", "tiny=1")
LABS_REAP_GRACE_S = env_int("LABS_REAP_GRACE_S", 120)  # spare unknown VMs younger than this
# A VM that has used over LABS_CPU_HOG_PCT % of its cores for LABS_CPU_HOG_AFTER_S gets a
# sixteenth of its CPU weight until it is calm as long (labs/host/cpu_hogs.py); 0 s: never.
LABS_CPU_HOG_AFTER_S = env_count("LABS_CPU_HOG_AFTER_S", 15)
LABS_CPU_HOG_PCT = env_positive_int("LABS_CPU_HOG_PCT", 50)
# A session provisioning longer than this was interrupted (its worker died).
LABS_PROVISION_TIMEOUT_S = env_int("LABS_PROVISION_TIMEOUT_S", 300)
# A host whose advert has been gone this long (after its 30 s expiry) is lost: its sessions fail.
# Keep it above 20 s: a Redis that restarts empty drops every advert, and agents refresh theirs
# every 10 s (20 s if the first try hits the restart).
LABS_HOST_LOST_S = env_int("LABS_HOST_LOST_S", 60)
LABS_ID_PREFIX = env("LABS_ID_PREFIX", "")  # session/pool VM ids start with it; the reaper spares others
# Websockets (labs/limited_consumer.py): what one socket may send and hold. LABS_WS_MAX_FRAME_BYTES is
# also uvicorn's --ws-max-size (Procfile, docker-compose.yml), so a bigger frame never reaches Django.
LABS_WS_MAX_FRAME_BYTES = env_int("LABS_WS_MAX_FRAME_BYTES", 64 * 1024)  # one paste of up to 64 KiB
# A token bucket per socket, and one per session in the console relay (labs/host/console_relay.py):
# a fast typist sends < 100 B/s; a paste is a burst up to the bucket.
LABS_WS_INPUT_RATE_BPS = env_int("LABS_WS_INPUT_RATE_BPS", 4 * 1024)
LABS_WS_INPUT_BURST_BYTES = env_int("LABS_WS_INPUT_BURST_BYTES", 64 * 1024)
# Output waiting for a slow or non-reading client; past it the client resyncs from the scrollback
# (64 KiB, trimmed at 128 KiB by the relay: keep this above that).
LABS_WS_MAX_PENDING_BYTES = env_int("LABS_WS_MAX_PENDING_BYTES", 256 * 1024)
LABS_WS_PER_USER = env_int("LABS_WS_PER_USER", 8)  # open terminal sockets per user, and events sockets
# Keystroke frames waiting in Redis for the host's console relay (it holds them while step 1's
# checkpoint is taken); more are dropped with a notice: at most this x LABS_WS_MAX_FRAME_BYTES.
LABS_TERMINAL_INPUT_QUEUE = env_int("LABS_TERMINAL_INPUT_QUEUE", 128)
# Session timelines (labs/timeline/): the host writes each running session's record under
# LABS_TIMELINE_DIR, then stores it gzipped in the DB when the session ends. A record stops taking
# terminal bytes at LABS_TIMELINE_MAX_BYTES (it notes the cut; the lab goes on); records are kept
# LABS_TIMELINE_KEEP_DAYS; staff may replay every session unless LABS_TIMELINE_STAFF_SEES is off.
LABS_TIMELINE_ENABLED = env_bool("LABS_TIMELINE_ENABLED", True)
LABS_TIMELINE_DIR = Path(env("LABS_TIMELINE_DIR", str(VAR_DIR / "timelines")))
LABS_TIMELINE_MAX_BYTES = env_positive_int("LABS_TIMELINE_MAX_BYTES", 8 * 1024 * 1024)
LABS_TIMELINE_KEEP_DAYS = env_positive_int("LABS_TIMELINE_KEEP_DAYS", 90)
LABS_TIMELINE_STAFF_SEES = env_bool("LABS_TIMELINE_STAFF_SEES", True)
# Hooks of the apps built on labs (labs/hooks.py): labs calls them by name and never imports them.
# A class's instructors observe its seats' sessions; a seat's change goes to the class's live
# grid; a learner's page replays the class's recent messages when it connects.
LABS_OBSERVER_RULES = ["classes.access.observed_sessions"]
LABS_SESSION_LISTENERS = ["classes.live.on_session_event"]
LABS_SESSION_GREETERS = ["classes.messages.recent_messages"]
# Instructors' messages to learners (classes/messages.py): length, and how many a minute per sender.
CLASSES_MESSAGE_MAX_CHARS = env_int("CLASSES_MESSAGE_MAX_CHARS", 1000)
CLASSES_MESSAGE_RATE = env_int("CLASSES_MESSAGE_RATE", 20)

# Instructor classes (classes/): sizes, and how often a learner (and a network: a class behind one
# NAT address is one IP) may try invite codes per window.
CLASSES_MAX_SEATS = env_positive_int("CLASSES_MAX_SEATS", 200)
CLASSES_MAX_WAITING = env_positive_int("CLASSES_MAX_WAITING", 50)  # learners in line for a seat, per class
CLASSES_MAX_LABS = env_positive_int("CLASSES_MAX_LABS", 10)
CLASSES_MAX_HOURS = env_positive_int("CLASSES_MAX_HOURS", 12)
CLASSES_JOIN_RATE = env_positive_int("CLASSES_JOIN_RATE", 10)  # join attempts per account per window
CLASSES_JOIN_IP_RATE = env_positive_int("CLASSES_JOIN_IP_RATE", 120)  # per IP per window
CLASSES_JOIN_RATE_WINDOW_S = env_positive_int("CLASSES_JOIN_RATE_WINDOW_S", 300)
# State-changing class actions (pages and API: seat and class actions, invites, co-instructors,
# leaving, …) per account per window: a script or a stuck button cannot flood the hosts with work.
CLASSES_ACTION_RATE = env_positive_int("CLASSES_ACTION_RATE", 60)
CLASSES_ACTION_RATE_WINDOW_S = env_positive_int("CLASSES_ACTION_RATE_WINDOW_S", 60)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes refuses a locked-out username+IP before any backend checks the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "VirtLab <noreply@localhost>")

# Account throttles (portal/accounts/throttle.py), counted in the Redis cache that every web worker
# shares. A class behind one NAT address is one IP: the per-IP rates leave room for a class of 30.
# Reverse proxies in front that append to X-Forwarded-For; 0 trusts no header: REMOTE_ADDR counts.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
ACCOUNT_LOGIN_FAILURE_LIMIT = env_int("ACCOUNT_LOGIN_FAILURE_LIMIT", 5)  # per username+IP, then locked
ACCOUNT_LOGIN_LOCKOUT_S = env_int("ACCOUNT_LOGIN_LOCKOUT_S", 15 * 60)  # from the last attempt
ACCOUNT_LOGIN_IP_RATE = env_int("ACCOUNT_LOGIN_IP_RATE", 60)  # log-in attempts per IP per window
ACCOUNT_LOGIN_ACCOUNT_RATE = env_int("ACCOUNT_LOGIN_ACCOUNT_RATE", 20)  # per username, from any IP
ACCOUNT_LOGIN_RATE_WINDOW_S = env_int("ACCOUNT_LOGIN_RATE_WINDOW_S", 5 * 60)
ACCOUNT_SIGNUP_IP_RATE = env_int("ACCOUNT_SIGNUP_IP_RATE", 30)  # new accounts per IP per window
ACCOUNT_SIGNUP_RATE_WINDOW_S = env_int("ACCOUNT_SIGNUP_RATE_WINDOW_S", 3600)
ACCOUNT_RESET_IP_RATE = env_int("ACCOUNT_RESET_IP_RATE", 20)  # password-reset requests per IP per mail window
ACCOUNT_MAIL_RATE = env_int("ACCOUNT_MAIL_RATE", 3)  # account mails to one address per window; more are dropped
ACCOUNT_MAIL_RATE_WINDOW_S = env_int("ACCOUNT_MAIL_RATE_WINDOW_S", 3600)
# A new account proves its e-mail address before its first lab (portal/accounts/verification.py).
ACCOUNT_EMAIL_VERIFICATION = env_bool("ACCOUNT_EMAIL_VERIFICATION", not DEBUG)
ACCOUNT_VERIFICATION_MAX_AGE_S = env_int("ACCOUNT_VERIFICATION_MAX_AGE_S", 3 * 24 * 3600)

# Each client's share of a web process (portal/client_share.py), counted in the process before
# Django sees a request: a signed-in user once Django has checked their session cookie, otherwise
# the address (its anonymous requests and unknown cookies together). At most
# WEB_CLIENT_CONCURRENCY of a user's requests run at once and WEB_CLIENT_WAITING more wait; at
# most WEB_CLIENT_RATE requests (static files apart) and websocket opens per
# WEB_CLIENT_RATE_WINDOW_S. An address's anonymous requests get WEB_ADDRESS_CONCURRENCY and
# WEB_ADDRESS_RATE (a class behind one NAT arrives at the log-in page together). A rate of 0
# turns that limit off (a load generator). A refusal is told after WEB_REFUSAL_HOLD_MS, so that a
# script asking again at once is slowed down (0: told at once).
WEB_CLIENT_CONCURRENCY = env_positive_int("WEB_CLIENT_CONCURRENCY", 4)
WEB_CLIENT_WAITING = env_count("WEB_CLIENT_WAITING", 32)
WEB_CLIENT_RATE = env_count("WEB_CLIENT_RATE", 100)
WEB_CLIENT_RATE_WINDOW_S = env_positive_int("WEB_CLIENT_RATE_WINDOW_S", 10)
WEB_ADDRESS_CONCURRENCY = env_positive_int("WEB_ADDRESS_CONCURRENCY", 32)
WEB_ADDRESS_RATE = env_count("WEB_ADDRESS_RATE", 300)
WEB_REFUSAL_HOLD_MS = env_count("WEB_REFUSAL_HOLD_MS", 1000)

AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # per IP alone would lock out a whole class
AXES_FAILURE_LIMIT = "portal.accounts.throttle.login_failure_limit"
AXES_COOLOFF_TIME = "portal.accounts.throttle.login_lockout"
AXES_LOCKOUT_CALLABLE = "portal.accounts.throttle.locked_out"
AXES_CLIENT_IP_CALLABLE = "portal.accounts.throttle.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ADMIN = False  # the cache handler writes no AccessAttempt rows to show
RATELIMIT_IP_META_KEY = "portal.accounts.throttle.client_ip"
# django-ratelimit lists only third-party Redis caches as supported; Django's own RedisCache has
# the atomic add and incr it needs (SET NX, INCR).
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Production hardening: on unless explicitly in DEBUG; TLS is terminated by the proxy in front.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health probes come over plain HTTP from inside the deployment (container healthcheck, monitors).
SECURE_REDIRECT_EXEMPT = [r"^healthz(/live)?$"]
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (django-csp; Django 5.2 has none built in): nothing
# inline, nothing from elsewhere. 'self' in connect-src covers ws:/wss: to the same host (CSP Level
# 3); bare ws:/wss: would allow any host. The nonce is added only where a page uses it: the lab
# page, whose terminal (xterm.js) creates <style> elements (labs/static/labs/xterm-csp.js).
# /api/docs (django-ninja's Swagger UI) works under it too: "ninja" is installed, so its page
# loads Swagger UI from our static files, with no inline script and no CDN.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "filters": {"redis_reconnects": {"()": "portal.log_filters.RedisReconnects"}},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "channels_redis.pubsub": {"filters": ["redis_reconnects"]},
    },
}
