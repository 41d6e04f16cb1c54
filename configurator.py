"""The machinery under config.py, in the spirit of nanoGPT's configurator.py: what each value may be (LIMITS,
CHOICES), `check` and `typed` to read a value from text, and `cli` to give a script `--key=value` overrides and
`--preset`. config.py stays the plain file a user edits."""
import argparse
import math
import sys

import config

# What each value may be, checked where overrides are parsed (the one place): name -> (lowest, highest), None for
# no bound, a bound in brackets excluded ([0] means "above 0"). For a tuple every element is checked, and the
# *_range tuples are (low, high) with low <= high. Floats must also be finite.
BPM = (4, 1000)  # a MIDI file holds a tempo as microseconds per quarter in 3 bytes: 3.58 BPM and up


LIMITS = {
    "sample_freq": (1, 480), "pitch_range": (0, 127), "velocity_range": (1, 127), "max_dur": (1, 10_000),
    "default_velocity": (1, 127), "min_notes": (0, None), "max_piece_steps": (1, None), "default_bpm": BPM,
    "tempo_range": BPM, "tempo_buckets": (1, 1000), "max_parts": (1, 16), "max_countdown": (1, 1000),
    "num_processes": (0, None), "file_timeout": ([0], None),
    "timeout_bytes": (1, None), "aug_variants": (0, None),
    "val_fraction": ([0], [1]), "augmented_percentage": (0, [100]), "given_share": (0, 1), "seed": (0, 2**63 - 1),
    # model shapes: also checked when a checkpoint is read, before anything is allocated
    "vocab_size": (1, 2**16), "block_size": (2, 2**20), "n_layer": (1, 256), "n_head": (1, 1024),
    "n_embd": (8, 2**16), "dropout": (0, [1]), "q_lora_rank": (0, 2**16), "kv_lora_rank": (1, 2**16),
    "qk_nope_head_dim": (0, 4096), "qk_rope_head_dim": (2, 4096), "v_head_dim": (1, 4096), "rope_theta": ([0], None),
    "n_shared_experts": (0, 256), "n_routed_experts": (0, 1024), "top_k_experts": (1, 1024),
    "expert_hidden": (8, 2**18), "route_scale": ([0], None), "bias_update_speed": (0, None),
    "balance_factor": (0, None), "learning_rate": ([0], None), "min_lr": (0, None), "weight_decay": (0, None),
    "beta1": (0, [1]), "beta2": (0, [1]), "grad_clip": (0, None), "batch_size": (1, None),
    "gradient_accumulation_steps": (1, None), "max_iters": (0, None), "warmup_iters": (0, None),
    "lr_decay_iters": (0, None), "eval_interval": (1, None), "eval_iters": (1, None), "log_interval": (1, None),
    "max_bad_steps": (1, None), "piece_start_share": (0, 1), "rule_weight": (0, None), "rule_share": (0, 1), "mix_share": (0, [1]),
    "num_samples": (1, 1024), "temperature": (0, None), "rhythm_temperature": (0, None), "top_k": (0, None),
    "top_p": ([0], 1),
    "max_new_tokens": (1, 10**6),
    # scripts' own arguments; a length control is bounded so that a typo cannot start a days-long run
    "prompt_bars": (1, None), "parts": (1, 16), "bars": (1, 1000), "seconds": ([0], 3600), "tempo": BPM, "bpm": BPM,
    "ngram": (1, 10), "ngram_max_tokens": (1, None), "memorization_threshold": (1, None), "control_samples": (1, None),
    "main_style_pieces": (1, None), "eval_bars": (1, 1000), "eval_seconds": ([0], 3600), "eval_pitch_range": (0, 127),
    "eval_num_samples": (1, 1024), "given_pieces": (1, None), "given_samples": (1, 1024), "repeat_bars": (1, None),
    "style_samples": (2, 1024),
}


# The kind of value each name of config.py takes where it is not a whole number (the names in LIMITS but not here), and
# of the items of its tuples where they are not numbers: config.py is edited by hand, and a value of another kind
# ("false" for False, a list for a tuple, "3" for 3) is one line when it is read (config_problem), not a traceback far
# off or a wrong run. A name in neither (a user's own) is not checked.
KINDS = {name: kind for kind, names in (
    (bool, "keep_drums bias anchor_header compile look_ahead voice_leading choir"),
    (float, "default_bpm file_timeout val_fraction augmented_percentage given_share dropout rope_theta route_scale "
            "bias_update_speed balance_factor learning_rate min_lr weight_decay beta1 beta2 grad_clip "
            "piece_start_share rule_weight rule_share mix_share temperature rhythm_temperature top_p eval_seconds "
            "seconds tempo bpm"),
    (str, "text_dir shard aug_dir tokenizer_path samples_dir rule_scale gelu_approximate data_dir out_dir init_from "
          "mix_data_dir device dtype form key shipped_run eval_key"),
    (tuple, "pitch_range velocity_range tempo_range meters aug_pitch_shifts aug_velocity_shifts aug_tempo_shifts "
            "given_kinds rule_styles voice_leading_rules usual_ranges choir_ranges choir_rules eval_pitch_range"),
    (dict, "corpus_styles")) for name in names.split()}
ITEM_KINDS = {name: kind for kind, names in ((str, "meters given_kinds rule_styles voice_leading_rules choir_rules"),
                                             (tuple, "usual_ranges choir_ranges")) for name in names.split()}
KIND_WORDS = {bool: "True or False", int: "a whole number", float: "a number", str: "text in quotes",
              tuple: "a tuple, (A, B, ...)", dict: "a dict"}
ITEM_WORDS = {float: "a tuple of numbers", str: "a tuple of names in quotes", tuple: "a tuple of (LOW, HIGH) pairs"}
CHOICES = {"dtype": ("auto", "float32", "bfloat16", "float16"), "gelu_approximate": ("none", "tanh"),
           "choir_rules": ("range", "spacing", "leap", "repeat", "swing"),
           "voice_leading_rules": ("rests", "parallels", "crossing", "ending", "beginning", "cadence", "third",
                                   "phrases"),
           "rule_scale": ("none", "used", "key"),
           "given_kinds": ("melody", "parts", "bars")}


def _bound_text(lo, hi):
    bound = lambda b, sign: f"{sign} {b[0]}" if isinstance(b, list) else f"{sign}= {b}"  # [b]: b itself excluded
    parts = ([bound(lo, ">")] if lo is not None else []) + ([bound(hi, "<")] if hi is not None else [])
    return " and ".join(parts)


def check(name, value):
    """None if `value` is allowed for config key `name`, else what is wanted, in words."""
    if isinstance(value, tuple):
        if name.endswith("_range") and (len(value) != 2 or value[0] > value[1]):
            return "two values LOW,HIGH with LOW <= HIGH"
        return next((why for v in value if (why := check(name, v))), None)
    if name in CHOICES and value not in CHOICES[name]:
        return f"one of {', '.join(CHOICES[name])}"
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    lo, hi = LIMITS.get(name, (None, None))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            lo is not None and (value <= lo[0] if isinstance(lo, list) else value < lo)
            or hi is not None and (value >= hi[0] if isinstance(hi, list) else value > hi)):
        return f"a number {_bound_text(lo, hi)}"
    return None


def kind_problem(name, value):
    """None if `value` is of the kind config name `name` takes (KINDS, else a whole number where LIMITS bounds it; an
    int where a number is), else that kind in words."""
    of = lambda v, kind: type(v) is kind or kind is float and type(v) is int
    kind = KINDS.get(name, int if name in LIMITS else None)
    if kind is None:
        return None
    if not of(value, kind):
        return KIND_WORDS[kind]
    item = ITEM_KINDS.get(name, float)
    return ITEM_WORDS[item] if kind is tuple and not all(of(v, item) for v in value) else None


def config_problem():
    """One line on the first value of config.py that is not of its kind (kind_problem), else None: checked as
    config.py is read, before a script builds anything from it (its bounds are `cli`'s, where a command line's value
    may stand in for it)."""
    for name, value in vars(config).items():
        if not name.startswith("_") and name.islower() and (why := kind_problem(name, value)):
            return f"{name} = {value!r} in config.py wants {why}"
    return None


def typed(name, default):
    """An argparse `type` that reads a value of the same type as `default` (tuples are comma-separated) and
    checks it against LIMITS and CHOICES under `name`; scripts use it for their own numeric arguments too."""
    def parse(text):
        try:
            if isinstance(default, tuple):
                item = default[0] if default else ITEM_KINDS.get(name, int)()  # (an empty default: its items' kind)
                value = tuple(_parse_one(item, t) for t in text.split(",") if t)
            else:
                value = _parse_one(default, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants {_kind_text(default)}, got {text!r}")
        if why := check(name, value):
            raise argparse.ArgumentTypeError(f"wants {why}, got {text!r}")
        return value
    return parse


def option(group, flag, help, key=None, per_style=False):
    """Add a script's own `--flag` (to a parser or an argument group), typed, checked and defaulted by the config
    value `key` (the flag's name by default): the one place its default is written is config.py. With `per_style`
    its default is None, for the script to take from the style's row of config.STYLE_DEFAULTS, else config's."""
    key = key or flag
    default = getattr(config, key)
    group.add_argument(f"--{flag}", type=typed(key, default), default=None if per_style else default,
                       help=help + (f" (default {default!r}, or the style's: config.STYLE_DEFAULTS)" * per_style))


def _kind_text(default):
    """What a value of `default`'s type looks like on the command line, in words."""
    if isinstance(default, tuple):
        return f"comma-separated values like {','.join(map(str, default))}" if default else "comma-separated values"
    if isinstance(default, bool):
        return "true or false"
    return {int: "a whole number", float: "a number"}.get(type(default), f"a {type(default).__name__}") + \
        f" like {default}"


def _parse_one(default, text):
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError
        return text.lower() in ("true", "1")
    return type(default)(text)  # int rejects "1.5"; float accepts "3"


def pick(values, names):
    """{name: value} for `names` from a dict or a namespace (a parsed config, a checkpoint's plain values)."""
    get = values.get if isinstance(values, dict) else lambda k: getattr(values, k)
    return {k: get(k) for k in names}


def defaults():
    """All config values by name."""
    return {k: v for k, v in vars(config).items()
            if not k.startswith("_") and k.islower() and isinstance(v, (bool, int, float, str, tuple))}


def _one_line_error(message):
    """argparse's errors as one line on stderr (no usage block), exit status 2."""
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


def one_line_errors(parser):
    """`parser`, its mistakes one line each (no usage block) and no abbreviated flags (--learning_rat=1 must be an
    error, not learning_rate): every script's parser goes through here."""
    parser.allow_abbrev = False
    parser.error = _one_line_error
    return parser


def cli(parser, keys, argv=None, own=None):
    """Parse a script's own arguments plus `--preset` and `--key=value` overrides of the config `keys`; `own` holds
    the script's own defaults for some of them."""
    values = {**defaults(), **(own or {})}
    one_line_errors(parser)
    group = parser.add_argument_group("config overrides (see config.py)")
    group.add_argument("--preset", choices=sorted(config.PRESETS), help="overlay a preset from config.PRESETS")
    for k in keys:
        group.add_argument(f"--{k}", type=typed(k, values[k]), default=argparse.SUPPRESS, metavar="V",
                           help=f"default {values[k]!r}")
    args = parser.parse_args(argv)
    chosen = {k: values[k] for k in keys}
    preset = {k: v for k, v in config.PRESETS.get(args.preset, {}).items() if k in chosen}
    given = {k: v for k, v in vars(args).items() if k in chosen}
    chosen.update(preset)
    for k in [k for k in chosen if k not in given]:  # config.py's own values and a preset's: a user edits it too
        if why := kind_problem(k, chosen[k]) or check(k, chosen[k]):
            print(f"error: {k} = {chosen[k]!r} in config.py{' or its preset' * (k in preset)} wants {why}",
                  file=sys.stderr)
            sys.exit(2)
    chosen.update(given)
    # `given`: the keys set on this command line, by name or through --preset (a resumed run keeps the rest)
    return argparse.Namespace(**{**vars(args), **chosen, "given": set(preset) | set(given)})


if why := config_problem():  # (as config.py is read: before any script builds a dataclass or a run from its values)
    print(f"error: {why}", file=sys.stderr)
    sys.exit(2)
