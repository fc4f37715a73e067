"""``python -m rollbackd`` is the ``rollbackd`` command."""

from rollbackd.cli import main

if __name__ == "__main__":
    main()
