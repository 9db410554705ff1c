"""Tools built on the core: comparisons over seeds and datasets (``compare``), where models win
(``analyze``), Ray Tune searches (``tune``), per-user rankings (``rankings``) and the report
pieces they share (``report``)."""
