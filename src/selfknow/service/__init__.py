"""The HTTP service (``selfknow serve``): answers with confidence over OpenAI-compatible endpoints."""

from selfknow.service.app import ServiceConfig, create_app
from selfknow.service.batcher import Batcher, Overloaded

__all__ = ["Batcher", "Overloaded", "ServiceConfig", "create_app"]
