# The two commands of the README: `make demo` (the main job) and `make test`.
# Both install the pinned environment into .venv/ first; a second install with nothing changed
# does nothing.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
INSTALL_FILES := requirements.txt setup.py setup.cfg pyproject.toml tools/install.sh \
	tools/install_detectron2.py tools/detectron2_C_standin.py \
	projects/DisAlign/lvis_fast/_rle.c

# Optional, on the command line (see docs/install.md, "On a GPU machine"):
#   D2_SOURCE=<archive or folder>  build that detectron2 source with its compiled ops (CPU ops,
#                                  and CUDA ops where a CUDA toolkit is found) instead of 0.6
#                                  without them; rebuilt when the source's content changes
#   TORCH_INDEX=<pip index URL>    take torch and torchvision from that index (another CUDA build)
#   TORCH_PACKAGES="torch==X torchvision==Y"   other versions of both
# With any of them set, the install step always runs; it rebuilds only what changed.
D2_SOURCE ?=
TORCH_INDEX ?=
TORCH_PACKAGES ?=
ifneq ($(strip $(D2_SOURCE)$(TORCH_INDEX)$(TORCH_PACKAGES)),)
.PHONY: $(INSTALLED)
endif

# a second environment with a current upstream detectron2, built from source with its C++ ops
D2MAIN_VENV ?= .venv-d2main
D2MAIN_SOURCE ?= ../shared/vendor/detectron2-main-02b5c4e.tar.gz

.PHONY: install demo demo-cls demo-seg test test-d2main clean-demo mutation lint

install: $(INSTALLED)

$(INSTALLED): $(INSTALL_FILES)
	TORCH_INDEX="$(TORCH_INDEX)" TORCH_PACKAGES="$(TORCH_PACKAGES)" \
		bash tools/install.sh $(VENV) $(D2_SOURCE)
	touch $@

$(D2MAIN_VENV)/.installed: $(INSTALL_FILES) $(D2MAIN_SOURCE)
	bash tools/install.sh $(D2MAIN_VENV) $(D2MAIN_SOURCE)
	touch $@

$(D2MAIN_SOURCE):
	@echo "error: $(D2MAIN_SOURCE) not found (set D2MAIN_SOURCE to a detectron2 source archive)"; exit 1

# Baseline Mask R-CNN (stage 1) and its DisAlign alignment (stage 2) on the embedded miniature
# LVIS dataset, both evaluated; prints the comparison and writes output/demo/results.json and
# output/demo/per_class_ap.png (per-class AP against training frequency, both stages).
demo: install
	$(PYTHON) tools/run_demo.py --task detection

# Baseline ResNet-18 and its DisAlign alignment on the embedded long-tailed classification
# miniature; prints the comparison and writes output/demo-cls/results.json.
demo-cls: install
	$(PYTHON) tools/run_demo.py --task classification

# Baseline DeepLabV3+ and its DisAlign alignment on the embedded segmentation miniature; prints
# mIoU / mAcc overall and for head, body, tail, and writes output/demo-seg/results.json.
demo-seg: install
	$(PYTHON) tools/run_demo.py --task segmentation

test: install
	$(PYTHON) -m pytest tests

# The shipped LVIS v1.0 configs through train_net.py at LVIS's scale on the CPU: a synthetic
# dataset of LVIS v1 train's size (1,203 categories, 100,170 images, 1.27 million annotations;
# generated once under output/smoke_lvis/datasets), stand-in weights in the formats of
# detectron2's R-50.pkl and LVIS model-zoo .pkl, a few iterations of stage 1 and stage 2,
# --eval-only with both LVIS evaluation backends, the model-zoo stage 2 and --resume. Prints the
# time and memory of each step and writes output/smoke_lvis/smoke_lvis.md (docs/smoke_lvis.md).
.PHONY: smoke-lvis
smoke-lvis: install
	$(PYTHON) tools/smoke_lvis.py

# flake8 and isort (setup.cfg) on the package, the tools and the tests
LINT_PATHS := projects tools tests train_net.py
lint: install
	$(PYTHON) -m flake8 $(LINT_PATHS)
	$(PYTHON) -m isort --check-only --diff $(LINT_PATHS)

# the same test suite against the current detectron2 of D2MAIN_SOURCE
test-d2main: $(D2MAIN_VENV)/.installed
	$(D2MAIN_VENV)/bin/python -m pytest tests

# mutation testing of the core modules (mutmut, in a scratch copy of the checkout; slow, not part
# of `make test`): prints mutants, killed, survived and score per module, and the survivors, and
# writes them to docs/mutation.md; MUTATION_ARGS="--modules grw" for some modules only
# (tools/mutation.py --help)
MUTMUT_VERSION := 3.8.1
mutation: install
	$(PYTHON) -c "import mutmut, sys; sys.exit(mutmut.__version__ != '$(MUTMUT_VERSION)')" \
		2>/dev/null || $(PYTHON) -m pip install -q mutmut==$(MUTMUT_VERSION)
	$(PYTHON) tools/mutation.py --report docs/mutation.md $(MUTATION_ARGS)

clean-demo:
	rm -rf output/demo output/demo-cls output/demo-seg
