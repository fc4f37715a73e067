"""Errors of messages: DingTalk's answers, and templates that fail to render."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class DingTalkError(RollbackdError):
    """DingTalk did not accept a message."""

    code = "ERR_DINGTALK_FAILED"


class DingTalkUnreachable(DingTalkError):
    """No connection to DingTalk."""

    code = "ERR_DINGTALK_UNREACHABLE"
    transient = True


class DingTalkRateLimited(DingTalkError):
    """DingTalk throttled the robot (130101/410100): the outbox waits at least a minute."""

    code = "ERR_DINGTALK_RATE_LIMITED"
    transient = True


class DingTalkBadSignature(DingTalkError):
    """Signature or timestamp refused (310000): check the robot secret and the clock."""

    code = "ERR_DINGTALK_BAD_SIGNATURE"


class DingTalkBadToken(DingTalkError):
    """The access_token or app credentials are wrong or the token expired."""

    code = "ERR_DINGTALK_BAD_TOKEN"


class DingTalkKeywordMissing(DingTalkError):
    """The robot's security keyword is not in the message: set notifications.robots[].keyword."""

    code = "ERR_DINGTALK_KEYWORD_MISSING"


class DingTalkRobotDisabled(DingTalkError):
    """The robot is disabled or removed, or its group was disbanded."""

    code = "ERR_DINGTALK_ROBOT_DISABLED"


class DingTalkBusy(DingTalkError):
    """DingTalk answered "system busy" (errcode -1) or a 5xx: retry later."""

    code = "ERR_DINGTALK_BUSY"
    transient = True


class DingTalkRejected(DingTalkError):
    """DingTalk refused this message for good (content, size, IP allow list, unknown code)."""

    code = "ERR_DINGTALK_REJECTED"


class DingTalkUnexpected(DingTalkError):
    """Sending failed in a way nobody foresaw (an odd answer, a bug): logged with its
    traceback and retried like a transient failure, so the robot's queue keeps going."""

    code = "ERR_DINGTALK_UNEXPECTED"
    transient = True


class NotificationError(RollbackdError):
    """A message could not be prepared."""

    code = "ERR_NOTIFY_FAILED"


class TemplateFailed(NotificationError):
    """A message template failed to render: a plain built-in message was sent instead;
    fix the template (``check-config`` renders every one with a sample incident)."""

    code = "ERR_NOTIFY_TEMPLATE"
