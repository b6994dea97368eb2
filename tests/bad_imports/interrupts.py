"""A backend module that raises KeyboardInterrupt when imported."""

raise KeyboardInterrupt
