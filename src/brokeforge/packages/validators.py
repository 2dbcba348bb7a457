"""Checks for the values people give that end up in a shell or a config file.

Each returns the clean value or raises `ActionRefused` with a sentence that
names the value and says what is allowed; a kind's `clean_params` calls them
inside `option(FIELD)`, which turns that refusal into `InvalidOption` naming
the option it was about. Values are refused rather than
escaped wherever a plain form exists (names, users, paths); free text that
must stay free (a command) is refused only what could break out of its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from brokeforge.lifecycle.errors import ActionRefused, InvalidOption

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
UNIX_USER = re.compile(r"[a-z_][a-z0-9_-]*")
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
MAX_COMMAND = 1000


def _show(value: object) -> str:
    return repr(value)[:80]


@contextmanager
def option(field: str) -> Iterator[None]:
    """Name `field` on any refusal the checks inside raise (an `InvalidOption`
    that already names its field keeps it)."""
    try:
        yield
    except InvalidOption:
        raise
    except ActionRefused as exc:
        raise InvalidOption(field, str(exc)) from None


def each(checks: Mapping[str, Callable[[], object]]) -> dict[str, object]:
    """Every option's clean value by name, each check run inside `option`."""
    clean: dict[str, object] = {}
    for field, check in checks.items():
        with option(field):
            clean[field] = check()
    return clean


def refuse_unknown(
    given: Iterable[str], allowed: Iterable[str], what: str = "unknown option"
) -> None:
    """Refuse options the action does not take, naming the first of them."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidOption(unknown[0], f"{what}: {', '.join(unknown)}")


def slug(value: object, what: str, limit: int = 64) -> str:
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"give the {what}")
    if len(value) > limit or not SLUG.fullmatch(value):
        raise ActionRefused(
            f"{what} {_show(value)} is not allowed: use up to {limit} lowercase "
            "letters, digits, dashes and underscores, starting with a letter or digit"
        )
    return value


def unix_user(value: object, what: str = "user") -> str:
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"give the {what}")
    if len(value) > 32 or not UNIX_USER.fullmatch(value):
        raise ActionRefused(
            f"{what} {_show(value)} is not a valid user name: lowercase letters, "
            "digits, dashes and underscores, up to 32, not starting with a digit"
        )
    return value


def absolute_path(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"give the {what}")
    parts = value.split("/")
    if (
        len(value) > 255
        or not SAFE_PATH.fullmatch(value)
        or ".." in parts
        or "." in parts
        or "//" in value
    ):
        raise ActionRefused(
            f"{what} {_show(value)} is not allowed: an absolute path of letters, "
            "digits, '.', '_', '-' and '/', without '..' or '.' parts"
        )
    return value.rstrip("/") or "/"


def command(value: object, what: str = "command") -> str:
    """A command line for a config file: one line of printable characters."""
    if not isinstance(value, str) or not value.strip():
        raise ActionRefused(f"give the {what}")
    if len(value) > MAX_COMMAND:
        raise ActionRefused(f"the {what} is longer than {MAX_COMMAND} characters")
    if any(ch < " " or ch == "\x7f" for ch in value):
        raise ActionRefused(
            f"the {what} must be one line: line breaks and control characters "
            "are not allowed"
        )
    return value.strip()


def integer(value: object, what: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ActionRefused(f"{what} must be a whole number") from None
    if not low <= number <= high:
        raise ActionRefused(f"{what} must be between {low} and {high}")
    return number


def boolean(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ActionRefused(f"{what} must be yes or no")


def choice(value: object, what: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ActionRefused(f"{what} must be one of {', '.join(allowed)}")
    assert isinstance(value, str)
    return value


DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def domain(value: object, what: str = "domain") -> str:
    """A host name of dot-separated labels: letters, digits, inner dashes."""
    if not isinstance(value, str) or not value:
        raise ActionRefused(f"give the {what}")
    text = value.strip().lower().rstrip(".")
    labels = text.split(".")
    if (
        len(text) > 253
        or len(labels) < 2
        or not all(DOMAIN_LABEL.fullmatch(label) for label in labels)
    ):
        raise ActionRefused(
            f"{what} {_show(value)} is not a domain name: dot-separated labels of "
            "letters, digits and inner dashes, e.g. shop.example.com"
        )
    return text


GIT_URL = re.compile(
    r"(?:https://|ssh://|file:///|/)[A-Za-z0-9._~/:@+-]*"
    r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/+-]+"
)
GIT_BRANCH = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


def git_url(value: object) -> str:
    """https://, ssh://, user@host:path, file:/// or an absolute path; never an
    option (leading '-') or a helper transport (ext::, fd::)."""
    if not isinstance(value, str) or not value:
        raise ActionRefused("give the repository URL")
    if len(value) > 500 or not GIT_URL.fullmatch(value) or "::" in value:
        raise ActionRefused(
            f"repository URL {_show(value)} is not allowed: use https://..., "
            "ssh://..., user@host:path, file:///... or an absolute path"
        )
    return value


def git_branch(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ActionRefused("give the branch")
    if (
        len(value) > 200
        or not GIT_BRANCH.fullmatch(value)
        or value.startswith(("-", "."))
        or ".." in value
        or value.endswith((".lock", "."))
    ):
        raise ActionRefused(f"branch {_show(value)} is not a valid branch name")
    return value
