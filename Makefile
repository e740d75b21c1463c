# The first two targets are all a newcomer types: `make train`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# FAISS=gpu installs faiss-gpu (the `gpu` extra) instead of faiss-cpu: never two FAISS builds in one
# environment, so setup first removes the others (faiss-cuda and faiss-gpu-cu12: earlier gpu extras;
# faiss-gpu-cuvs: Meta's cuVS variant).
FAISS ?= cpu
FAISS_BUILDS := faiss-cpu faiss-gpu faiss-gpu-cuvs faiss-cuda faiss-gpu-cu12
FAISS_BUILD = $(if $(filter gpu,$(FAISS)),faiss-gpu,faiss-cpu)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed-$(FAISS)
ARGS ?=
DATASET ?= cub200
SOURCE ?=
SWEEP_DIR ?= outputs/multirun/quickstart-$(shell date +%Y%m%d-%H%M%S)
SWEEP_DIR := $(SWEEP_DIR)
# The paper's comparison in miniature: experiment files pin each loss with its miner and sampler.
SWEEP_EXPERIMENTS ?= quickstart,quickstart_spce,quickstart_contrastive,quickstart_ms,quickstart_triplet,quickstart_proxy_anchor
# The quickstart's 8 epochs: cross-entropy's zero-initialised classifier starts slowly, so fewer
# epochs would handicap it in the comparison.
SWEEP_EPOCHS ?= 8

# make compare: each loss's equal-budget search, its winner retrained with seeds, the comparison
# with cross-entropy and its plot (docs/comparisons.md). The default budget, 6 trials, 8 seeds and 8
# epochs (84 runs), took 44 min on a 2-core CPU and settles most of the comparison there.
# The same command with the same COMPARE_DIR resumes: finished searches and retraining runs are kept.
COMPARE_LOSSES ?= cross_entropy contrastive multi_similarity triplet proxy_anchor spce
COMPARE_EXPERIMENT ?= quickstart
COMPARE_TRIALS ?= 6
COMPARE_SEEDS ?= 8
COMPARE_EPOCHS ?= 8
COMPARE_DIR ?= outputs/compare/$(COMPARE_EXPERIMENT)-$(shell date +%Y%m%d-%H%M%S)
COMPARE_DIR := $(COMPARE_DIR)

.PHONY: setup train test test-all sweep compare results tensorboard data paper lint clean

train: setup  ## the main job on the embedded quickstart data
	$(PY) -m dml_bench.train experiment=quickstart $(ARGS)

test: setup  ## the default (fast) test suite
	$(PY) -m pytest -q $(ARGS)

test-all: setup  ## every test, the slow ones too
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip uninstall -q -y $(filter-out $(FAISS_BUILD),$(FAISS_BUILDS)) >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e ".[dev,$(FAISS)]"
	rm -f $(VENV)/.installed-*
	touch $@

sweep: setup  ## cross-entropy vs pairwise losses on the quickstart: results table and plot
	$(PY) -m dml_bench.train -m experiment=$(SWEEP_EXPERIMENTS) trainer.epochs=$(SWEEP_EPOCHS) \
		hydra.sweep.dir=$(SWEEP_DIR) trainer.progress=false $(ARGS)
	$(PY) scripts/collect_results.py $(SWEEP_DIR)
	$(PY) scripts/plot_results.py $(SWEEP_DIR)

compare: setup  ## equal-budget search of each loss, winners retrained with seeds, table and plot against cross-entropy
	for loss in $(COMPARE_LOSSES); do \
		$(PY) -m dml_bench.train -m experiment=$(COMPARE_EXPERIMENT) search=$$loss trainer.epochs=$(COMPARE_EPOCHS) \
			hydra.sweeper.n_trials=$(COMPARE_TRIALS) hydra.sweep.dir=$(COMPARE_DIR)/$$loss trainer.progress=false $(ARGS) \
		&& $(PY) scripts/retrain_best.py $(COMPARE_DIR)/$$loss --seeds $(COMPARE_SEEDS) || exit 1; \
	done
	$(PY) scripts/collect_results.py $(COMPARE_DIR)/*/retrain --by loss --compare loss=cross_entropy \
		--csv $(COMPARE_DIR)/results.csv > $(COMPARE_DIR)/comparison.md && cat $(COMPARE_DIR)/comparison.md
	$(PY) scripts/plot_comparison.py $(COMPARE_DIR)/*/retrain --by loss --out $(COMPARE_DIR)/comparison.png

results: setup  ## table of every run under outputs/
	$(PY) scripts/collect_results.py outputs

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir outputs

# DATASET names a benchmark by its name or alias (cub200 or cub, cars196 or cars, sop, inshop,
# inaturalist or inat, vehicleid):
# $(call benchmark,FIELD) is that FIELD (name, experiment) of its spec, dml_bench/data/benchmarks.py.
# It is looked up as the recipe runs, after setup.
benchmark = $(or $(shell $(PY) -m dml_bench.data.benchmarks $(DATASET) --field $(1)),$(error DATASET=$(DATASET) is not a benchmark))

data: setup  ## make data DATASET=cub200|cub|cars196|cars|sop|inshop|inaturalist|inat|vehicleid [SOURCE=dir-or-url]
	$(PY) -m dml_bench.prepare_data $(call benchmark,name) --root data/$(call benchmark,name) $(if $(SOURCE),--source $(SOURCE))

# The paper's recipe on one dataset, on a GPU (the command is printed as it runs):
#   make paper DATASET=cub200|cub|cars196|cars|sop|inshop|inaturalist|inat|vehicleid [ARGS="seed=1 protocol=rigorous"]
paper: setup
	$(PY) -m dml_bench.train experiment=$(call benchmark,experiment) $(ARGS)

lint: setup  ## ruff, and the package's layers (import-linter contracts in pyproject.toml)
	$(VENV)/bin/ruff check dml_bench hydra_plugins scripts tests
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean:
	rm -rf outputs .pytest_cache
