"""One module per board, each defining ``BOARD`` (:class:`pwlnet.boards.registry.Board`).

:func:`pwlnet.boards.registry.boards` imports every module here; a new board is a new file.
"""
