# The two commands a newcomer needs: `make book` (the whole study on the synthetic data, ending with the
# built book) and `make test` (the whole test suite). Both create the virtual environment when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/coelho2009

.PHONY: book test test-fast bench venv reference reference-book curves cv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nucseg)"
	touch $@

# the study runs on Snakemake (workflow/Snakefile); CORES jobs at once
CORES ?= all
SNAKEMAKE = $(VENV)/bin/snakemake -s workflow/Snakefile --cores $(CORES) --rerun-incomplete --show-failed-logs

book: venv
	$(SNAKEMAKE) --config profile=quick out=runs/synthetic-quick

# the whole suite (what CI runs), with its 20 slowest tests listed at the end. Two pytest-xdist workers, each
# taking whole test files: the workflow tests' jobs leave a core idle much of the time (start-up, one job left),
# which the other worker fills. The smoke study runs once for both, and the two tests that build the reference
# book take turns (tests/conftest.py: smoke_run, one_worker_at_a_time)
XDIST := -n 2 --dist loadfile
test: venv
	$(PY) -m pytest tests -p no:cacheprovider $(XDIST) --durations=20

# the developer's loop: unit and definition tests, no training beyond seconds, no workflow, browser or SLURM
# (one worker: two took as long, 47 s on the Zen 4 of README.md, each starting its own torch)
test-fast: venv
	$(PY) -m pytest tests -p no:cacheprovider -m "not slow and not browser and not slurm" --durations=10

# speed on this machine: U-Net training step and inference s/MP at the precision chosen here, StarDist patches/s,
# and the seconds a job spends starting (imports of torch, TensorFlow, papermill; a notebook kernel)
bench: venv
	$(PY) benchmarks/bench_unet.py --batch 8 --patch 128 --steps 5
	$(PY) benchmarks/bench_stardist.py --dataset synthetic --scale 1 --steps 20 --images 16
	$(PY) benchmarks/bench_startup.py

# training seeds of notebook 08's replicates (sibling folders runs/coelho2009-cpu-seed<N>)
REPLICATES ?= 1
comma := ,
empty :=
space := $(empty) $(empty)

# the published run (notebooks 01-08, seed 0; the learning curves are `make curves`) and notebook 08 with the
# REPLICATES seeds, then publish all
reference: venv
	$(SNAKEMAKE) --config dataset=coelho2009 data_root=$(DATA) profile=cpu out=runs/coelho2009-cpu \
	  "seeds=[0,$(subst $(space),$(comma),$(strip $(REPLICATES)))]" "notebooks=[01,02,03,04,05,06,07,08]" book=false
	$(PY) -m nucseg_lib.pipeline.runner publish --run runs/coelho2009-cpu
	for s in $(REPLICATES); do \
	  $(PY) -m nucseg_lib.pipeline.runner publish --run runs/coelho2009-cpu-seed$$s --to reference/coelho2009-cpu-seed$$s || exit 1; \
	done
	$(PY) -m nucseg_lib.pipeline.runner book --run reference/coelho2009-cpu

# learning curves (notebook 09) on Coelho 2009: one job per method, scale and training seed (1 thread each,
# as many at once as cores); published beside the reference run, and its boundary U-Net as the nucseg predict model.
# Both methods train with the cpu profile's settings, those of the reference run: U-Nets at 1e-3 with the weight
# average, StarDist at 1e-3 (chosen on validation images: book/methods.md). Interrupted, it resumes from the last
# checkpoint of each run.
curves: venv
	$(SNAKEMAKE) --config dataset=coelho2009 data_root=$(DATA) profile=cpu out=runs/coelho2009-cpu-curves \
	  notebooks=09 book=false threads=1
	$(PY) -m nucseg_lib.pipeline.runner publish --run runs/coelho2009-cpu-curves --to reference/coelho2009-cpu-curves
	$(PY) -m nucseg_lib.pipeline.runner publish-model --run runs/coelho2009-cpu-curves

# cross-validation (notebook 10) on Coelho 2009: the headline comparison with every image a test image once (5 folds,
# one job per method and fold, 1 thread each); published beside the reference run. Interrupted, it resumes with the
# folds it had not finished. Both methods train at the learning rate chosen on validation images (book/methods.md):
# the U-Net at the cpu profile's 1e-3, StarDist at 1e-3 instead of its default 3e-4 ("StarDist's settings")
cv: venv
	$(SNAKEMAKE) --config dataset=coelho2009 data_root=$(DATA) profile=cpu out=runs/coelho2009-cpu-cv \
	  notebooks=10 book=false threads=1 stardist_lr=1e-3
	$(PY) -m nucseg_lib.pipeline.runner publish --run runs/coelho2009-cpu-cv --to reference/coelho2009-cpu-cv

# rebuild the reference book (runs/reference-book) and regenerate book/results.md from reference/
reference-book: venv
	$(PY) -m nucseg_lib.pipeline.runner book --run reference/coelho2009-cpu

clean:
	find runs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf _build .snakemake
