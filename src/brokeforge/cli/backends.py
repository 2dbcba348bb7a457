"""Where the CLI's verbs go: the local database, or a remote BrokeForge's API.

Both backends answer with the API's JSON shapes (`brokeforge.api.schemas`),
so every command prints the same thing whichever way it ran. Errors come
back as `CommandError` with the exit status they deserve.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

#: Exit statuses: the operation (or connection check) failed; usage or refusal.
EXIT_FAILED = 1
EXIT_REFUSED = 2

REMOTE_TIMEOUT = 90


class CommandError(Exception):
    """A failure to report on stderr, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


JSON = dict[str, Any]


class Backend(Protocol):
    def list_servers(self) -> list[JSON]: ...
    def server(self, name: str) -> JSON: ...
    def add_server(self, fields: JSON) -> JSON: ...
    def change_server(self, name: str, changes: JSON) -> JSON: ...
    def remove_server(self, name: str) -> None: ...
    def check_server(self, name: str, repin: bool) -> JSON: ...
    def records(self, server: str | None) -> list[JSON]: ...
    def act(
        self,
        server: str,
        kind: str,
        action: str,
        params: JSON | None,
        record_id: int | None,
    ) -> JSON: ...
    def kinds(self) -> list[JSON]: ...
    def operations(self, server: str | None, limit: int) -> list[JSON]: ...
    def operation(self, operation_id: int) -> JSON: ...
    def output(self, operation_id: int, offset: int) -> JSON: ...
    def cancel(self, operation_id: int) -> JSON: ...
    def audit(self, server: str | None, limit: int) -> list[JSON]: ...


class RemoteBackend:
    """Talks to /api/v1 of a BrokeForge at `url` with a personal token."""

    def __init__(self, url: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CommandError(f"--url must be an http(s) URL, not {url!r}")
        if not token:
            raise CommandError(
                "--url needs a token: --token T or BROKEFORGE_TOKEN "
                "(create one on the Tokens page or with brokeforge token create)"
            )
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=REMOTE_TIMEOUT
            ) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise CommandError(_api_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f"cannot reach {self.base}: {reason}") from None
        return json.loads(raw) if raw else None

    def _server_id(self, name: str) -> int:
        for server in self.list_servers():
            if server["name"] == name:
                return int(server["id"])
        raise CommandError(f"no server named {name!r} (see: brokeforge server list)")

    def list_servers(self) -> list[JSON]:
        result: list[JSON] = self.call("GET", "/servers")
        return result

    def server(self, name: str) -> JSON:
        result: JSON = self.call("GET", f"/servers/{self._server_id(name)}")
        return result

    def add_server(self, fields: JSON) -> JSON:
        result: JSON = self.call("POST", "/servers", fields)
        return result

    def change_server(self, name: str, changes: JSON) -> JSON:
        result: JSON = self.call("PATCH", f"/servers/{self._server_id(name)}", changes)
        return result

    def remove_server(self, name: str) -> None:
        self.call("DELETE", f"/servers/{self._server_id(name)}")

    def check_server(self, name: str, repin: bool) -> JSON:
        path = f"/servers/{self._server_id(name)}/check"
        result: JSON = self.call("POST", path, {"repin": repin})
        return result

    def records(self, server: str | None) -> list[JSON]:
        names = [server] if server else [s["name"] for s in self.list_servers()]
        rows: list[JSON] = []
        for name in names:
            rows += self.call("GET", f"/servers/{self._server_id(name)}/records")
        return rows

    def act(
        self,
        server: str,
        kind: str,
        action: str,
        params: JSON | None,
        record_id: int | None,
    ) -> JSON:
        base = f"/servers/{self._server_id(server)}/records/{_segment(kind)}"
        if record_id is not None:
            base += f"/{record_id}"
        params = dict(params or {})
        if action == "install":
            result: JSON = self.call("POST", base, {"params": params})
        elif action == "remove":
            data = params.pop("data", None)
            query = "?" + urllib.parse.urlencode({"data": data}) if data else ""
            result = self.call("DELETE", base + query)
        elif action == "update":
            result = self.call("POST", f"{base}/update", {"params": params})
        else:
            result = self.call("POST", f"{base}/{action}")
        return result

    def kinds(self) -> list[JSON]:
        result: list[JSON] = self.call("GET", "/kinds")
        return result

    def operations(self, server: str | None, limit: int) -> list[JSON]:
        query = {"limit": limit}
        if server:
            query["server_id"] = self._server_id(server)
        result: list[JSON] = self.call(
            "GET", "/operations?" + urllib.parse.urlencode(query)
        )
        return result

    def operation(self, operation_id: int) -> JSON:
        result: JSON = self.call("GET", f"/operations/{operation_id}")
        return result

    def output(self, operation_id: int, offset: int) -> JSON:
        path = f"/operations/{operation_id}/output?offset={offset}"
        result: JSON = self.call("GET", path)
        return result

    def cancel(self, operation_id: int) -> JSON:
        result: JSON = self.call("POST", f"/operations/{operation_id}/cancel")
        return result

    def audit(self, server: str | None, limit: int) -> list[JSON]:
        query = {"limit": limit}
        if server:
            query["server_id"] = self._server_id(server)
        result: list[JSON] = self.call("GET", "/audit?" + urllib.parse.urlencode(query))
        return result


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or f"HTTP {exc.code} {exc.reason}")
