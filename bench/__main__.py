"""``python -m bench`` (what ``torchrun -m bench train ...`` launches)."""

from bench.cli import main

main()
