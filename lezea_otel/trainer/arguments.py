"""The tracker constructor's own arguments, shaped: names, tags and settings that never raise, and whose
text never stops an export."""

from __future__ import annotations

import dataclasses
from typing import Any

from lezea_otel.config.settings import Settings, resolve_settings
from lezea_otel.util import values
from lezea_otel.util.safety import encodable_text, shielded


def utf8(text: str, what: str, warn: values.Warn) -> str:
    """Names go into the OTel resource of every export: one lone surrogate there would stop them all."""
    clean = encodable_text(text)
    if clean is not text:
        warn(f"{what} is not valid UTF-8 (lone surrogates)", "they were replaced with U+FFFD")
    return clean


def name(value: Any, what: str, warn: values.Warn, fallback: str, optional: bool = False) -> str:
    """A name-like constructor argument; one whose ``__str__`` raises costs itself, not the tracker."""
    text = shielded(lambda: values.text(value, what, warn, optional=optional) or fallback, fallback, warn,
                    what)
    return utf8(text, what, warn)


def tags(raw: Any, warn: values.Warn) -> list[str]:
    """Tags as text; tags that cannot be read at all (values.tags raised) are dropped, with a warning."""
    tags: list[str] = shielded(lambda: values.tags(raw, warn), [], warn, "tags")
    return [utf8(tag, "tags", warn) for tag in tags]


def settings(options: dict[str, Any], warn: values.Warn) -> Settings:
    """Settings from the keyword options (``resolve_settings`` never raises: bad options become problems)."""
    settings = resolve_settings(options)
    service_name = utf8(settings.service_name, "service_name", warn)
    return settings if service_name is settings.service_name else dataclasses.replace(settings,
                                                                                    service_name=service_name)
