"""`python -m nngstream` is the `nngstream` command."""

from .cli import main

main()
