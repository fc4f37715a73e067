"""Errors of messages: DingTalk's answers, and templates that fail to render."""

from __future__ import annotations

from rollbackd.errors.base import RollbackdError


class DingTalkError(RollbackdError, code="ERR_DINGTALK_FAILED"):
    """DingTalk did not accept a message."""


class DingTalkUnreachable(DingTalkError, code="ERR_DINGTALK_UNREACHABLE", transient=True):
    """No connection to DingTalk."""


class DingTalkRateLimited(DingTalkError, code="ERR_DINGTALK_RATE_LIMITED", transient=True):
    """DingTalk throttled the robot (130101/410100): the outbox waits at least a minute."""


class DingTalkBadSignature(DingTalkError, code="ERR_DINGTALK_BAD_SIGNATURE"):
    """Signature or timestamp refused (310000): check the robot secret and the clock."""


class DingTalkBadToken(DingTalkError, code="ERR_DINGTALK_BAD_TOKEN"):
    """The access_token or app credentials are wrong or the token expired."""


class DingTalkKeywordMissing(DingTalkError, code="ERR_DINGTALK_KEYWORD_MISSING"):
    """The robot's security keyword is not in the message: set notifications.robots[].keyword."""


class DingTalkRobotDisabled(DingTalkError, code="ERR_DINGTALK_ROBOT_DISABLED"):
    """The robot is disabled or removed, or its group was disbanded."""


class DingTalkBusy(DingTalkError, code="ERR_DINGTALK_BUSY", transient=True):
    """DingTalk answered "system busy" (errcode -1) or a 5xx: retry later."""


class DingTalkRejected(DingTalkError, code="ERR_DINGTALK_REJECTED"):
    """DingTalk refused this message for good (content, size, IP allow list, unknown code)."""


class DingTalkUnexpected(DingTalkError, code="ERR_DINGTALK_UNEXPECTED", transient=True):
    """Sending failed in a way nobody foresaw (an odd answer, a bug): logged with its
    traceback and retried like a transient failure, so the robot's queue keeps going."""


class NotificationError(RollbackdError, code="ERR_NOTIFY_FAILED"):
    """A message could not be prepared."""


class TemplateFailed(NotificationError, code="ERR_NOTIFY_TEMPLATE"):
    """A message template failed to render: a plain built-in message was sent instead;
    fix the template (``check-config`` renders every one with a sample incident)."""
