"""Every default of nano-GPT-v3, grouped by pipeline stage. Nothing else defines a default.

Scripts read these names through `configurator.cli()`, which adds `--key=value` overrides (type-checked against the
default and against configurator.LIMITS, unknown keys rejected) and `--preset=name` (a small overlay from PRESETS)
to their own arguments. The values written here are checked too: each of its kind as config.py is read
(configurator.KINDS: a list for a tuple, "false" for False), each within LIMITS where a script reads it, and sample.py
and evaluate.py check STYLE_DEFAULTS' rows (controls.style_defaults_problem): a mistake is one line before any work.
"""

# --- encoding (the token grammar's ranges; the tokenizer JSON records the ones it was built from)
sample_freq = 4            # grid steps per quarter note (16th notes)
pitch_range = (21, 108)    # inclusive piano range A0..C8; notes outside are dropped and counted
velocity_range = (1, 127)  # inclusive; velocities outside are clamped into it
max_dur = 128              # longest note or rest in steps (8 bars of 4/4); longer rests are split
default_velocity = 80      # for score notes that carry no velocity
keep_drums = True          # MIDI channel 10 is percussion: a drum part of its own (False drops it)
min_notes = 8              # pieces with fewer notes are skipped
max_piece_steps = 200_000  # longer pieces are refused (~7 h at 120 BPM: an absurd delta time, not music)

# --- the piece header after START: style, tempo, meter, one instrument per part (later tempo changes are not
# encoded; later meter changes are, at the bar line they fall on)
default_bpm = 120.0        # the tempo of a piece that gives none (MIDI's own default)
tempo_range = (30, 300)    # BPM; the tempo token is one of tempo_buckets log-spaced buckets over this range
tempo_buckets = 24
# The meter tokens: the common ones first, then every n/d whose bar is at most 16 quarters. A meter outside the list
# is written as the first listed one of its bar's length, else 4/4 (its bars are then laid in 4/4; the notes keep
# their time).
meters = tuple(dict.fromkeys(("4/4", "3/4", "2/4", "2/2", "6/8", "3/8", "9/8", "12/8", "3/2", "4/2", "6/4", "5/4")
                             + tuple(f"{n}/{d}" for d in (4, 8, 16, 2, 1) for n in range(1, 17) if n * 4 <= 16 * d)))
max_parts = 16             # parts (voices, instruments, drums) per piece; a file with more merges them by family
max_countdown = 64         # bar lines count the bars left up to this many; further from the end they say bar:more
# The style of a music21 corpus piece: its top folder, small folders merged; a folder not listed is "other".
# Encodings of --midi_dirs take their folder's name (or encode_all.py --style NAME).
corpus_styles = {
    "bach": ("bach",),
    "baroque": ("corelli", "cpebach", "handel"),
    "classical": ("beethoven", "haydn", "mozart", "schubert"),
    "fiddle": ("ryansMammoth", "oneills1850", "airdsAirs", "nottingham-dataset"),
    "folk": ("essenFolksong", "miscFolk"),
    "medieval": ("trecento", "ciconia"),
    "modern": ("schoenberg", "webern"),
    "monteverdi": ("monteverdi",),
    "palestrina": ("palestrina",),
    "renaissance": ("josquin", "luca", "lusitano"),
    "romantic": ("beach", "chopin", "johnson_j_r", "joplin", "liliuokalani", "schumann_clara", "schumann_robert",
                 "verdi", "weber"),
    "other": (),
}

# --- where the pipeline's files go by default (each script names them with a flag of its own)
text_dir = "data/text"     # encodings: encode_all.py --text_dir, prepare.py --main_data_path
shard = "1/1"              # encode_all.py --shard K/N: the K-th of N slices of the files
aug_dir = "data/aug"       # augment_all.py --output_dir
tokenizer_path = "tokenizers/simple_tokenizer.json"  # simple_tokenizer.py --output, prepare.py --tokenizer_paths
samples_dir = "midi-samples"  # sample.py --output_dir

# --- batch work over files (encode_all.py, augment_all.py)
num_processes = 0          # worker processes; 0 = one per CPU core
file_timeout = 60.0        # seconds a file may take before its worker is killed and the file reported; encode_all
                           # gives a file over timeout_bytes proportionally more (a 250 kB score 5x at 50 kB)
timeout_bytes = 50_000

# --- augmentation (augment_all.py)
aug_pitch_shifts = (-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6)  # semitones; a shift leaving pitch_range is skipped
aug_velocity_shifts = (-10, 0, 10)                           # added to every velocity, clamped to velocity_range
aug_tempo_shifts = (-1, 0, 1)  # tempo buckets; on the demo data val loss 0.695 vs 0.715 without (BENCHMARKS.md)
aug_variants = 0  # variants written per piece: 0 = every combination above (107), N = N of them, chosen per piece by
                  # a stable hash (the whole corpus at 107 per piece would be 1.5M files)

# --- train/val split (prepare.py)
val_fraction = 0.05         # share of pieces (originals) held out, chosen by a stable hash of the piece id
augmented_percentage = 30.0  # share of training tokens that come from augmented copies
given_share = 0.0          # share of training pieces written with some of them given and shown ahead (a melody,
                           # all parts but one, the bars after a gap), for sample.py --look_ahead; 0: plain pieces
                           # only, which harmonized and filled in better on the demo model (README, "Given material")
given_kinds = ("melody", "parts", "bars")  # what given_share pieces may have given, one drawn per piece (a one-part
                                           # piece only "bars"; a piece no kind fits stays plain)
seed = 1337                 # seeds the split hash and the choice of augmented copies
rule_styles = ()            # styles whose training pieces are stepped through their rules of part writing (those of
                            # STYLE_DEFAULTS, as the sampler holds them): train_rules.npz, what the rules forbid at each
                            # token where the piece keeps them, for train.py's rule_weight; e.g. bach,fiddle
rule_scale = "none"         # with rule_styles, each piece's own scale among its rules, at every pitch, so that the
                            # penalty's probability goes to the piece's notes, not chromatic ones: "used", the pitch
                            # classes it uses; "key", its key signature's nine (the major scale and the relative
                            # minor's raised 6th and 7th) and any other it uses, neither mode favoured
                            # (models/corpus/MODEL.md: "The piece's own scale among the rules", "Round 14")

# --- model (GPTConfig in model.py takes these by name; vocab_size comes from the data's meta.json)
block_size = 512           # training context in tokens; RoPE lets sampling run past it
n_layer = 3
n_head = 12
n_embd = 768
dropout = 0.1
bias = False               # biases in the Linear layers of attention and the shared experts

# --- Multi-head Latent Attention
q_lora_rank = 0            # 0: plain query projection; >0: low-rank query through an RMSNorm
kv_lora_rank = 256         # d_c, the latent per token that the decode cache holds
qk_nope_head_dim = 32      # per-head query/key part without position
qk_rope_head_dim = 32      # per-head rotary part (one rotary key shared by all heads); 32 + 32 = v_head_dim
v_head_dim = 64            # equal q/k/v head dims keep the flash kernel of scaled_dot_product_attention
rope_theta = 10000.0

# --- DeepSeekMoE
n_shared_experts = 2       # always on; fused into one MLP
n_routed_experts = 2       # 0: no routing, the shared experts alone (a dense feed-forward, the control for MoE)
top_k_experts = 1          # routed experts per token
expert_hidden = 3072       # hidden width of one expert (4 * n_embd)
route_scale = 1.0          # multiplies the routed weights
bias_update_speed = 0.01   # gamma: per-step nudge of the routing bias towards balanced load (DeepSeek-V3: 0.001)
balance_factor = 1e-4      # alpha of the sequence-wise balance loss (DeepSeek-V3's value)
gelu_approximate = "none"  # the experts' GELU: none = exact (erf); tanh = the approximation the first models used
                           # (their checkpoints keep it), 2.4x slower forward and backward on a CPU

# --- data and run folders (train.py, sample.py, plot.py)
data_dir = "data/bin"      # train.bin, val.bin and meta.json: prepare.py --output_base_dir writes them there
out_dir = "models/my_run"  # the run folder: checkpoints, config.json, tokenizer.json, metrics.jsonl, tensorboard/
init_from = "scratch"      # scratch | resume (this out_dir) | a run folder or checkpoint to fine-tune from

# --- optimizer (AdamW; weight decay on 2-D weights only)
learning_rate = 3e-4
min_lr = 6e-5
weight_decay = 0.03
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0            # clip the global grad norm; 0 = off

# --- schedule
batch_size = 32            # sequences per micro-batch
gradient_accumulation_steps = 8  # micro-batches per optimizer step, over all ranks together
max_iters = 150_000        # optimizer steps
warmup_iters = 1000        # linear warm-up, then cosine decay to min_lr
lr_decay_iters = 150_000
anchor_header = True       # a window that starts mid-piece begins with its piece's START and header, as sampling
                           # keeps a sample's header when its window slides (train.get_batch)
piece_start_share = 0.0625  # with anchor_header, the share of windows that begin at a piece's START (pieces drawn
                           # uniformly): the style after START is learnt as often as each style opens a piece
rule_weight = 0.0          # the rules' penalty (unlikelihood training): rule_weight * -log(1 - P(what the rules
                           # forbid)) at each token of the data's train_rules.npz (prepare.py --rule_styles), over the
                           # window's targets, beside the cross-entropy: the model learns what the mask holds it to
rule_share = 0.0           # with rule_weight, the share of windows drawn around those tokens, the rest as usual
mix_data_dir = ""          # a second dataset (prepare.py's, the same tokenizer), e.g. samples of the model held by
                           # its rules and forms: mix_share of each batch's windows come from its train.bin
mix_share = 0.0

# --- evaluation and logging
eval_interval = 1000       # steps between evaluations (and checkpoints)
eval_iters = 100           # batches per split in one evaluation
log_interval = 10          # steps between log lines
max_bad_steps = 20         # NaN/inf losses in a row that stop the run (each one skips its step)

# --- system
device = "auto"            # auto = cuda when present, else cpu; or cuda:1, cpu, mps ...
dtype = "auto"             # auto = bfloat16 on CUDA when supported, else float16 on CUDA, else float32; training on a
                           # CPU with AMX, bfloat16 for block_size >= 256 or n_embd >= 320, else float32 with bf16
                           # matmuls (float32: none)
compile = False            # torch.compile the model; train.py first checks one step's gradients against eager's and
                           # refuses where they differ (torch 2.11 on an H200 lost all below the last norm: BENCHMARKS.md)

# --- sampling (sample.py)
num_samples = 3
temperature = 0.9
top_k = 100                # 0 = off
top_p = 1.0                # nucleus sampling; 1.0 = off
rhythm_temperature = 0.0   # the temperature a note's duration is drawn at; 0 = --temperature's. The model is sure of
                           # its rhythm where it should not be: Bach writes a quaver 2-5 % of the times it gives one
                           # under 1 %, and a piece it starts in crotchets stays in them (README, "Bach's rhythm")
max_new_tokens = 1024
prompt_bars = 4            # bars of a --prompt, counted in its own meter
look_ahead = False         # given material (--melody, --infill, --add_part) also shown a bar or two ahead, as a run
                           # trained with --given_share saw it; off: forced by the mask where it sounds, which measured
                           # better on the demo model (README, "Given material")
voice_leading = False      # part writing's first rules, kept by the mask where they leave the sampler a choice:
                           # every part sounds from the first onset to the end, no parallel fifths or octaves, no
                           # part crosses its neighbours, the last bar is the tonic triad (of --key, or the key its
                           # notes suggest), and so is the first onset where the key is known before it (--key, or a
                           # melody's); with "cadence", the beat before the last chord is the dominant (V or V7), its
                           # root in the bass, its leading tone sounding (Bach's default, measured: README); with
                           # "third", the first and last chords sound their third, not a bare fifth (Bach's too); with
                           # "phrases", every fourth bar (but in the last two) closes a phrase on a chord held for its
                           # last two beats (a piece of planned length)
voice_leading_rules = ("rests", "parallels", "crossing", "ending", "beginning")  # which of those --voice_leading keeps
usual_ranges = ((62, 78), (57, 71), (52, 67), (40, 60))  # soprano, alto, tenor, bass (MIDI): each voice's 1st to
                           # 99th percentile in the 368 four-part Bach chorales of music21's corpus (evaluate.py counts
                           # the four-note beats with a voice outside them: 5.5 % of the chorales')
choir_ranges = ((61, 79), (55, 73), (50, 67), (38, 62))  # --choir's ranges: the notes each voice reaches in those
                           # chorales, all but the rarest 1 in 500 (the 0.2nd to 99.8th percentile)
choir = False              # four voices as a choir master wants them: each in its range (choir_ranges), the upper
                           # voices within an octave of each other, no leap over an octave, no voice striking one
                           # pitch a fourth time running or rocking between two (a b a a third time in five notes;
                           # kept where they leave the sampler a choice)
choir_rules = ("range", "spacing", "leap", "repeat", "swing")  # which of those --choir keeps (measured: README)
form = "auto"              # phrases as letters (AABA: the second phrase repeats the first note for note); none: no
                           # form; auto (with --bars or --seconds, no prompt or given material): each sample's form
                           # drawn from the forms of its style's real pieces, STYLE_DEFAULTS' `forms`; with a
                           # melody to harmonize or a part to add: the given notes' own form, their repeats
repeat_bars = 3            # under form auto, where given notes repeat a run of at least this many earlier bars (not
                           # the last), the parts written under them repeat theirs (controls.given_repeats)
key = "auto"               # a key's name ("D minor", "F# major", "G dorian"): only that scale's pitches, its tonic
                           # triad the first and last chords under voice_leading; none: no key; auto (no prompt, given
                           # material or --scale): each sample's key drawn from the keys of its style's real pieces,
                           # STYLE_DEFAULTS' `keys`, its tonic triad voice_leading's first and last chords, its notes
                           # in the key but for a chromatic one in 30 that moves on by a semitone (Controls.in_key);
                           # none where the style lists no keys
shipped_run = "models/corpus"  # what sample.py plays without --out_dir (the model in the repo, found beside it)

# --- evaluation (evaluate.py)
eval_num_samples = 64      # samples drawn for the statistics (evaluate.py --num_samples)
ngram = 5                  # the order of the Kneser-Ney n-gram that the model's likelihood is compared with
ngram_max_tokens = 10**12  # fit the n-gram on at most this many training tokens (the default: all of train.bin)
memorization_threshold = 64  # tokens: samples sharing a run this long with train.bin are counted
control_samples = 16       # samples per style and per control measured
style_samples = 64         # samples per main style compared with every training original of the style, and the
                           # classifier's samples
eval_bars = 8              # the --bars target whose adherence is measured
eval_seconds = 20.0        # the --seconds target measured
main_style_pieces = 10     # validation pieces that make a style a main one
eval_key = "D minor"       # the --key measured
eval_pitch_range = (48, 84)  # the --pitch_range measured, LOW,HIGH
given_pieces = 8           # validation chorales whose sopranos are harmonized and middle bars filled in
given_samples = 4          # samples of each

# What sample.py --style NAME (and evaluate.py's samples of a style) take where the command line sets no value of its
# own (--voice_leading false, --form none, --temperature 0.9 ... override them); a style not listed takes the values
# above. Measured on the shipped model beside the style's real pieces with evaluate.py --listen (README, "Defaults per
# style"). `forms`: --form auto's forms and how often each is drawn (in % of samples), as evaluate.py --forms prints
# them: the forms of 2 % or more of the real pieces, "" for none (music21's bach folder and ryansMammoth as the demo
# encodes them; 1,058 Essen folk songs, an eighth of them). `keys`: --key auto's keys and how often each is drawn,
# as evaluate.py --forms prints them (those of 1 % or more of the pieces): free, the chorales set out from their tonic
# in 42 % and came home in 44 % (Bach: 78 %, 84 %), in a key drawn 76 % and 99 % (README); "cadence": the last chord
# reached from its dominant in 39 %, with it 100 % (Bach: 83 %); "third": the first and last chords with their third
# in 82 and 85 %, with it 99 and 100 % (Bach: 194 and 199 of 200); "phrases": chords held a half note or more before
# the last 0.5 a chorale, with it 4.8 (Bach: 2.7), notes of a half note 1 and 9 % (Bach: 7 %); `rhythm_temperature`
# 1.5: chorales in crotchets throughout (quavers under 5 % of the notes) 77 of 96 at 0.9, 8 at 1.5 (Bach: 4 of 200),
# quavers 4 → 25 % of the notes (Bach: 36 %; README, "Bach's rhythm"); the fiddle tunes' too, notes not of a tune's
# commonest length 9 → 20 % (the real tunes: 20 %; 128 tunes). `with_given`: what differs where the sample is
# given material (--melody, --infill, --add_part): the model alone harmonizes a soprano with 10.2
# parallels per 100 moves where Bach has 3.4, the first five rules bring it to 1.0 (models/corpus/MODEL.md); its
# durations at 1.5 too: under 16 validation chorales' sopranos (4 harmonizations each), quavers 12 → 26 % of the
# notes (Bach's own harmonizations of them: 33 %), notes not of the commonest length 24 → 39 % (45 %). Bach's own
# chorales keep the rule on parallels too: the choir's rule on swings moves a voice on where it would go back, into
# parallels more often (without the rule on parallels, twice Bach's), and held to a key's notes the model's chromatic
# notes are pushed to their neighbours, into more again (README "Defaults per style").
STYLE_DEFAULTS = {
    "bach": dict(voice_leading=True, voice_leading_rules=("parallels", "ending", "beginning", "cadence", "third",
                                                          "phrases"),
                 choir=True, temperature=0.9, rhythm_temperature=1.5, top_p=1.0,
                 forms={"": 55.2, "AABC": 19.4, "ABABCDE": 13.1, "AAB": 6.9, "ABCBDEFG": 2.7, "ABCBDE": 2.7},
                 keys={"G major": 14.3, "A minor": 11.9, "G minor": 10.7, "A major": 7.7, "D major": 7.7,
                       "D minor": 7.3, "B minor": 7.0, "F major": 6.8, "Bb major": 6.1, "C major": 5.3, "E minor": 4.8,
                       "C minor": 2.4, "E major": 2.4, "Eb major": 2.2, "F# minor": 1.9},
                 with_given=dict(voice_leading_rules=("rests", "parallels", "crossing", "ending", "beginning",
                                                      "cadence", "third"), temperature=0.8, rhythm_temperature=1.5,
                                 top_p=0.95)),
    "fiddle": dict(voice_leading=True, temperature=0.9, rhythm_temperature=1.5, top_p=0.95,
                   forms={"AABB": 51.4, "AAAABCBC": 15.5, "": 5.4, "AAAABBBB": 5.0, "ABABCBCB": 4.6, "AABAAB": 4.4,
                          "ABCC": 4.0, "ABABCCCC": 3.7, "AABC": 3.1, "AAAABBBC": 2.9}),
    "folk": dict(forms={"": 48.2, "ABB": 20.3, "AABC": 14.6, "AABCD": 9.6, "ABCDCE": 7.3}),
    "palestrina": dict(voice_leading=True, voice_leading_rules=("parallels",)),  # its voices rest and cross
}

PRESETS = {
    # Trains in a few minutes on 2 CPU cores and still learns the chorales' grammar and harmony.
    "cpu_demo": dict(n_layer=2, n_head=4, n_embd=128, kv_lora_rank=64, qk_nope_head_dim=16, qk_rope_head_dim=16,
                     v_head_dim=32, expert_hidden=256, block_size=128, dropout=0.0, batch_size=16,
                     gradient_accumulation_steps=1, max_iters=2000, warmup_iters=50, lr_decay_iters=2000,
                     learning_rate=2e-3, min_lr=2e-4, eval_interval=250, eval_iters=20, log_interval=20,
                     bias_update_speed=0.001),
    # The shipped model (models/corpus/MODEL.md): the sweep's best on the whole corpus, about 95 minutes on 2 cores.
    # Every window sees its piece's header (as a sample keeps it); one in four starts at a piece's START, where every
    # sample starts: with one in 16, the header after a START at position 0 was still learnt badly at step 1,500
    # (P(inst:0 | style:bach) 0.78 there, 0.03 after 100 tokens of another piece).
    "corpus": dict(n_layer=4, n_head=4, n_embd=256, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=32,
                   v_head_dim=64, n_shared_experts=1, n_routed_experts=4, top_k_experts=1, expert_hidden=512,
                   block_size=512, dropout=0.0, batch_size=8, gradient_accumulation_steps=1, max_iters=10000,
                   warmup_iters=200, lr_decay_iters=10000, learning_rate=2e-3, min_lr=2e-4, eval_interval=500,
                   eval_iters=40, log_interval=50, bias_update_speed=0.001, anchor_header=True,
                   piece_start_share=0.25),
}
# Its second stage: 8,000 more steps from the first stage's weights (--init_from), a new cosine from 1e-3 to 1e-4
# over other batches (another seed); about 80 minutes.
PRESETS["corpus_stage2"] = dict(PRESETS["corpus"], max_iters=8000, lr_decay_iters=8000, warmup_iters=100,
                                learning_rate=1e-3, min_lr=1e-4, seed=2)
# Its third: 3,000 steps from the second, 5e-4 to 5e-5; 30 minutes.
PRESETS["corpus_stage3"] = dict(PRESETS["corpus"], max_iters=3000, lr_decay_iters=3000, warmup_iters=100,
                                learning_rate=5e-4, min_lr=5e-5, seed=3)
# Its fourth (#37): 2,000 steps from the third in windows of 1,536 tokens, which hold nine chorales in ten whole
# (their 90th percentile is 1,431 tokens), at batch 4 (6,144 tokens a step, about as many as the third stage's in
# all); about 55 minutes.
PRESETS["corpus_long"] = dict(PRESETS["corpus"], block_size=1536, batch_size=4, max_iters=2000, lr_decay_iters=2000,
                              warmup_iters=100, learning_rate=5e-4, min_lr=5e-5, eval_interval=250, eval_iters=27,
                              seed=4)
# Its fifth (#37): 1,200 steps from the fourth with the rules' penalty (train_rules.npz of Bach's and the fiddle
# tunes' rules: prepare.py --rule_styles bach,fiddle), half the windows drawn around the tokens the rules hold.
PRESETS["corpus_rules"] = dict(PRESETS["corpus_long"], max_iters=1200, lr_decay_iters=1200, warmup_iters=50,
                               learning_rate=3e-4, min_lr=3e-5, eval_interval=300, rule_weight=30.0, rule_share=0.5,
                               seed=5)
# Its rounds of distillation (#37): 800 steps each from the fourth stage's weights or the round before, without the
# penalty (it pushes the voices onto the note just struck: MODEL.md), a quarter of each batch's windows from the
# samples of the rounds so far that a teacher keeps (mix_data_dir: `make distill`); about 21 minutes. From round 11
# `make distill` lays the penalty back on at weight 3, on the picks' windows only (the picks the data, the corpus
# mixed in).
PRESETS["corpus_distill"] = dict(PRESETS["corpus_rules"], max_iters=800, lr_decay_iters=800, eval_interval=400,
                                 rule_weight=0.0, rule_share=0.0, mix_share=0.25)
