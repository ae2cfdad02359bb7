# make demo : create .venv if missing, install, run the demo on bundled data
# make test : create .venv if missing, install, run the whole test suite
# make test-fast : the in-process tests only (formulas, configs, preflight,
#            lint)
# make test-fast-other-cpu : the fast tier with another CPU's torch kernels
# make gpu-check [OUT=dir] [DRY_RUN=1] : CUDA tests + throughput table on the
#            GPU machine (no install from the network; see tools/gpu_check.sh)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision pair installed explicitly (the CPU-only torch on some
# machines has no matching torchvision); aarch64 gets the CPU build pair.
ifeq ($(shell uname -m),aarch64)
TORCH_PKGS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
endif
# the OpenMMLab versions this set-up installs and CI tests (setup.py takes
# ranges; docs/compatibility.md); mmcv-lite only where no mmcv is installed
MM_PKGS   ?= mmengine==0.10.7 mmpretrain==1.2.0 mmrazor==1.0.0
MMCV_LITE ?= mmcv-lite==2.1.0
STAMP := $(VENV)/.kd_plugins_installed

.PHONY: install demo test test-fast test-fast-other-cpu gpu-check clean
install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PKGS)
	$(PY) -c "import importlib.metadata as m; m.version('mmcv')" 2>/dev/null \
	  || $(PY) -m pip install -q $(MMCV_LITE)
	$(PY) -m pip install -q $(MM_PKGS) -e '.[dev,deploy]'
	$(PY) -c "import kd_plugins, mmrazor, mmpretrain; print('kd_plugins', kd_plugins.__version__, 'installed')"
	touch $@

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest tests

test-fast: install
	$(PY) -m pytest tests -m "not e2e and not gpu"

# the fast tier with torch's kernels for another CPU (AVX-512 -> AVX2,
# AVX2 -> default), in a fresh inductor cache (compiled kernels are cached
# per machine, not per ATEN_CPU_CAPABILITY)
test-fast-other-cpu: install
	cap=$$($(PY) -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	case $$cap in AVX512) other=avx2;; AVX2) other=default;; *) other=default;; esac; \
	cache=$$(mktemp -d); echo "== fast tier with ATEN_CPU_CAPABILITY=$$other (native: $$cap)"; \
	ATEN_CPU_CAPABILITY=$$other TORCHINDUCTOR_CACHE_DIR=$$cache $(PY) -m pytest tests -m "not e2e and not gpu" -p no:cacheprovider; \
	rc=$$?; rm -rf $$cache; exit $$rc

gpu-check:
	bash tools/gpu_check.sh $(if $(OUT),--out $(OUT)) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf work_dirs .pytest_cache
