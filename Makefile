# pyro-svae: `make quickstart` sets up, trains on PTB's sentences of up to 30 subword pieces for 4.5
# minutes, then samples, reconstructs and interpolates (reconstructions by a beam of 20 reranked by the
# encoder); `make test` tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PTB_SOURCE := $(wildcard ../shared/data/ptb)
RUN ?= runs/quickstart
A ?= the company said it would n't comment on the report
B ?= i do n't think it 's a good idea

.PHONY: setup test data quickstart bench clean

setup: $(VENV)/.installed

# torch first, pinned: it takes the local CPU wheel instead of pulling CUDA packages; the package
# with its explorer (web) for the quick start, and the tests' extras (dev: mlflow, tensorboard,
# selenium, ...) only for `make test`
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[web]"
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

test: $(VENV)/.dev
	$(PY) -m pytest

data: data/ptb/ptb.train.txt

data/ptb/ptb.train.txt: | setup
	$(PY) data/prepare.py --out data/ptb $(if $(PTB_SOURCE),--source $(PTB_SOURCE))

quickstart: setup data
	@test -f $(RUN)/best.pt || $(PY) cli.py train --data data/ptb --out $(RUN) --max-minutes 4.5 \
		--tokenizer spm --vocab-size 4000 --max-len 30 --emb-dim 128 --hidden 256 --enc-hidden 256 --z-dim 128 --dropout 0 --word-keep 0.3 \
		--free-bits 2 --bow 2 --skip --feed-z --tie --pool mean --batch-size 64 --lr 3e-3 --kl-schedule linear:0,3000 \
		--patience 0 --select bleu --eval-every 500 --ema 0
	@echo "--- five sentences from the prior (python cli.py sample $(RUN) -n 5 --decode beam)"
	@$(PY) cli.py sample $(RUN) -n 5 --decode beam
	@echo "--- two sentences and their reconstructions (python cli.py reconstruct $(RUN) ... --decode beam --beam 20 --rerank)"
	@$(PY) cli.py reconstruct $(RUN) "$(A)" "$(B)" --decode beam --beam 20 --rerank
	@echo "--- the homotopy between them (python cli.py homotopy $(RUN) ... --steps 5 --decode beam --beam 20 --rerank)"
	@$(PY) cli.py homotopy $(RUN) "$(A)" "$(B)" --steps 5 --decode beam --beam 20 --rerank
	@echo "--- content words kept by the reconstructions of validation sentences of up to 15 words (python bench/overlap.py $(RUN) --max-tokens 15 --beam 20 --rerank)"
	@$(PY) bench/overlap.py $(RUN) --max-tokens 15 --limit 300 --beam 20 --rerank
	@echo "--- the run is in $(RUN): metrics.csv, config.json, best.pt, checkpoint.pt"

clean:
	rm -rf $(VENV) *.egg-info
