"""``python -m cmkd``: the ``cmkd`` command line."""

from cmkd.cli import entry

if __name__ == "__main__":
    entry()
