"""``python -m recbole_mmssl.checkpoint upgrade --trust FILE``: see :mod:`recbole_mmssl.trainer.checkpoint`."""

from recbole_mmssl.trainer.checkpoint import main

if __name__ == "__main__":
    main()
