"""python -m trimtab runs the command line."""

from trimtab.cli import main

main()
