"""Configuration errors (each problem of a load has its code) and secrets that vanish."""

from __future__ import annotations

from dataclasses import dataclass

from rollbackd.errors.base import RollbackdError


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file, where it is, and its error code."""

    path: str
    message: str
    code: str
    line: int | None = None

    def render(self, file: str) -> str:
        """``FILE:LINE: key.path: message [ERR_...]``, the line check-config prints."""
        where = f"{file}:{self.line}" if self.line is not None else file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message} [{self.code}]"


class ConfigError(RollbackdError, code="ERR_CONFIG_INVALID"):
    """The configuration cannot be used as written; carries every problem found."""

    def __init__(
        self, file: str, problems: list[ConfigProblem], *, secrets: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{file}: {len(problems)} problem(s) in the configuration")
        self.file = file
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path))
        self.secrets = secrets
        """Values the file holds that may be secret (from ${VAR}, secret keys, secret
        files): whoever prints the problems masks them, wherever they were put."""

    def lines(self) -> list[str]:
        return [problem.render(self.file) for problem in self.problems]


# The codes below name kinds of ConfigProblem; a load raises one ConfigError holding them.


class ConfigNotFound(ConfigError, code="ERR_CONFIG_NOT_FOUND"):
    """The configuration file is missing or unreadable: check the path and permissions."""


class ConfigSyntaxError(ConfigError, code="ERR_CONFIG_YAML"):
    """The file is not valid YAML: the line number points at the problem."""


class ConfigEmpty(ConfigError, code="ERR_CONFIG_EMPTY"):
    """The file holds nothing: start from config.example.yaml."""


class ConfigEnvMissing(ConfigError, code="ERR_CONFIG_ENV_MISSING"):
    """A ${VAR} names an environment variable that is unset or empty."""


class ConfigFileMissing(ConfigError, code="ERR_CONFIG_FILE_MISSING"):
    """A *_file key names a file that does not exist or cannot be read."""


class ConfigSecretEmpty(ConfigError, code="ERR_CONFIG_SECRET_EMPTY"):
    """A credential (inline, ${VAR} or the file a *_file key names) is empty or only
    whitespace: an empty secret would let anything through, so it is refused."""


class SecretUnavailable(RollbackdError, code="ERR_SECRET_UNAVAILABLE"):
    """A credential file that was valid at start-up disappeared, became unreadable or empty:
    what needs it is refused (webhook: 401) or fails (Prometheus) until the file is back."""
