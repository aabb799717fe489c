# polarsynth: render -> dataset -> train -> eval.  `make help` lists targets.
# Every target depends on `setup`, which is idempotent and fast once done.
PY      := .venv/bin/python
comma   := ,
SCENE   ?= usb_brick
# SCENE is a name under scenes/ or a path; default folders use the scene's name: NAME for
# .../NAME/scene.yaml or a folder .../NAME, the file's stem for another .yaml (as the CLI does)
SCENE_NAME = $(if $(filter %.yaml %.yml,$(SCENE)),$(if $(filter scene.yaml scene.yml,$(notdir $(SCENE))),$(notdir $(patsubst %/,%,$(dir $(SCENE)))),$(basename $(notdir $(SCENE)))),$(notdir $(patsubst %/,%,$(SCENE))))
N       ?=
SEED    ?= 0
OUT     ?= out/$(SCENE_NAME)
SPP     ?=
RES     ?=
LAYOUT  ?=
VARIANT ?=
DENOISE ?=
NOISE_SEED ?=
CLEAN   ?=
WORKERS ?=
SHARD   ?=
EXECUTOR ?=
LAYOUT_BACKEND ?=
BLENDER ?=
EXTRAS  ?=
PYTEST_ARGS ?=
BENCH_SCENES ?=
# dataset / train / eval
DATA       ?= out/$(SCENE_NAME)_data
RENDERS    ?= $(OUT)
MODALITIES ?= intensity,aolp,dolp,normals
TRAIN_RATIO ?= 0.8
MODEL      ?= draem
INPUTS     ?= intensity
MODALITY   ?= intensity
PRESET     ?= small
EPOCHS     ?=
SIZE       ?=
RUN        ?= out/runs/$(notdir $(DATA))_$(MODEL)
PRED       ?= $(RUN)/pred
EVAL_OUT   ?= $(RUN)/eval

RENDER_ARGS := --scene $(SCENE) --seed $(SEED) --out $(OUT) \
	$(if $(N),--n $(N)) $(if $(SPP),--spp $(SPP)) $(if $(RES),--res $(RES)) \
	$(if $(LAYOUT),--layout $(LAYOUT)) $(if $(VARIANT),--variant $(VARIANT)) $(if $(DENOISE),--denoise $(DENOISE)) $(if $(NOISE_SEED),--noise-seed $(NOISE_SEED)) $(if $(CLEAN),--clean) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SHARD),--shard $(SHARD)) $(if $(EXECUTOR),--executor $(EXECUTOR)) \
	$(if $(LAYOUT_BACKEND),--layout-backend $(LAYOUT_BACKEND)) $(if $(BLENDER),--blender $(BLENDER))

ifeq ($(MODEL),sfp)
# learned shape-from-polarization normals (polar_detect.models.sfp): predict writes a copy of DATA
# with a normals_learned modality; eval reports angular errors next to the physics baseline
SFP_DATA   ?= $(DATA)_sfp
TRAIN_CMD   = $(PY) -m polar_detect.models.sfp train --data $(DATA) --out $(RUN) --seed $(SEED) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(RESTART),--restart)
else ifeq ($(MODEL),draem)
TRAIN_CMD   = $(PY) -m polar_detect.models.draem train --data $(DATA) --inputs $(INPUTS) --out $(RUN) --preset $(PRESET) $(if $(SIZE),--size $(SIZE)) --seed $(SEED) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(RESTART),--restart)
PREDICT_CMD = $(PY) -m polar_detect.models.draem predict --model $(RUN) --data $(DATA)
else
PC_METHOD   = $(if $(filter seq_patchcore,$(MODEL)),sequential,original)
TRAIN_CMD   = $(PY) -m polar_detect.models.patchcore train --data $(DATA) --modality $(MODALITY) --method $(PC_METHOD) $(if $(SIZE),--size $(SIZE)) --seed $(SEED) --out $(RUN)/model.safetensors $(if $(EPOCHS),--epochs $(EPOCHS))
PREDICT_CMD = $(PY) -m polar_detect.models.patchcore predict --model $(RUN)/model.safetensors --data $(DATA)
endif

# make scene: a scene file for your own part (polar_render.config.scaffold)
NAME     ?=
MESH     ?=
UNIT     ?=
MATERIAL ?=
MODE     ?=
FORCE    ?=

.PHONY: help setup scene render dataset train predict eval all test bench clean check-model

help:
	@echo "make scene NAME=bracket MESH='part.stl [lid.obj ...]' [UNIT=mm|cm|m|in] [MATERIAL=plastic|aluminium|...]"
	@echo "    [MODE=station|drop|topdown] [FORCE=1]   writes scenes/NAME/scene.yaml for your own part (then: make render SCENE=NAME)"
	@echo "make render SCENE=usb_brick|scenes/x/scene.yaml [N=8] [SEED=0] [OUT=out/<scene name>] [SPP=16] [RES=640x480] [LAYOUT=<BOP dir>] [CLEAN=1] [DENOISE=none|oidn] [NOISE_SEED=k]"
	@echo "    [LAYOUT_BACKEND=embedded|blenderproc] [BLENDER=<Blender 4.2 dir>]  (blenderproc: make setup EXTRAS=blenderproc)"
	@echo "make dataset SCENE=... [DATA=out/<scene>_data] [RENDERS='dir ...'] [MODALITIES=intensity,aolp,dolp,normals]"
	@echo "make train MODEL=draem|seq_patchcore|patchcore|sfp DATA=... [INPUTS=R+phi] [MODALITY=intensity] [EPOCHS=..] [SIZE=..]"
	@echo "    MODEL=sfp: learned normals; make predict MODEL=sfp writes DATA_sfp with normals_learned, make eval MODEL=sfp: angular errors"
	@echo "    SIZE: training size, default the CLI's (DRAEM 256x256; PatchCore: the native image size)"
	@echo "make eval MODEL=... DATA=...   (predicts val + test, then metrics.json + report.html)"
	@echo "make all SCENE=usb_brick       render -> dataset -> train -> eval, small defaults, in its own"
	@echo "    OUT=out/<scene>_all and DATA=out/<scene>_all_data (so it never meets a 'make render' run)"
	@echo "make test                 run the test suite"
	@echo "make bench [BENCH_SCENES='usb_brick usb_brick_station']  render (raw and denoised), quality per second, ..."
	@echo "make setup [EXTRAS=blenderproc]  create .venv and install everything (run implicitly)"

setup:
	@EXTRAS="$(EXTRAS)" bash scripts/setup.sh

scene: setup
	@if [ -z "$(NAME)" ] || [ -z "$(MESH)" ]; then echo "usage: make scene NAME=<name> MESH='part.stl [lid.obj ...]' [UNIT=mm] [MATERIAL=plastic] [MODE=station|drop|topdown] [FORCE=1]" >&2; exit 2; fi
	$(PY) -m polar_render.cli new-scene $(NAME) $(foreach m,$(MESH),--mesh $(m)) $(foreach u,$(UNIT),--unit $(u)) \
		$(foreach m,$(MATERIAL),--material $(m)) $(if $(MODE),--mode $(MODE)) $(if $(FORCE),--force)

render: setup
	$(PY) -m polar_render.cli render $(RENDER_ARGS)

dataset: setup
	$(PY) -m polar_detect.dataset build $(foreach r,$(RENDERS),--render $(r)) --out $(DATA) --modalities $(MODALITIES) --seed $(SEED) --train-ratio $(TRAIN_RATIO) --overwrite

check-model:
	@case "$(MODEL)" in draem|seq_patchcore|patchcore|sfp) ;; *) echo "MODEL must be draem, seq_patchcore, patchcore or sfp (got '$(MODEL)')" >&2; exit 2;; esac

train: setup check-model
	$(TRAIN_CMD)

ifeq ($(MODEL),sfp)
predict: setup check-model
	$(PY) -m polar_detect.models.sfp predict --model $(RUN) --data $(DATA) --out $(SFP_DATA) --overwrite

eval: setup check-model
	$(PY) -m polar_detect.models.sfp evaluate --model $(RUN) --data $(DATA) --split test --sensor exact,dofp --out $(EVAL_OUT)/sfp_metrics.json
else
predict: setup check-model
	$(PREDICT_CMD) --split val --out $(PRED)_val
	$(PREDICT_CMD) --split test --out $(PRED)

eval: predict
	$(PY) -m polar_detect.evaluation.evaluate --pred $(PRED) --val-pred $(PRED)_val --data $(DATA) --out $(EVAL_OUT)
endif

# Small end-to-end default that finishes on a 2-core CPU in minutes (override N=, SPP=, ...).
# It renders with its own N/SPP/RES, so it uses its own directories (out/<scene>_all,
# out/<scene>_all_data, out/runs/<scene>_all_data_<model>) unless OUT=/DATA=/RUN= are given:
# a 'make render SCENE=<scene>' run in out/<scene> (other spp/res) is never mixed with it.
ALL_N ?= 24
ALL_SPP ?= 8
ALL_RES ?= 320x240
ALL_EPOCHS ?= 10
given    = $(filter command line environment,$(origin $(1)))
ALL_OUT  = $(if $(call given,OUT),$(OUT),out/$(SCENE_NAME)_all)
ALL_DATA = $(if $(call given,DATA),$(DATA),$(ALL_OUT)_data)
ALL_RUN  = $(if $(call given,RUN),$(RUN),out/runs/$(notdir $(ALL_DATA))_$(MODEL))
ALL_EVAL = $(if $(call given,EVAL_OUT),$(EVAL_OUT),$(ALL_RUN)/eval)
all:
	$(MAKE) render SCENE=$(SCENE) N=$(or $(N),$(ALL_N)) SPP=$(or $(SPP),$(ALL_SPP)) RES=$(or $(RES),$(ALL_RES)) OUT=$(ALL_OUT) SEED=$(SEED)
	$(MAKE) dataset SCENE=$(SCENE) OUT=$(ALL_OUT) DATA=$(ALL_DATA) SEED=$(SEED)
	$(MAKE) train SCENE=$(SCENE) DATA=$(ALL_DATA) RUN=$(ALL_RUN) MODEL=$(MODEL) EPOCHS=$(or $(EPOCHS),$(ALL_EPOCHS)) SEED=$(SEED)
	$(MAKE) eval SCENE=$(SCENE) DATA=$(ALL_DATA) RUN=$(ALL_RUN) EVAL_OUT=$(ALL_EVAL) MODEL=$(MODEL)
	@echo "report: $(ALL_EVAL)/report.html"

# The test suite also covers the optional BlenderProc backend: its extra (bpy 4.2.0, ~520 MB,
# Python 3.11) is installed first; TEST_EXTRAS= skips it (those tests are then skipped).
# (bpy exists for Python 3.11 only; elsewhere the extra installs without it and the tests skip.)
TEST_EXTRAS ?= blenderproc
test:
	@EXTRAS="$(EXTRAS)$(if $(TEST_EXTRAS),$(if $(EXTRAS),$(comma))$(TEST_EXTRAS))" bash scripts/setup.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m polar_render.bench.render
	$(PY) -m polar_render.bench.render --denoise oidn
	$(PY) -m polar_render.bench.quality $(BENCH_SCENES) --mono
	$(PY) -m polar_render.bench.anomalies
	$(PY) -m polar_render.bench.batch
	$(PY) -m polar_detect.bench.draem
	$(PY) -m polar_detect.bench.patchcore

clean:
	rm -rf out .pytest_cache
