# The two commands of the README: `make demo` (the main job) and `make test`.
# Both install the pinned environment into .venv/ first; a second install with nothing changed
# does nothing.

VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install demo test clean-demo

install: $(INSTALLED)

$(INSTALLED): requirements.txt setup.cfg pyproject.toml tools/install.sh \
		tools/install_detectron2.py tools/detectron2_C_standin.py
	bash tools/install.sh $(VENV)
	touch $@

# Baseline Mask R-CNN (stage 1) and its DisAlign alignment (stage 2) on the embedded miniature
# LVIS dataset, both evaluated; prints the comparison and writes output/demo/results.json.
demo: install
	$(PYTHON) tools/run_demo.py --output-dir output/demo

test: install
	$(PYTHON) -m pytest tests

clean-demo:
	rm -rf output/demo
