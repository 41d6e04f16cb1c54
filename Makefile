# The README's two commands: `make demo` (the main job on the embedded corpus) and `make test`.
PY := .venv/bin/python

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

venv: .venv/installed

test: .venv/installed
	$(PY) -m pytest -q tests

.PHONY: venv test

# The whole pipeline on the Bach chorales of music21's bundled corpus, on the CPU (about 7 minutes on 2 cores).
DEMO := data/demo
demo: .venv/installed
	$(PY) encode_all.py --corpus music21 --composers bach --text_dir $(DEMO)/text
	$(PY) first_silence_cleaner.py --dirs $(DEMO)/text
	$(PY) simple_tokenizer.py --dirs $(DEMO)/text --output $(DEMO)/tokenizer.json
	$(PY) augment_all.py --input_dirs $(DEMO)/text --output_dir $(DEMO)/aug
	$(PY) prepare.py --main_data_path $(DEMO)/text --augmented_data_path $(DEMO)/aug --output_base_dir $(DEMO)/bin \
		--tokenizer_paths $(DEMO)/tokenizer.json --augmented_percentage 30
	$(PY) train.py --preset=cpu_demo --data_dir=$(DEMO)/bin --out_dir=models/demo
	$(PY) sample.py --out_dir models/demo --num_samples 3 --output_dir midi-samples
	$(PY) plot.py --out_dir models/demo --midi midi-samples/demo_seed1337_0.mid midi-samples/demo_seed1337_1.mid \
		midi-samples/demo_seed1337_2.mid

.PHONY: demo
