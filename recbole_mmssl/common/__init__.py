"""Low pieces that every layer may use: library patches (``compat``), multi-process helpers
(``distributed``), atomic file writes (``files``) and matplotlib pictures (``plots``)."""
