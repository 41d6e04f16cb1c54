# The README's two commands: `make demo` (the main job on the embedded corpus) and `make test`.
PY := .venv/bin/python

.venv/installed: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch $@

venv: .venv/installed

test: .venv/installed  # two workers, each taking the next test as it is free
	$(PY) -m pytest -q -n 2 --dist worksteal tests

.PHONY: venv test

# The whole pipeline on two collections of music21's bundled corpus (the Bach chorales and the fiddle tunes of
# ryansMammoth, so that style control shows), on the CPU: 8-9 minutes on 2 cores. A rerun resumes the encode
# and the augmentation and trains models/demo afresh.
DEMO := data/demo
demo: .venv/installed
	$(PY) encode_all.py --corpus music21 --composers bach ryansMammoth --text_dir $(DEMO)/text
	$(PY) first_silence_cleaner.py --dirs $(DEMO)/text
	$(PY) simple_tokenizer.py --dirs $(DEMO)/text --output $(DEMO)/tokenizer.json
	$(PY) augment_all.py --input_dirs $(DEMO)/text --output_dir $(DEMO)/aug --aug_variants 2  # (prepare takes 30 %)
	$(PY) prepare.py --main_data_path $(DEMO)/text --augmented_data_path $(DEMO)/aug --output_base_dir $(DEMO)/bin \
		--tokenizer_paths $(DEMO)/tokenizer.json --augmented_percentage 30 --overwrite  # the demo's own dataset
	$(PY) train.py --preset=cpu_demo --data_dir=$(DEMO)/bin --out_dir=models/demo --overwrite  # the demo's own run
	$(PY) sample.py --overwrite --out_dir models/demo --num_samples 2 --style bach --bars 12 --output_dir midi-samples
	$(PY) sample.py --overwrite --out_dir models/demo --num_samples 2 --style fiddle --bars 16 --output_dir midi-samples
	$(PY) sample.py --overwrite --out_dir models/demo --num_samples 1 --style bach \
		--melody $(DEMO)/text/music21/bach/bwv139.6.txt \
		--output_dir midi-samples  # a validation chorale's soprano (never trained on), harmonized
	$(PY) plot.py --out_dir models/demo --midi midi-samples/demo_bach_seed1337_0.mid midi-samples/demo_bach_seed1337_1.mid \
		midi-samples/demo_fiddle_seed1337_0.mid midi-samples/demo_fiddle_seed1337_1.mid \
		midi-samples/demo_bach_harmonized_bwv139.6_seed1337_0.mid

.PHONY: demo

# The shipped model, models/corpus (see its MODEL.md): the whole music21 corpus on 2 CPU cores, in three stages (about
# four hours), then #37's whole piece in view and rounds of distillation (`make distill`, below: about twelve hours more
# from scratch); round 8 ships, and a second line of rounds from stage 4 (round 9 on: MODEL.md) goes on past it.
# The data and the full runs (with their optimizer state, so that a killed training resumes) stay in CORPUS, outside
# the work tree; every step resumes or skips what is done, so a rerun after a kill goes on where it stopped. As each
# training stage ends, its bf16 weights are exported to STAGES, which is committed: on a fresh machine `make model`
# rebuilds the data and goes on from the last stage found there (remove STAGES' stage*/ to train anew).
CORPUS := $(HOME)/.cache/nano-gpt-v3/corpus
STAGES := models/corpus-stages
# $(call resume_or,run folder,init): --init_from=resume where the run has a checkpoint, else --init_from=init
resume_or = --init_from=$$(test -f $(CORPUS)/$(1)/checkpoint.pt && echo resume || echo $(2))
# $(call stage,N,run folder,preset,init of a fresh start): train stage N unless STAGES holds it, then export it
stage = test -f $(STAGES)/stage$(1)/model.pt || { $(PY) train.py --preset=$(3) --data_dir=$(CORPUS)/bin \
	--out_dir=$(CORPUS)/$(2) $(call resume_or,$(2),$(4)) && \
	$(PY) train.py --out_dir=$(CORPUS)/$(2) --export=$(STAGES)/stage$(1); }
model: .venv/installed
	$(PY) encode_all.py --corpus music21 --text_dir $(CORPUS)/text
	$(PY) first_silence_cleaner.py --dirs $(CORPUS)/text
	$(PY) simple_tokenizer.py --dirs $(CORPUS)/text --output $(CORPUS)/tokenizer.json
	$(PY) augment_all.py --input_dirs $(CORPUS)/text --output_dir $(CORPUS)/aug --aug_variants 2
	$(PY) prepare.py --main_data_path $(CORPUS)/text --augmented_data_path $(CORPUS)/aug --output_base_dir $(CORPUS)/bin \
		--tokenizer_paths $(CORPUS)/tokenizer.json --augmented_percentage 50
	$(call stage,1,run,corpus,scratch)
	$(call stage,2,run2,corpus_stage2,$(STAGES)/stage1)
	$(call stage,3,run3,corpus_stage3,$(STAGES)/stage2)
	$(MAKE) distill
	$(PY) train.py --out_dir=$(STAGES)/round8 --export=models/corpus --overwrite
	$(PY) plot.py --out_dir models/corpus
	for n in 1 2 3; do $(PY) plot.py --out_dir $(STAGES)/stage$$n && \
		for f in metrics.jsonl loss.png; do cp $(STAGES)/stage$$n/$$f models/corpus/.$$f.tmp && \
			mv models/corpus/.$$f.tmp models/corpus/stage$${n}_$$f; done; done
	$(PY) evaluate.py --out_dir models/corpus --data_dir $(CORPUS)/bin --num_samples 256 --control_samples 32 \
		--style_samples 128 --given_pieces 23 --overwrite
	$(MAKE) samples

# #37's line after the third stage, which `make model` runs on (its data): stage 4 (the whole piece in view,
# 55 minutes) and stage 5.
stage4: .venv/installed
	$(call stage,4,run_long,corpus_long,$(STAGES)/stage3)

# Stage 5 (#37): rounds of distillation from stage 4. Each samples the last weights with its style's defaults (the
# rules of part writing, the choir's with its rule on repeats, and forms drawn from real pieces: 1,152 chorales of 12,
# 16 and 20 bars and 576 fiddle tunes of 16 and 32 bars), keeps those a teacher would beside the real pieces
# (evaluate.py --keep: the tonic-triad ending, and parallels, repeated notes (all parts and the worst) and notes
# outside the key each within those of nine real pieces in ten, minor as often), and fine-tunes 800 steps with a
# quarter of each batch's windows from every round's picks so far (corpus_distill: no penalty). About 45 minutes a
# round. Round N's run is CORPUS/distillN, its samples and picks CORPUS/distill_pools/N; the last round is stage 5.
# Rounds 5 and 6 go on from stage 5 with half of each batch's windows from the picks of round 5 on (rounds 1-4's
# were taken before the choir's rule on repeats), round 6 with twice the tunes (the fiddle endings lagged); round 7
# samples nothing new and trains on round 6's pool with the picked tunes four times over (41 % of its tokens, not
# 15 %). Round 8 adds harmonizations (they did not teach harmonizing: models/corpus/MODEL.md): the sopranos of
# the first 160 training chorales (never a validation one) harmonized four times each by round 7 at Bach's defaults
# less the rule on rests (about an hour and a half), the kept ones three times, beside rounds 5 and 6's chorales and
# their tunes picked again by today's --keep (no loops), five times; from round 7. Each is exported to STAGES/roundN
# as it ends and skipped where STAGES holds it (a round of 800 steps takes about an hour on a slow 2 cores, its
# samples about an hour and a half).
POOLS := $(CORPUS)/distill_pools
# Bach's defaults as the rounds drew their chorales (before round 8 shipped with only the ending rule; no key drawn:
# --key auto came after them)
ROUND_BACH := --voice_leading_rules rests,parallels,crossing,ending --key none --temperature 0.8 --top_p 0.95 \
	--rhythm_temperature 0
# Rounds 9 on: a second line from stage 4, drawn at temperature 1 (round 8's chorales had come to crotchets only:
# each round sharpened by 0.8 and top-p 0.95 made the next plainer) with the rules on parallels, crossing voices,
# rests and the ending, --keep bounding the rhythm and the returning notes too; the tunes' picks three times over;
# from round 11 the rules' penalty at weight 3 on the pool (at 10 and 30 it took more parallels and put notes outside
# the key), from round 13 at weight 30 with each pick's own scale among the rules, which keeps them in the key (round
# 13 the classes it uses, which leant toward major; round 14 on its key signature's nine), from round 15 with the
# chorales' voices kept in their ranges by --keep, from round 16 only chorales that begin on the tonic triad (most of
# the samples set out from another chord and end in another key: models/corpus/MODEL.md)
LINE_DRAW := --temperature 1.0 --rhythm_temperature 0 --top_p 1.0
LINE_BACH := --voice_leading_rules rests,parallels,crossing,ending --key none $(LINE_DRAW)
LINE_TUNES := 3
# $(call fit,N,run,init,seed,mix share (corpus_distill's)): round N's pool made train.bin, and its 800 steps
define fit
	test -f $(POOLS)/$(1)/bin/meta.json || $(PY) prepare.py --main_data_path $(POOLS)/$(1)/pool \
		--output_base_dir $(POOLS)/$(1)/bin --tokenizer_paths $(CORPUS)/tokenizer.json --val_fraction 0.02
	test -f $(CORPUS)/$(2)/done || { $(PY) train.py --preset=corpus_distill --data_dir=$(CORPUS)/bin \
		--mix_data_dir=$(POOLS)/$(1)/bin --out_dir=$(CORPUS)/$(2) --seed=$(4) \
		$(if $(5),--mix_share=$(5)) $(call resume_or,$(2),$(3)) && touch $(CORPUS)/$(2)/done; }
endef
# $(call fit_ruled,N,run,init,seed,weight,own scale): as fit, with the rules' penalty at `weight` on the pool (the
# model's own contexts, where its part writing goes wrong: round 11 on): the pool, prepared with Bach's and the fiddle
# tunes' rules (and, given `own scale`, each pick's own scale among them, prepare.py's --rule_scale: round 13 the
# classes it uses, round 14 on its key signature's nine), is the data and the corpus the mixed half
define fit_ruled
	test -f $(POOLS)/$(1)/bin/meta.json || $(PY) prepare.py --main_data_path $(POOLS)/$(1)/pool \
		--output_base_dir $(POOLS)/$(1)/bin --tokenizer_paths $(CORPUS)/tokenizer.json --val_fraction 0.02 \
		--rule_styles bach,fiddle $(if $(6),--rule_scale $(6))
	test -f $(CORPUS)/$(2)/done || { $(PY) train.py --preset=corpus_distill --data_dir=$(POOLS)/$(1)/bin \
		--mix_data_dir=$(CORPUS)/bin --mix_share=0.5 --rule_weight=$(5) --rule_share=0.5 --out_dir=$(CORPUS)/$(2) \
		--seed=$(4) $(call resume_or,$(2),$(3)) && touch $(CORPUS)/$(2)/done; }
endef
# $(call draw,N,weights,Bach's settings,the tunes',runs of 32 tunes at each length,more bounds on Bach's picks):
# round N's samples (1,152 chorales of 12, 16 and 20 bars, tunes of 16 and 32 bars) and the picks --keep makes of them,
# each step skipped where its output is there
define draw
	test -f $(POOLS)/$(1)/all/done || { for b in 12 16 20; do for s in $$(seq 1 12); do \
		mkdir -p $(POOLS)/$(1)/all/bach_$$b && $(PY) sample.py --overwrite --out_dir $(2) --style bach --bars $$b $(3) \
		--num_samples 32 --seed $$((2000 * $(1) - 1000 + 10 * b + s)) --output_dir $(POOLS)/$(1)/all/bach_$$b || exit 1; \
		done; done; for b in 16 32; do for s in $$(seq 1 $(5)); do mkdir -p $(POOLS)/$(1)/all/fiddle_$$b && \
		$(PY) sample.py --overwrite --out_dir $(2) --style fiddle --bars $$b $(4) --num_samples 32 \
		--seed $$((2000 * $(1) + 10 * b + s)) --output_dir $(POOLS)/$(1)/all/fiddle_$$b || exit 1; done; done; \
		touch $(POOLS)/$(1)/all/done; }
	test -d $(POOLS)/$(1)/keep/bach || $(PY) evaluate.py --listen $(POOLS)/$(1)/all/bach_*/*.txt \
		--against $(CORPUS)/text/music21/bach/*.txt --keep $(POOLS)/$(1)/keep/bach $(6)
	test -d $(POOLS)/$(1)/keep/fiddle || $(PY) evaluate.py --listen $(POOLS)/$(1)/all/fiddle_*/*.txt --voices 1 \
		--against $(CORPUS)/text/music21/ryansMammoth/*.txt --keep $(POOLS)/$(1)/keep/fiddle
endef
# $(call round,N,run to sample,run to train,init,first round pooled (1),runs of 32 tunes at each length (9),
# mix share (corpus_distill's)): round N, each step skipped where its output is there (the tunes' durations at the
# temperature's, as the rounds drew them before the fiddle's default of 1.5)
define round
	$(call draw,$(1),$(2),$(ROUND_BACH),--rhythm_temperature 0,$(or $(6),9))
	test -d $(POOLS)/$(1)/pool || { rm -rf $(POOLS)/$(1)/pool.tmp && mkdir $(POOLS)/$(1)/pool.tmp && \
		for k in $$(seq $(or $(5),1) $(1)); do test -d $(POOLS)/$$k/keep || { echo "round $(1) pools round $$k's \
		picks, which are not in $(POOLS)/$$k/keep: remove $(STAGES)/round$$k to make them again"; exit 1; }; \
		cp -r $(POOLS)/$$k/keep $(POOLS)/$(1)/pool.tmp/round$$k || exit 1; done && \
		mv $(POOLS)/$(1)/pool.tmp $(POOLS)/$(1)/pool; }
	$(call fit,$(1),$(3),$(4),$$((12 + $(1))),$(7))
endef
# $(call line,N,weights that draw,init,the rules' penalty (none),own scale (none, used, key),more bounds of --keep on
# the chorales (none; of range, opening)): round N of the second line (288 tunes of each length), the picks of rounds 9
# to N pooled; with `opening`, of the earlier rounds' chorale picks only those that begin on the tonic
define line
	$(call draw,$(1),$(2),$(LINE_BACH),$(LINE_DRAW),9,$(if $(filter range,$(6)),--keep_range true) \
		$(if $(filter opening,$(6)),--keep_opening true))
	test -d $(POOLS)/$(1)/pool || { rm -rf $(POOLS)/$(1)/pool.tmp && mkdir -p $(POOLS)/$(1)/pool.tmp && \
		for k in $$(seq 9 $(1)); do test -d $(POOLS)/$$k/keep || { echo "round $(1) pools round $$k's picks, \
		which are not in $(POOLS)/$$k/keep: remove $(STAGES)/round$$k to make them again"; exit 1; }; \
		if [ $$k = $(1) ] || [ -z "$(filter opening,$(6))" ]; then cp -r $(POOLS)/$$k/keep/bach \
		$(POOLS)/$(1)/pool.tmp/bach$$k; else $(PY) evaluate.py --listen $(POOLS)/$$k/keep/bach/*.txt --against \
		$(CORPUS)/text/music21/bach/*.txt --keep $(POOLS)/$(1)/pool.tmp/bach$$k --keep_opening true > /dev/null; \
		fi || exit 1; \
		for c in $$(seq 1 $(LINE_TUNES)); do \
		cp -r $(POOLS)/$$k/keep/fiddle $(POOLS)/$(1)/pool.tmp/fiddle$$k-$$c || exit 1; done; done && \
		mv $(POOLS)/$(1)/pool.tmp $(POOLS)/$(1)/pool; }
	$(if $(4),$(call fit_ruled,$(1),distill$(1),$(3),$$((12 + $(1))),$(4),$(5)),\
		$(call fit,$(1),distill$(1),$(3),$$((12 + $(1))),0.5))
	$(PY) train.py --out_dir=$(CORPUS)/distill$(1) --export=$(STAGES)/round$(1)
endef
distill: stage4
ifeq ($(wildcard $(STAGES)/stage5/model.pt),)
	$(call round,1,$(STAGES)/stage4,distill1,$(STAGES)/stage4)
	$(call round,2,$(CORPUS)/distill1,distill2,$(CORPUS)/distill1/checkpoint.pt)
	$(call round,3,$(CORPUS)/distill2,distill3,$(CORPUS)/distill2/checkpoint.pt)
	$(call round,4,$(CORPUS)/distill3,distill4,$(CORPUS)/distill3/checkpoint.pt)
	$(PY) train.py --out_dir=$(CORPUS)/distill4 --export=$(STAGES)/stage5
endif
ifeq ($(wildcard $(STAGES)/round5/model.pt),)
	$(call round,5,$(STAGES)/stage5,distill5,$(STAGES)/stage5,5,9,0.5)
	$(PY) train.py --out_dir=$(CORPUS)/distill5 --export=$(STAGES)/round5
endif
ifeq ($(wildcard $(STAGES)/round6/model.pt),)
	$(call round,6,$(STAGES)/round5,distill6,$(STAGES)/round5,5,18,0.5)
	$(PY) train.py --out_dir=$(CORPUS)/distill6 --export=$(STAGES)/round6
endif
ifeq ($(wildcard $(STAGES)/round7/model.pt),)
	test -d $(POOLS)/6/pool || { echo "round 7 pools round 6's picks again, which are not in $(POOLS)/6/pool: \
		remove $(STAGES)/round5 and round6 to make them again"; exit 1; }
	test -d $(POOLS)/7/pool || { rm -rf $(POOLS)/7/pool.tmp && mkdir -p $(POOLS)/7/pool.tmp && \
		for k in 5 6; do mkdir $(POOLS)/7/pool.tmp/round$$k && cp -r $(POOLS)/6/pool/round$$k/bach \
		$(POOLS)/7/pool.tmp/round$$k/ && for c in 1 2 3 4; do cp -r $(POOLS)/6/pool/round$$k/fiddle \
		$(POOLS)/7/pool.tmp/round$$k/fiddle$$c || exit 1; done; done && mv $(POOLS)/7/pool.tmp $(POOLS)/7/pool; }
	$(call fit,7,distill7,$(STAGES)/round6,20,0.5)
	$(PY) train.py --out_dir=$(CORPUS)/distill7 --export=$(STAGES)/round7
endif
ifeq ($(wildcard $(STAGES)/round8/model.pt),)
	test -d $(POOLS)/5/all -a -d $(POOLS)/6/all -a -d $(POOLS)/6/pool || { echo "round 8 takes rounds 5 and 6's \
		samples and picks again, which are not in $(POOLS): remove $(STAGES)/round5 and round6 to make them"; exit 1; }
	test -f $(POOLS)/8/all/harmonized/done || { i=0; for f in $$($(PY) -c "import json, pathlib; \
		C = pathlib.Path('$(CORPUS)'); val = set(json.load(open(C / 'bin/meta.json'))['val_pieces']); print(*[p for \
		p in sorted((C / 'text/music21/bach').glob('*.txt')) if f'music21/bach/{p.stem}' not in val][:160])"); do \
		i=$$((i + 1)); s=$$(basename $$f .txt); test -f $(POOLS)/8/all/harmonized/.$$s || { $(PY) sample.py --overwrite \
		--out_dir $(STAGES)/round7 --style bach --melody $$f --parts 4 --num_samples 4 --seed $$((8000 + i)) \
		--voice_leading_rules parallels,crossing,ending --temperature 0.8 --top_p 0.95 --rhythm_temperature 0 \
		--output_dir $(POOLS)/8/all/harmonized > /dev/null && \
		touch $(POOLS)/8/all/harmonized/.$$s || exit 1; }; done && touch $(POOLS)/8/all/harmonized/done; }
	test -d $(POOLS)/8/keep/harmonized || $(PY) evaluate.py --listen $(POOLS)/8/all/harmonized/*.txt \
		--against $(CORPUS)/text/music21/bach/*.txt --keep $(POOLS)/8/keep/harmonized
	for k in 5 6; do test -d $(POOLS)/8/keep/fiddle$$k || $(PY) evaluate.py --listen $(POOLS)/$$k/all/fiddle_*/*.txt \
		--voices 1 --against $(CORPUS)/text/music21/ryansMammoth/*.txt --keep $(POOLS)/8/keep/fiddle$$k || exit 1; done
	test -d $(POOLS)/8/pool || { rm -rf $(POOLS)/8/pool.tmp && mkdir -p $(POOLS)/8/pool.tmp && for k in 5 6; do \
		cp -r $(POOLS)/6/pool/round$$k/bach $(POOLS)/8/pool.tmp/bach$$k && for c in 1 2 3 4 5; do cp -r \
		$(POOLS)/8/keep/fiddle$$k $(POOLS)/8/pool.tmp/fiddle$$k-$$c || exit 1; done; done && for c in 1 2 3; do \
		cp -r $(POOLS)/8/keep/harmonized $(POOLS)/8/pool.tmp/harmonized$$c || exit 1; done && \
		mv $(POOLS)/8/pool.tmp $(POOLS)/8/pool; }
	$(call fit,8,distill8,$(STAGES)/round7,21,0.5)
	$(PY) train.py --out_dir=$(CORPUS)/distill8 --export=$(STAGES)/round8
endif
ifeq ($(wildcard $(STAGES)/round9/model.pt),)
	$(call line,9,$(STAGES)/stage4,$(STAGES)/stage4)
endif
ifeq ($(wildcard $(STAGES)/round10/model.pt),)
	$(call line,10,$(STAGES)/round9,$(STAGES)/round9)
endif
ifeq ($(wildcard $(STAGES)/round11/model.pt),)
	$(call line,11,$(STAGES)/round10,$(STAGES)/round10,3)
endif
ifeq ($(wildcard $(STAGES)/round12/model.pt),)
	$(call line,12,$(STAGES)/round11,$(STAGES)/round11,3)
endif
ifeq ($(wildcard $(STAGES)/round13/model.pt),)
	$(call line,13,$(STAGES)/round12,$(STAGES)/round12,30,used)
endif
ifeq ($(wildcard $(STAGES)/round14/model.pt),)
	$(call line,14,$(STAGES)/round13,$(STAGES)/round13,30,key)
endif
ifeq ($(wildcard $(STAGES)/round15/model.pt),)
	$(call line,15,$(STAGES)/round14,$(STAGES)/round14,30,key,range)
endif
ifeq ($(wildcard $(STAGES)/round16/model.pt),)
	$(call line,16,$(STAGES)/round15,$(STAGES)/round15,30,key,range opening)
endif
ifeq ($(wildcard $(STAGES)/round17/model.pt),)
	$(call line,17,$(STAGES)/round16,$(STAGES)/round16,30,key,range opening)
endif

# midi-samples/shipped: ten samples of the shipped model, each with its style's defaults (config.STYLE_DEFAULTS: for
# Bach and fiddle tunes their rules and forms drawn from real pieces; two with a --form given), from this fixed list of
# styles, lengths and seeds (not picked by ear), each with its MusicXML and piano roll; midi-samples/harmonized: three
# melodies (given/: a validation chorale's soprano and a validation folk tune, never trained on, and a tune written
# for it) harmonized in Bach's style, twice each, with the melody as kept beside them. Reruns give the same files.
SAMPLES := midi-samples/shipped
HARMONIZED := midi-samples/harmonized
samples: .venv/installed
	$(PY) sample.py --overwrite --style bach --bars 16 --num_samples 2 --seed 1 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style palestrina --bars 16 --num_samples 1 --seed 2 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style fiddle --bars 16 --num_samples 1 --seed 3 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style folk --bars 16 --num_samples 1 --seed 4 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style classical --bars 16 --num_samples 1 --seed 5 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style romantic --bars 16 --num_samples 1 --seed 6 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style baroque --bars 16 --num_samples 1 --seed 7 --musicxml --output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style bach --bars 17 --form AABCD --num_samples 1 --seed 8 --musicxml \
		--output_dir $(SAMPLES)
	$(PY) sample.py --overwrite --style fiddle --bars 16 --form AABB --num_samples 1 --seed 9 --musicxml \
		--output_dir $(SAMPLES)
	for m in bwv244.15_soprano altdeu10_tune147 own_tune; do $(PY) sample.py --overwrite --style bach --melody \
		$(HARMONIZED)/given/$$m.mid --num_samples 2 --seed 1 --musicxml \
		--output_dir $(HARMONIZED) || exit 1; done
	$(PY) plot.py --midi $(SAMPLES)/*.mid $(HARMONIZED)/*.mid

.PHONY: model stage4 distill samples
