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

# The whole pipeline on two collections of music21's bundled corpus (the Bach chorales and the fiddle tunes of
# ryansMammoth, so that style control shows), on the CPU: about 4 minutes on 2 cores. A rerun resumes the encode
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
	$(PY) plot.py --out_dir models/demo --midi midi-samples/demo_bach_seed1337_0.mid midi-samples/demo_bach_seed1337_1.mid \
		midi-samples/demo_fiddle_seed1337_0.mid midi-samples/demo_fiddle_seed1337_1.mid

.PHONY: demo
