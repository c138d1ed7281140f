"""Configuration: the typed sections (`sections`: each setting declared once, as a field),
how a setting is declared and the table derived from it (`schema`), the INI reader with line
numbers (`ini`), value types and converters (`values`), and loading and checking (`settings`).
"""

from prefork.config.sections import Config
from prefork.config.settings import (
    MAX_PROCESSES,
    MAX_THREAD_SLOTS,
    SETTINGS,
    config_file,
    load_config,
    render_default_ini,
    server_root_for,
)

__all__ = ["MAX_PROCESSES", "MAX_THREAD_SLOTS", "SETTINGS", "Config", "config_file",
           "load_config", "render_default_ini", "server_root_for"]
