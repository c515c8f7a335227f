"""Packaging for bbf_jax: BBF (Bigger, Better, Faster) in JAX/Flax."""

import pathlib
import re

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_HERE / "bbf_jax" / "__init__.py").read_text()
).group(1)

_TORCH = ["torch==2.13.0"]  # the CPU build; a looser range pulls GBs of CUDA wheels
# rliable cross-checks the report's estimators; its arch dependency fails to import with
# pandas 3, hence the pandas pin (test extra only).
_TEST = ["pytest>=8.0", "pytest-xdist>=3.5", "hypothesis>=6.100", "rliable>=1.2.0", "pandas<3"]
# LunarLander (agent 'brc'): box2d 2.3.10 has wheels for Python 3.11-3.13, so no SWIG build;
# gymnasium's box2d package also imports pygame.
_BOX2D = ["box2d>=2.3.10", "pygame>=2.1.3"]

setup(
    name="bbf_jax",
    version=_VERSION,
    description=(
        "BBF (Bigger, Better, Faster; Schwarzer et al., ICML 2023) in JAX/Flax, "
        "numerically matching the official implementation."
    ),
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["bbf_jax", "bbf_jax.*"]),
    package_data={"bbf_jax": ["data/*.csv", "data/*.json"]},
    install_requires=[
        "jax>=0.5.0",
        "flax>=0.10.0",
        "optax>=0.2.4",
        "chex>=0.1.88",
        "numpy>=1.26",
        "gymnasium>=1.0.0",
        "ale-py>=0.10.1",
        "gin-config>=0.5.0",
        "orbax-checkpoint>=0.11.0",
        "opencv-python-headless>=4.8",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "scipy>=1.11",
    ],
    extras_require={
        "torch": _TORCH,
        "box2d": _BOX2D,
        "test": _TEST,
        "dev": _TEST + _TORCH + _BOX2D + ["ruff>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "bbf-train=bbf_jax.train:main",
            "bbf-crosscheck=bbf_jax.crosscheck.cli:main",
            "bbf-report=bbf_jax.report.cli:main",
            "bbf-sweep=bbf_jax.sweep.cli:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
