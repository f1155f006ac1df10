"""Entry point of ``python -m ivg``."""

from ivg_core.cli import main

if __name__ == "__main__":
    main()
