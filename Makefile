# polarsynth: render -> dataset -> train -> eval.  `make help` lists targets.
# Every target depends on `setup`, which is idempotent and fast once done.
PY      := .venv/bin/python
SCENE   ?= usb_brick
N       ?=
SEED    ?= 0
OUT     ?= out/$(SCENE)
SPP     ?=
RES     ?=
LAYOUT  ?=
VARIANT ?=
PYTEST_ARGS ?=

RENDER_ARGS := --scene $(SCENE) --seed $(SEED) --out $(OUT) \
	$(if $(N),--n $(N)) $(if $(SPP),--spp $(SPP)) $(if $(RES),--res $(RES)) \
	$(if $(LAYOUT),--layout $(LAYOUT)) $(if $(VARIANT),--variant $(VARIANT))

.PHONY: help setup render test bench clean

help:
	@echo "make render SCENE=usb_brick [N=8] [SEED=0] [OUT=out/<scene>] [SPP=16] [RES=640x480] [LAYOUT=<BOP dir>]"
	@echo "make test                 run the test suite"
	@echo "make bench                render benchmark (usb_brick, 640x480, 16 spp)"
	@echo "make setup                create .venv and install everything (run implicitly)"

setup:
	@bash scripts/setup.sh

render: setup
	$(PY) -m polar_render.cli render $(RENDER_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m polar_render.bench

clean:
	rm -rf out .pytest_cache
