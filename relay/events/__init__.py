"""Events on the bus: the CloudEvents envelope and its codec (``envelope``), the typed data of
each routing key (``data``) and the deploy request users send (``deploy``)."""

from relay.events.envelope import CONTENT_TYPE, PREFIX, CloudEvent, decode, encode, new_event

__all__ = ["CONTENT_TYPE", "PREFIX", "CloudEvent", "decode", "encode", "new_event"]
