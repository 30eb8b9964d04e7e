"""``python -m cmkd``: the ``cmkd`` command line."""

from cmkd.cli import main

if __name__ == "__main__":
    main()
