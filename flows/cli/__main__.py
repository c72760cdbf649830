"""``python -m flows.cli``: the same as the ``reflectory`` command."""

from flows.cli import entry

if __name__ == "__main__":
    entry()
