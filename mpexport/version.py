"""The package's version, alone in a module so every layer may read it.

Stores and lock files name the version that wrote them; importing it from
the package's front (``mpexport/__init__.py``) would reach up past the
library to its public face.
"""

__version__ = "0.1.0"
