"""End-to-end demos, one module each, run by ``fastnn demo NAME``.

A demo module defines ``NAME`` (the sub-command), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``.
"""
