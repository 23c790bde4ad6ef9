from setuptools import find_packages, setup

setup(
    name="agegender-harness",
    version="0.1.0",
    description=(
        "Benchmarking harness for one-step age-and-gender classification "
        "(Adience, UTKFace) across TFLearn and Keras backends"
    ),
    python_requires=">=3.11",
    packages=find_packages(include=["harness", "harness.*", "backends", "backends.*"]),
    package_data={"harness.deploy.serve": ["static/*"]},
    install_requires=[
        "numpy>=1.26",
        "pandas>=2.1",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        "pillow>=10",
        "pyyaml>=6",
        "pydantic>=2.5",
        "tqdm>=4.66",
        "scipy>=1.11",    # the report's paired tests
        "optuna>=4.0",    # samplers and pruners for `search:` (the harness keeps owning the trials)
        # The frameworks under comparison. tensorflow-cpu keeps CPU-only machines
        # light; the [gpu] extra brings CUDA wheels for NVIDIA machines.
        "tensorflow-cpu>=2.16",
        "keras>=3.0",
        "tflearn==0.5.0",
        "tensorboard>=2.16",
        # Face detection and 5-point alignment for `harness predict`: prebuilt dlib, and
        # the landmark model shipped as a package (no download at run time).
        "dlib-bin>=19.24",
        "face-recognition-models>=0.3.0",
        # Exported models run on LiteRT, the runtime phones use (no TensorFlow import);
        # `harness serve` is a FastAPI app on uvicorn (python-multipart parses uploads).
        "ai-edge-litert>=1.2",
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "httptools>=0.6",   # uvicorn's C HTTP parser and event loop, used when present
        "uvloop>=0.19",
        "python-multipart>=0.0.9",
        # `harness serve --lan`: a self-signed certificate for the LAN address, and the
        # page's address as a QR code in the terminal.
        "cryptography>=42",
        "segno>=1.6",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "ray": ["ray>=2.9"],
        # Keras on JAX (backend `keras-jax`), CPU wheels; a CUDA machine installs jax[cuda12].
        "jax": ["jax[cpu]>=0.4.30"],
        # Tests cover the Ray executor on a local instance, so they need Ray too.
        # Playwright drives Debian's chromium for the report's browser test (no browser download).
        # pytest-xdist runs test files on two processes: most tests wait on framework
        # subprocesses, and the suite would otherwise take over 20 minutes on 2 cores.
        # The tests cover keras-jax too, so they bring JAX.
        # The manual: MkDocs with the Material theme (`make docs`; a test builds it).
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ray>=2.9", "playwright>=1.40", "httpx>=0.27",
                 "jax[cpu]>=0.4.30", "mkdocs>=1.6", "mkdocs-material>=9.5", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["harness=harness.cli:main"]},
)
