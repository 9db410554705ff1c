"""The configuration: RecBole's Config with the plugin's models and ``properties/`` files
(``config``), and the type and range of every key it reads, checked when a Config is built
(``keys``)."""

from recbole_mmssl.config.config import DEFAULT_MODEL, Config, known_keys, plugin_default

__all__ = ["Config", "DEFAULT_MODEL", "known_keys", "plugin_default"]
