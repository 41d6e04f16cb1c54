# The README's two commands: `make demo` (the main job on the embedded corpus) and `make test`.
PY := .venv/bin/python

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

venv: .venv/installed

test: .venv/installed  # two workers: about 4 minutes on 2 cores (one: about 9)
	$(PY) -m pytest -q -n 2 tests

.PHONY: venv test

# The whole pipeline on two collections of music21's bundled corpus (the Bach chorales and the fiddle tunes of
# ryansMammoth, so that style control shows), on the CPU: about 8 minutes on 2 cores. A rerun resumes the encode
# and the augmentation and trains models/demo afresh.
DEMO := data/demo
demo: .venv/installed
	$(PY) encode_all.py --corpus music21 --composers bach ryansMammoth --text_dir $(DEMO)/text
	$(PY) first_silence_cleaner.py --dirs $(DEMO)/text
	$(PY) simple_tokenizer.py --dirs $(DEMO)/text --output $(DEMO)/tokenizer.json
	$(PY) augment_all.py --input_dirs $(DEMO)/text --output_dir $(DEMO)/aug
	$(PY) prepare.py --main_data_path $(DEMO)/text --augmented_data_path $(DEMO)/aug --output_base_dir $(DEMO)/bin \
		--tokenizer_paths $(DEMO)/tokenizer.json --augmented_percentage 30
	$(PY) train.py --preset=cpu_demo --data_dir=$(DEMO)/bin --out_dir=models/demo --overwrite  # the demo's own run
	$(PY) sample.py --out_dir models/demo --num_samples 2 --style bach --bars 12 --output_dir midi-samples
	$(PY) sample.py --out_dir models/demo --num_samples 2 --style fiddle --bars 16 --output_dir midi-samples
	$(PY) sample.py --out_dir models/demo --num_samples 1 --style bach --melody $(DEMO)/text/music21/bach/bwv139.6.txt \
		--output_dir midi-samples  # a validation chorale's soprano (never trained on), harmonized
	$(PY) plot.py --out_dir models/demo --midi midi-samples/demo_bach_seed1337_0.mid midi-samples/demo_bach_seed1337_1.mid \
		midi-samples/demo_fiddle_seed1337_0.mid midi-samples/demo_fiddle_seed1337_1.mid \
		midi-samples/demo_bach_harmonized_bwv139.6_seed1337_0.mid

.PHONY: demo

# The shipped model, models/corpus (see its MODEL.md): the whole music21 corpus, about four hours on 2 CPU cores.
# The data and the full runs (with their optimizer state, so that a killed training resumes) stay in CORPUS, outside
# the work tree; every step resumes or skips what is done, so a rerun after a kill goes on where it stopped. As each
# of the first two training stages ends, its bf16 weights are exported to STAGES, which is committed: on a fresh
# machine `make model` rebuilds the data and starts from the last stage found there (remove STAGES to train anew).
CORPUS := $(HOME)/.cache/nano-gpt-v3/corpus
STAGES := models/corpus-stages
# $(call stage,N,run folder,preset,--init_from of a fresh start): train stage N unless STAGES holds it, then export it
stage = test -f $(STAGES)/stage$(1)/model.pt || { $(PY) train.py --preset=$(3) --data_dir=$(CORPUS)/bin \
	--out_dir=$(CORPUS)/$(2) $$(test -f $(CORPUS)/$(2)/checkpoint.pt && echo --init_from=resume || echo $(4)) && \
	$(PY) train.py --out_dir=$(CORPUS)/$(2) --export=$(STAGES)/stage$(1); }
model: .venv/installed
	$(PY) encode_all.py --corpus music21 --text_dir $(CORPUS)/text
	$(PY) first_silence_cleaner.py --dirs $(CORPUS)/text
	$(PY) simple_tokenizer.py --dirs $(CORPUS)/text --output $(CORPUS)/tokenizer.json
	$(PY) augment_all.py --input_dirs $(CORPUS)/text --output_dir $(CORPUS)/aug --aug_variants 2
	$(PY) prepare.py --main_data_path $(CORPUS)/text --augmented_data_path $(CORPUS)/aug --output_base_dir $(CORPUS)/bin \
		--tokenizer_paths $(CORPUS)/tokenizer.json --augmented_percentage 50
	$(call stage,1,run,corpus,)
	$(call stage,2,run2,corpus_stage2,--init_from=$(STAGES)/stage1)
	$(PY) train.py --preset=corpus_stage3 --data_dir=$(CORPUS)/bin --out_dir=$(CORPUS)/run3 \
		--init_from=$$(test -f $(CORPUS)/run3/checkpoint.pt && echo resume || echo $(STAGES)/stage2)
	$(PY) train.py --out_dir=$(CORPUS)/run3 --export=models/corpus --overwrite
	$(PY) plot.py --out_dir models/corpus
	for n in 1 2; do $(PY) plot.py --out_dir $(STAGES)/stage$$n && \
		for f in metrics.jsonl loss.png; do cp $(STAGES)/stage$$n/$$f models/corpus/.$$f.tmp && \
			mv models/corpus/.$$f.tmp models/corpus/stage$${n}_$$f; done; done
	$(PY) evaluate.py --out_dir models/corpus --data_dir $(CORPUS)/bin --num_samples 256 --control_samples 32 \
		--style_samples 128 --given_pieces 23
	$(MAKE) samples

# midi-samples/shipped: ten samples of the shipped model, each with its style's defaults (config.STYLE_DEFAULTS: for
# Bach and fiddle tunes their rules and forms drawn from real pieces; two with a --form given), from this fixed list of
# styles, lengths and seeds (not picked by ear), each with its MusicXML and piano roll; midi-samples/harmonized: three
# melodies (given/: a validation chorale's soprano and a validation folk tune, never trained on, and a tune written
# for it) harmonized in Bach's style, twice each, with the melody as kept beside them. Reruns give the same files.
SAMPLES := midi-samples/shipped
HARMONIZED := midi-samples/harmonized
samples: .venv/installed
	$(PY) sample.py --style bach --bars 16 --num_samples 2 --seed 1 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style palestrina --bars 16 --num_samples 1 --seed 2 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style fiddle --bars 16 --num_samples 1 --seed 3 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style folk --bars 16 --num_samples 1 --seed 4 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style classical --bars 16 --num_samples 1 --seed 5 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style romantic --bars 16 --num_samples 1 --seed 6 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style baroque --bars 16 --num_samples 1 --seed 7 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style bach --bars 17 --form AABCD --num_samples 1 --seed 8 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --style fiddle --bars 16 --form AABB --num_samples 1 --seed 9 --musicxml --output_dir $(SAMPLES)
	for m in bwv244.15_soprano altdeu10_tune147 own_tune; do $(PY) sample.py --style bach --melody \
		$(HARMONIZED)/given/$$m.mid --parts 4 --num_samples 2 --seed 1 --musicxml \
		--output_dir $(HARMONIZED) || exit 1; done
	$(PY) plot.py --midi $(SAMPLES)/*.mid $(HARMONIZED)/*.mid

.PHONY: model samples
