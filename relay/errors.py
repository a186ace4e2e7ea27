"""The relay's one error tree.

RelayError
├── ConfigError            settings that cannot be used; the CLI exits 2 with its message
├── InvalidEvent           a message body that is not a valid CloudEvent of a known type
├── PublishError           the broker did not take a message
│   ├── Unroutable         returned by the broker: no queue is bound to its routing key
│   ├── NotConfirmed       nacked, or no confirm within the bound
│   └── BrokerUnavailable  no connection to the broker right now
├── Permanent              work that will never succeed as asked: dead-lettered at once and,
│                          for a deployment, reported as ``deploy.failed`` (stage, reason, detail)
└── Transient              work that may succeed later: retried with back-off; when the attempts
                           run out it is reported like ``Permanent`` with its reason

Any other exception raised by a handler counts as transient.
The gateway maps request errors (``relay.gateway.errors``) onto HTTP codes in one middleware.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """The settings cannot be used; the message names the key and the file."""


class InvalidEvent(RelayError):
    """A message body that does not parse as JSON or does not validate as a relay event."""


class PublishError(RelayError):
    """The broker did not take responsibility for a message."""


class Unroutable(PublishError):
    """The broker returned the message: no queue is bound to its routing key."""


class NotConfirmed(PublishError):
    """The broker nacked the message or did not confirm it in time."""


class BrokerUnavailable(PublishError):
    """There is no connection to the broker right now."""


class StageError(RelayError):
    """Work on a deployment stage that did not succeed, with a reason a person can act on."""

    def __init__(self, reason: str, detail: str, *, stage: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage


class Permanent(StageError):
    """Will not succeed if tried again: dead-lettered at once, reported as deploy.failed."""


class Transient(StageError):
    """May succeed later: retried with back-off, then reported with this reason."""
