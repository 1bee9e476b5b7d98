"""Build and install the experiment-control system.

The only compiled part is the script controller ``pyctl._pyctl``; everything
else is pure Python.
"""
from setuptools import Extension, find_packages, setup

pyctl_extension = Extension(
    "pyctl._pyctl",
    sources=["pyctl/_pyctl.c"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

setup(
    name="nicos-ng",
    version="0.1.0",
    description="Experiment control for neutron and X-ray instruments: "
    "daemon, script controller, clients",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["nicos", "nicos.*", "nicos_daemon", "nicos_daemon.*", "pyctl"]),
    ext_modules=[pyctl_extension],
    install_requires=["rsa>=4.7", "numpy>=1.24", "prompt_toolkit>=3.0.36,<4"],
    extras_require={
        "gui": ["PyQt5>=5.15", "pyqtgraph>=0.13"],
        "pam": ["python-pam>=2.0"],
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-qt>=4", "hypothesis>=6", "pexpect>=4.8", "ruff>=0.5"],
        "bench": ["nicos-pyctl==1.4.1", "psutil>=5"],
        "fuzz": ["atheris>=2.3"],
    },
    entry_points={
        "console_scripts": [
            "nicos-daemon = nicos_daemon.main:main",
            "nicos-client = nicos.clients.cli.main:main",
            "nicos-gui = nicos.clients.gui.main:main",
        ],
    },
)
