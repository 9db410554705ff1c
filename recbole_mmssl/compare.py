"""``python -m recbole_mmssl.compare``: see :mod:`recbole_mmssl.experiments.compare`."""

from recbole_mmssl.experiments.compare import main

if __name__ == "__main__":
    main()
