# Two commands on a fresh machine: `make sweep` and `make test` (both create .venv if needed).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Without a GPU, the CPU build of torch: a bare `torch` requirement would pull a multi-GB CUDA
# build. `torch==2.13.0+cpu` is found where pip is configured with local wheels (this machine's
# find-links); elsewhere it comes from PyTorch's CPU index. With a GPU the project's `torch>=2.4`
# range decides. Both are overridable: make venv TORCH_CPU=torch==2.14.1+cpu.
TORCH_CPU       ?= torch==2.13.0+cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: venv test test-fast test-e2e lint sweep fig1c studies estimators bench bench-sweep clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[venv 1/4] $(VENV): python3 -m venv"; test -x $(PY) || python3 -m venv $(VENV)
	@echo "[venv 2/4] pip itself"; $(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then echo "[venv 3/4] a GPU: torch from pyproject"; \
	else echo "[venv 3/4] no GPU: $(TORCH_CPU)"; \
	  $(PY) -m pip install -q $(TORCH_CPU) 2>/dev/null \
	  || $(PY) -m pip install -q $(TORCH_CPU) --extra-index-url $(TORCH_CPU_INDEX); fi
	@echo "[venv 4/4] ssvae with the sweep and dev extras (about 1 min)"
	$(PY) -m pip install -q --progress-bar off -e '.[sweep,dev]'
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q -m "not e2e"

# The deployment end to end (tests/deploy, marker e2e; docs/deploy.md): `ray up`/`ray submit`/
# `ray down` of cluster/local.yaml over an sshd on loopback, inside its own PID namespace, and
# docker/compose.yaml's stack built and run on podman. Root and the Debian packages .ci/run
# installs; run alone (another `ray stop` on the machine would end its cluster). 7 to 10 min with the base
# image cached (~/.cache/ssvae-e2e), about 20 min the first time.
test-e2e: venv
	$(PY) -m pytest -q -m e2e tests/deploy --durations=0

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

DOCKERFILES := docker/Dockerfile docker/mlflow.Dockerfile tests/deploy/podman/postgres.Dockerfile

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint $(DOCKERFILES)
	# `config` only interpolates and checks the file: the secrets directory need not exist.
	SSVAE_SECRETS_DIR=/nonexistent $(VENV)/bin/docker-compose -f docker/compose.yaml config -q
	SSVAE_SECRETS_DIR=/nonexistent BASE_IMAGE=lint $(VENV)/bin/docker-compose \
	  -f docker/compose.yaml -f tests/deploy/podman/compose.e2e.yaml config -q

# The Fig. 1C study on local Ray + MLflow at sqlite:///mlflow.db (run `mlflow ui` here after).
# Each `make sweep` is a new study; `ssvae sweep FILE --name NAME --resume` continues one.
sweep: venv
	$(VENV)/bin/ssvae sweep sweeps/paper-small.yaml --name paper-small-$$(date +%Y%m%d-%H%M%S)

# The same study without Ray or MLflow, one run after another.
fig1c: venv
	$(VENV)/bin/ssvae fig1c --preset small --seeds 0 1 2 --out runs/fig1c-small

# Every study of docs/ again (about 1.5 h on 2 CPU cores): each sweep, then its figures and
# summary.md redrawn into docs/img/NAME/ (the pages quote those tables).
STUDIES ?= paper-small critics critics-adam negatives lengthscale stochastic
studies: venv
	for s in $(STUDIES); do n=$$s-$$(date +%Y%m%d-%H%M%S); \
	  $(VENV)/bin/ssvae sweep sweeps/$$s.yaml --name $$n \
	  && $(VENV)/bin/ssvae report sweeps/$$s.yaml --name $$n --out docs/img/$$s || exit $$?; done

# The known-MI estimator suite of docs/estimators.md (about 20 min on one core).
estimators: venv
	$(VENV)/bin/ssvae mi-bench --tasks gaussian,gaussian-halfcube,student_t,student_t-asinh \
	  --estimators infonce,nwj,dv,js --couplings bilinear,gaussian,separable_mlp,concat_mlp \
	  --mis 2,6 --seeds 3 --csv docs/estimators-suite.csv --figure docs/img/estimators/bias.png

bench: venv
	$(PY) bench/run.py

bench-sweep: venv
	$(PY) bench/sweep_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
