"""Root conftest: plugins the project's own tests use.

The conformance plugin itself is registered through the ``pytest11`` entry point of the
installed package (``pip install -e .``).
"""

pytest_plugins = ("pytester",)
