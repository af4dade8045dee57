"""Builds the optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "takeover.protocol._speedups",
            sources=["takeover/protocol/_speedups.c"],
            optional=True,  # without a C compiler, takeover runs on its pure-Python fallback
        )
    ]
)
