"""Where every deployment stands: a projection of the event stream, and its live followers."""

from relay.tracker.projection import Deployment, Stage, Tracker

__all__ = ["Deployment", "Stage", "Tracker"]
