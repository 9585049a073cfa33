"""The tables and plots of the federation page, one class each (see :mod:`.base`)."""
