"""Only what pyproject.toml cannot say: the top-level notebooks/ folder ships inside the package as
colam_core/notebooks (`colam notebooks DIR` copies them out). All package data is listed here: a
[tool.setuptools.package-data] table in pyproject.toml would replace this one. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["colam_core*", "workbench*"]) + ["colam_core.notebooks"],
    package_dir={"colam_core.notebooks": "notebooks"},
    package_data={"colam_core": ["py.typed"], "workbench": ["py.typed"], "colam_core.notebooks": ["*.ipynb"],
                  "colam_core.sweeps": ["specs/*.yaml"]},
)
