"""The ``prometheus`` section: where the query backend is and how to talk to it."""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from rollbackd.errors import SecretUnavailable
from rollbackd.settings.values import (
    BasicAuth,
    Duration,
    FilePath,
    HeaderName,
    HeaderValue,
    QueryParams,
    Secret,
    SecretFile,
    Section,
    credential_header,
    exactly_one,
    read_secret_file,
)


class PrometheusSettings(Section):
    url: str = Field(
        "http://prometheus.monitoring:9090", description="base URL of the Prometheus HTTP API"
    )
    external_url: str = Field(
        "", description="URL people open for graph links in messages; empty: the same as url"
    )
    timeout: Duration = Field(timedelta(seconds=10), description="timeout of every query")
    bearer_token: Secret | None = Field(None, description="bearer token sent to Prometheus")
    bearer_token_file: SecretFile = Field("", description="file holding the bearer token")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication")
    ca_file: FilePath = Field("", description="CA bundle that signs Prometheus's certificate")
    insecure_skip_verify: bool = Field(
        False, description="do not verify Prometheus's TLS certificate"
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="HTTP headers sent with every query (e.g. X-Scope-OrgID: tenant-a for"
        " Mimir or Cortex); values may be ${VAR}",
    )
    header_files: dict[HeaderName, SecretFile] = Field(
        default_factory=dict,
        description="headers whose value is read from a file at every query (a rotated"
        " credential takes effect on the next one)",
    )
    params: QueryParams = Field(
        default_factory=dict,
        description="extra query parameters sent with every query (Thanos: dedup,"
        " partial_response; VictoriaMetrics: extra_label, extra_filters[])",
    )

    def header_secrets(self) -> list[str]:
        """Credential headers' inline values and every header file's current content."""
        found = [value for name, value in self.headers.items() if credential_header(name)]
        for path in self.header_files.values():
            with contextlib.suppress(SecretUnavailable):
                found.append(read_secret_file(path))
        return found

    @field_validator("url", "external_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        exactly_one(self, ("bearer_token", "bearer_token_file", "basic_auth"), required=False)
        both = {n.lower() for n in self.headers} & {n.lower() for n in self.header_files}
        if both:
            raise ValueError(f"header {sorted(both)[0]!r} is set in both headers and header_files")
        named = {n.lower() for n in (*self.headers, *self.header_files)}
        if "authorization" in named and (
            self.bearer_token or self.bearer_token_file or self.basic_auth
        ):
            raise ValueError(
                "an Authorization header and bearer_token, bearer_token_file or basic_auth"
                " would both set Authorization: set one"
            )
        return self
