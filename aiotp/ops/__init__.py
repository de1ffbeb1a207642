"""Operations: the application and its runner, the live view, metrics, the testing kit.

The top layer of aiotp (see ``../DESIGN.md``): it uses every layer below and nothing imports it
but ``aiotp/__init__.py`` (lazily) and the ``python -m aiotp`` command line.
"""
