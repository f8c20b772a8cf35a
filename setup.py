from pathlib import Path

from setuptools import find_packages, setup

# torch is pinned by the Makefile to the CPU build before this runs, so the range
# here is satisfied and no CUDA wheels are pulled on a CPU machine.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=4.51",
    "accelerate>=1.0",
    "gymnasium>=1.0",
    "numpy>=1.26",
    "requests>=2.31",
    "lxml>=5.0",
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "wandb>=0.17",
    "warcio>=1.7",  # WARC read/write for page snapshots
    "tantivy>=0.22",  # BM25 search; fastest of the engines we measured (benchmarks/search_engines.py)
    "tqdm>=4.66",  # progress bars
    "safetensors>=0.4",  # checkpoints
    "matplotlib>=3.8",  # PNG plots in reports
]

EXTRAS = {
    # transformers[serving]: `transformers serve` is the real OpenAI-compatible server the
    # engine tests talk to; the Optuna sweeper runs the sweep test.
    "test": ["pytest>=8", "pytest-timeout>=2.3", "transformers[serving]", "hydra-optuna-sweeper>=1.2"],
    # the baselines the benchmarks compare against
    "bench": ["trl>=0.19"],
    "vllm": ["vllm>=0.8"],
}

setup(
    name="webdancer",
    version="0.1.0",
    description="Train autonomous web information-seeking agents end to end: "
    "QA synthesis, ReAct trajectories, masked SFT and DAPO RL over an offline web.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["webdancer", "webdancer.*"]),
    package_data={"webdancer": ["conf/*.yaml", "conf/**/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["webdancer=webdancer.cli:main"]},
)
