"""Configuration: the settings table, the INI reader with line numbers, value types, and the
validated, frozen configuration. `settings` holds the table and the loader, `values` the
value types and converters."""

from prefork.config.settings import (
    MAX_PROCESSES,
    MAX_THREAD_SLOTS,
    SETTINGS,
    Config,
    config_file,
    load_config,
    render_default_ini,
    server_root_for,
)

__all__ = ["MAX_PROCESSES", "MAX_THREAD_SLOTS", "SETTINGS", "Config", "config_file",
           "load_config", "render_default_ini", "server_root_for"]
