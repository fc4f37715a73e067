"""The ``server`` and ``logging`` sections."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from rollbackd.settings.values import Duration, SecretFile, Section


class ServerSettings(Section):
    listen: str = Field("0.0.0.0:8080", description="host:port of the HTTP listener")
    max_body_bytes: int = Field(
        1_048_576, gt=0, le=64 * 1_048_576, description="largest accepted webhook body"
    )
    header_timeout: Duration = Field(
        timedelta(seconds=10),
        description="a connection whose request headers are not complete by then is closed",
    )
    body_timeout: Duration = Field(
        timedelta(seconds=30), description="a request body not complete by then gets 408"
    )
    max_connections: int = Field(
        512, gt=0, description="open connections beyond this are closed at once"
    )

    external_url: str = Field(
        "",
        description="where people reach rollbackd (approval links); empty: no buttons",
    )
    approval_secret_file: SecretFile = Field(
        "", description="file holding the HMAC key that signs approval links"
    )

    @field_validator("external_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (port 0 picks a free one)")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingSettings(Section):
    format: Literal["json", "console"] = Field("json", description="json | console")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
