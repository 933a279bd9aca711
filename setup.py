"""fairjax: FAIR federated recommendation and BOLT-style sparse layers in JAX."""
import setuptools

setuptools.setup(
    name="fairjax",
    version="0.1.0",
    description=("Federated recommendation on devices of every size (FAIR) and "
                 "LSH-sampled sparse output layers on CPUs, in JAX."),
    packages=setuptools.find_packages(include=["fairjax*", "sparse*", "launch*", "configs*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2,<0.3",
        "chex>=0.1.87,<0.2",
        "numpy>=1.26,<3",
        "absl-py>=2.0,<3",
        "ml_collections>=0.1.1,<2",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "numba>=0.60,<0.70",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "nbclient>=0.10,<0.12", "nbformat>=5.10,<6",
                 "ipykernel>=6.29,<8", "pyarrow>=14,<27"],
        # data.name=cj / cj-heavy read a parquet file (fairjax/data/completejourney.py).
        "cj": ["pyarrow>=14,<27"],
        # Real deployment over Flower (launch.deploy, fairjax.flower). Pinned to
        # the minor version it was written against: Flower's APIs move fast.
        "deploy": ["flwr>=1.42,<1.43"],
    },
)
