"""Small helpers shared by the algorithms, the engine and the tools.

Imports go one way: tools -> engine -> algorithms -> losses, connectors,
models -> utils. Nothing here imports from the rest of the package but
``kd_plugins.errors``.
"""
