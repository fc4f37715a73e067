"""Edge: PromQL instant queries through prometheus-api-client.

One call to ``query`` is one HTTP request, whatever the number of Deployments in its
answer. Series become values per ``Target`` through the rule's ``target_labels``.

prometheus-api-client returns only ``data.result`` and hides Prometheus's ``errorType``
and ``warnings``. A requests response hook on the session we hand it keeps the raw
response of the current thread's call, so failures are classified from Prometheus's own
``errorType``. An answer with ``warnings`` (partial data: a Thanos store or a cluster node
was down) is not a clean answer: it raises ``PrometheusPartial`` carrying what the answer
held, judged by the rule's ``on_error`` like any failure. A body cut off mid-way is
``PrometheusBadResponse``. Its retries are switched off: a failed tick is judged by the
rule's ``on_error`` policy and the next tick tries again.

Compatible backends: ``url`` may carry a path prefix (Mimir's ``/prometheus``), every
request carries ``headers`` (a tenant's ``X-Scope-OrgID``) and ``params`` (Thanos's
``dedup``, VictoriaMetrics's ``extra_label``). Where ``/api/v1/format_query`` is missing
(VictoriaMetrics, Prometheus before 2.38), ``check_syntax`` says it cannot check.

Credentials and header files are read at every request (``_Credentials``), so a rotated
token file takes effect on the next query; a file gone or empty fails the query with
``ERR_PROM_CREDENTIALS`` instead of querying without credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import requests
import requests.auth
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from rollbackd.errors import (
    PrometheusBadQuery,
    PrometheusBadResponse,
    PrometheusCredentials,
    PrometheusError,
    PrometheusExecution,
    PrometheusPartial,
    PrometheusTimeout,
    PrometheusUnreachable,
    SecretUnavailable,
)
from rollbackd.model import QueryResult
from rollbackd.runtime.logs import get_logger
from rollbackd.settings import PrometheusSettings, TargetLabels, read_secret_file, secret_from
from rollbackd.signals.answers import to_query_result, to_range_results

log = get_logger(__name__)

T = TypeVar("T")

_BY_ERROR_TYPE: dict[str, type[PrometheusError]] = {
    "bad_data": PrometheusBadQuery,
    "execution": PrometheusExecution,
    "timeout": PrometheusTimeout,
    "canceled": PrometheusTimeout,
}


def _session(settings: PrometheusSettings) -> requests.Session:
    session = requests.Session()
    if settings.insecure_skip_verify:
        session.verify = False
    elif settings.ca_file:
        session.verify = settings.ca_file
    return session


class _Credentials(requests.auth.AuthBase):
    """Adds the configured headers, bearer token or basic auth to each request, with every
    file read when the request is sent."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self._settings = settings

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        settings = self._settings
        request.headers.update(settings.headers)
        for name, path in settings.header_files.items():
            request.headers[name] = read_secret_file(path)
        token = secret_from(settings.bearer_token, settings.bearer_token_file)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        elif settings.basic_auth is not None:
            basic = settings.basic_auth
            password = secret_from(basic.password, basic.password_file)
            pair = f"{basic.username}:{password.get_secret_value() if password else ''}"
            request.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return request


class PrometheusSource:
    """A ``MetricsSource`` backed by the Prometheus HTTP API."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self._settings = settings
        self._timeout = settings.timeout.total_seconds()
        self._last = threading.local()
        self._decoding = threading.Lock()
        self._session = _session(settings)
        self._session.hooks["response"].append(self._remember)
        self._syntax_unavailable = False
        self._client = PrometheusConnect(
            url=settings.url,
            auth=_Credentials(settings),
            session=self._session,
            # read=False re-raises a read timeout as itself, so it is told from a refusal.
            retry=Retry(total=0, read=False, raise_on_status=False),
            timeout=self._timeout,
        )

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self._last.response = response

    def close(self) -> None:
        self._client.close()

    async def query(self, expr: str, *, target_labels: TargetLabels) -> QueryResult:
        # Mapped in the worker thread: the decoded answer is freed there, before the next
        # rule's arrives (at 50,000 series, each answer is some 30 MB of objects).
        answer: tuple[QueryResult, list[str]] = await self._in_thread(
            lambda e: self._query_sync(e, target_labels), expr
        )
        result, warnings = answer
        if warnings:
            raise _partial(warnings, result)
        return result

    async def query_range(
        self, expr: str, *, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> list[tuple[float, QueryResult]]:
        """One ``QueryResult`` per step, oldest first (seeding hold windows, dating onsets,
        replaying history). Mapped in the worker thread, one answer at a time."""
        answer: tuple[list[tuple[float, QueryResult]], list[str]] = await self._in_thread(
            lambda e: self._query_range_sync(e, target_labels, start, end, step), expr
        )
        results, warnings = answer
        if warnings:
            raise _partial(warnings)
        return results

    def _query_range_sync(
        self, expr: str, target_labels: TargetLabels, start: float, end: float, step: float
    ) -> tuple[list[tuple[float, QueryResult]], list[str]]:
        # To the millisecond: an onset is looked for at tenths of a second.
        params = {
            **self._settings.params,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{max(step, 0.001):.3f}",
        }
        return self._ask("query_range", expr, params, lambda s: to_range_results(s, target_labels))

    async def check_syntax(self, expr: str) -> bool:
        if self._syntax_unavailable:
            return False
        checked: bool = await self._in_thread(self._format_query_sync, expr)
        self._syntax_unavailable = not checked
        return checked

    async def _in_thread(self, call: Any, expr: str) -> Any:
        # requests enforces the timeout; the outer bound covers DNS and pool waits too.
        try:
            return await asyncio.wait_for(asyncio.to_thread(call, expr), self._timeout + 2)
        except TimeoutError:
            raise PrometheusTimeout(
                f"no answer from Prometheus within {self._timeout:g}s", error_type="timeout"
            ) from None

    def _query_sync(self, expr: str, target_labels: TargetLabels) -> tuple[QueryResult, list[str]]:
        # Prometheus's own timeout aborts the query server-side, a little before ours.
        timeout = f"{max(int(self._timeout * 1000) - 500, 500)}ms"
        params = {**self._settings.params, "timeout": timeout}
        return self._ask("query", expr, params, lambda s: to_query_result(s, target_labels))

    def _ask(
        self, path: str, expr: str, params: dict[str, Any], mapped: Callable[[list[Any]], T]
    ) -> tuple[T, list[str]]:
        """One query (``_get``) with its warnings; every failure classified."""
        self._last.response = None
        try:
            return self._get(path, expr, params, mapped), self._warnings()
        except SecretUnavailable as exc:
            raise PrometheusCredentials(f"credentials for Prometheus: {exc.message}") from None
        except (
            PrometheusApiClientException,
            requests.RequestException,
            KeyError,
            TypeError,
            orjson.JSONDecodeError,
        ) as exc:
            raise self._classify(exc) from exc
        finally:
            self._last.response = None  # do not keep a large body alive between ticks

    def _get(
        self, path: str, expr: str, params: dict[str, Any], mapped: Callable[[list[Any]], T]
    ) -> T:
        """``/api/v1/query`` or ``/api/v1/query_range`` as the client library sends them,
        the answer decoded by orjson and handed to ``mapped``. One answer is decoded and
        mapped at a time: decoding holds the GIL anyway, and at 50,000 series each decoded
        answer is some 30 MB of objects, freed once mapped. The collector is paused
        meanwhile: a decoded answer holds no cycles, and a collection every 700 of its
        lists would only walk them (replaying a day was four fifths collection)."""
        response = self._session.get(
            f"{self._settings.url}/api/v1/{path}",
            params={"query": expr, **params},
            auth=self._client.auth,
            timeout=self._timeout,
        )
        if response.status_code != 200:
            raise PrometheusApiClientException(f"HTTP Status Code {response.status_code}")
        with self._decoding, _collector_paused():
            return mapped(orjson.loads(response.content)["data"]["result"])

    def _format_query_sync(self, expr: str) -> bool:
        """True when the backend parsed ``expr``; False when it has no format_query (404,
        or VictoriaMetrics's plain-text 400 "unsupported path")."""
        self._last.response = None
        try:
            response = self._session.get(
                f"{self._settings.url}/api/v1/format_query",
                params={**self._settings.params, "query": expr},
                auth=self._client.auth,
                timeout=self._timeout,
            )
        except SecretUnavailable as exc:
            raise PrometheusCredentials(f"credentials for Prometheus: {exc.message}") from None
        except requests.RequestException as exc:
            raise self._classify(exc) from exc
        try:
            if response.status_code == 200:
                return True
            if response.status_code == 404 or (
                response.status_code < 500 and _json_or_none(response) is None
            ):
                return False
            raise self._classify(PrometheusApiClientException(f"HTTP {response.status_code}"))
        finally:
            self._last.response = None

    def _warnings(self) -> list[str]:
        """The current answer's ``warnings``: present, the data may be incomplete."""
        response = getattr(self._last, "response", None)
        if response is None or b'"warnings"' not in response.content:
            return []
        body = _json_or_none(response) or {}
        return [str(w) for w in body.get("warnings") or []]

    def _classify(self, exc: Exception) -> PrometheusError:
        if isinstance(
            exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
        ):
            return PrometheusBadResponse(
                f"the answer from Prometheus was cut off mid-body ({type(exc).__name__})"
            )
        if isinstance(exc, requests.Timeout):
            return PrometheusTimeout(
                f"no answer from Prometheus within {self._timeout:g}s", error_type="timeout"
            )
        if isinstance(exc, requests.ConnectionError):
            return PrometheusUnreachable(f"cannot connect to Prometheus at {self._settings.url}")
        response: requests.Response | None = getattr(self._last, "response", None)
        if response is None:
            return PrometheusBadResponse(f"unexpected answer from Prometheus: {exc}")
        body = _json_or_none(response)
        if body is None:
            if response.status_code >= 500:
                return PrometheusUnreachable(
                    f"Prometheus answered HTTP {response.status_code} without a JSON body"
                )
            return PrometheusBadResponse(
                f"Prometheus answered HTTP {response.status_code} without a valid JSON body"
            )
        if response.status_code == 200:
            return PrometheusBadResponse(f"unexpected answer from Prometheus: {exc}")
        error_type = str(body.get("errorType", ""))
        message = str(body.get("error", "")) or f"HTTP {response.status_code}"
        cls = _BY_ERROR_TYPE.get(error_type)
        if cls is None and response.status_code in (400, 422):
            cls = PrometheusBadQuery  # VictoriaMetrics answers a parse error with 422
        elif cls is None:
            cls = PrometheusUnreachable if response.status_code >= 500 else PrometheusBadResponse
        return cls(f"{error_type or 'error'}: {message}", error_type=error_type)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection within (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _partial(warnings: list[str], result: QueryResult | None = None) -> PrometheusPartial:
    return PrometheusPartial(
        f"partial answer: {'; '.join(warnings)[:300]}",
        warnings=tuple(warnings[:5]),
        partial=result,
    )


def _json_or_none(response: requests.Response) -> dict[str, Any] | None:
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError, requests.RequestException):
        return None
    return body if isinstance(body, dict) else None
