"""``python -m recbole_mmssl.analyze``: see :mod:`recbole_mmssl.experiments.analyze`."""

from recbole_mmssl.experiments.analyze import main

if __name__ == "__main__":
    main()
