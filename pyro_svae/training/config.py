"""The train options: one table (name, default, help, range or choices, whether a resume may
change it), from which ``TrainConfig``, ``check_config`` and the command line's options derive."""

import dataclasses
import math
import os

from ..data.sources import DOCUMENTS
from ..data.store import StoreOptions, is_store, read_store_info
from ..errors import SVAEError
from ..inference.schedules import LR_SCHEDULES, parse_schedule
from ..models.discrete import estimator, parse_mixture, parse_tau
from ..models.guides import SingleSite, guide_class, make_guide
from ..models.documents import DOCUMENT_GUIDES, is_chain_prior
from ..models.labeled import is_class_prior, parse_classes
from ..models.networks import POOLS
from ..models.vae import ModelConfig
from .logs import BACKENDS, check_backend
from .rundir import BEST, read_config


@dataclasses.dataclass(frozen=True)
class Option:
    """One train option. ``check`` is (predicate, what the value must be); ``choices`` the allowed
    values; ``resumable``: ``train --resume`` may change it."""
    name: str
    default: object
    help: str
    choices: tuple = ()
    check: tuple = None
    resumable: bool = False

    @property
    def flag(self):
        return flag(self.name)


def flag(name):
    return "--" + name.replace("_", "-")


AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
FRACTION = (lambda v: 0 <= v < 1, "in [0, 1)")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
OFF_AT_0 = (lambda v: v >= 0, ">= 0 (0: off)")
NO_LIMIT_AT_0 = (lambda v: v >= 0, ">= 0 (0: no limit)")
POSITIVE = (lambda v: v > 0, "a positive number")
DECAY = (lambda v: 0 < v <= 1, "in (0, 1]")
SEED = (lambda v: 0 <= v < 2**32, "in [0, 2^32)")

# Named sets of defaults: a user's own options override them. "default" is the table's (chosen so
# that a VAE uses its latent without flags); "bowman2015" is the original recipe (Bowman et al.
# 2015: no KL floor, sigmoid annealing, no early stopping), which collapses.
PRESETS = {
    "default": {},
    "bowman2015": dict(emb_dim=353, hidden=191, enc_hidden=0, z_dim=13, dropout=0.0, free_bits=0.0, word_keep=0.75,
                       kl_schedule="logistic:0.0025,2500", batch_size=32, lr=1e-3, patience=0, feed_z=False,
                       bidirectional=False, skip=False, bow=0.0, ema=0.0),
    # the defaults of earlier versions: a 16-nat floor, Adam 2e-3, no skip connection, no weight
    # average, Bowman's 191 units in both LSTMs (their latent keeps less of a sentence; docs/results.md
    # compares them)
    "plain": dict(free_bits=0.5, lr=2e-3, skip=False, bow=0.0, feed_z=True, select="elbo", ema=0.0, hidden=191,
                  enc_hidden=0),
    # Li et al. 2019: the defaults after 1,000 steps of autoencoder pretraining and a reset decoder
    "li2019": dict(pretrain_steps=1000),
    # He et al. 2019: the defaults with aggressive encoder updates (up to 100 encoder steps before each
    # step) until the mutual information I(x; z) stops rising
    "he2019": dict(aggressive=100),
    # the same networks with the KL weight ~0 and no floor, chosen by validation reconstruction:
    # what the channel can carry at this data size and budget (its prior is not a model of text)
    "autoencoder": dict(kl_schedule="constant:0.0001", free_bits=0.0, select="bleu"),
}

# In the order --help lists them. Model sizes default to ModelConfig's (models/vae.py documents them),
# except z_dim: 32, where a floor of 0.9 nats on each dimension keeps ~29 nats, and the LSTMs: a
# 192-unit decoder and a bidirectional encoder of 96 units a direction, 1.31x the tokens/s of
# Bowman's 191 (docs/results.md measures both).
OPTIONS = [
    Option('preset', 'default', 'A named set of defaults that your options override: default (keeps the latent '
           'in use: free bits, the skip connection, dropout, early stopping), plain (the defaults '
           'of earlier versions: free bits 0.5, lr 2e-3, no skip connection), bowman2015 (the '
           'original recipe, which collapses), li2019 '
           '(autoencoder pretraining, then a reset decoder), he2019 (aggressive encoder updates, --aggressive 100) or '
           'autoencoder (KL weight ~0, chosen by reconstruction).',
           choices=tuple(PRESETS)),
    Option('data', '', 'Corpus: a folder with train/valid/test (ptb.train.txt or train.txt ...) or one file split '
           '90/5/5.'),
    Option('tokenizer', 'word', 'word: whitespace words (pre-tokenized corpora such as PTB); spm: sentencepiece trained on '
           'train (on a random sample of up to 2M of its lines; <unk> in the text, as PTB writes unknown words, is the '
           'unknown id, not pieces).', choices=('word', 'spm')),
    Option('vocab_size', 10000, 'Vocabulary size, specials included (word: most frequent words; spm: pieces).', check=AT_LEAST_1),
    Option('min_count', 1, 'word tokenizer: drop words seen fewer times than this.', check=AT_LEAST_1),
    Option('max_len', 60, 'Maximum tokens per training sentence (</s> not counted); valid/test stay whole.', check=AT_LEAST_1),
    Option('too_long', 'drop', 'What to do with longer training sentences: drop or truncate.', choices=('drop', 'truncate')),
    Option('labels', 'none', 'tab: each line is LABEL<TAB>sentence (an empty label, ? or no tab: unlabeled); the store '
           'keeps the labels, for --prior class.', choices=('none', 'tab')),
    Option('documents', 'none', 'blank: an empty line ends a document; lines: each line is a document, cut into sentences '
           'after tokens ending in . ? or !; the store keeps the documents, for --prior chain (and --model lm reads each '
           'document as one sequence).', choices=DOCUMENTS),
    Option('model', 'vae', 'vae, or lm: the same decoder with no latent (the language-model baseline).', choices=('vae', 'lm')),
    Option('emb_dim', ModelConfig.emb_dim, 'Word embedding size.', check=AT_LEAST_1),
    Option('hidden', 192, 'Decoder LSTM size.', check=AT_LEAST_1),
    Option('z_dim', 32, 'Latent size.'),
    Option('enc_hidden', -1, 'Encoder LSTM size, each direction (-1: a summary of --hidden dimensions, half of '
           '--hidden a direction when bidirectional; 0: --hidden a direction).', check=(lambda v: v >= -1, ">= -1")),
    Option('enc_layers', ModelConfig.enc_layers, 'Encoder LSTM layers.', check=AT_LEAST_1),
    Option('dec_layers', ModelConfig.dec_layers, 'Decoder LSTM layers.', check=AT_LEAST_1),
    Option('bidirectional', True, 'Bidirectional encoder.'),
    Option('pool', ModelConfig.pool, "The encoder's summary of a sentence: last (the LSTM's final states) or max / mean over "
           "its outputs at every word (Long et al. 2019).", choices=POOLS),
    Option('feed_z', False, 'Also feed z to the decoder at every step (off: z sets its initial state and, with --skip, '
           'adds to the logits).'),
    Option('tie', ModelConfig.tie, "Tie the output layer to the decoder's embedding."),
    Option('dropout', 0.2, 'Dropout on embeddings and LSTM outputs.', check=FRACTION),
    Option('guide', ModelConfig.guide, 'Variational family: diag, lowrank:R, fullrank, iaf:K, delta, hier-meanfield, hier-'
           'structured; with --prior chain: doc-meanfield, doc-structured or doc-conjugate.'),
    Option('prior', ModelConfig.prior, 'standard: N(0, I); hier: p(z1) p(z2|z1) (with a hier-* guide); mixture:K: a learned mixture '
           'of K Gaussians whose component is discrete (see --discrete); class[:K]: the label y ~ Cat(1/K) is a cause '
           'of x beside z (Kingma et al. 2014 M2; --labels tab: known where labeled, summed over where not); chain: a '
           "document's sentence latents form a linear-Gaussian chain (--documents; a --guide doc-*)."),
    Option('alpha', 50.0, "--prior class: weight of the classification term alpha * log q(y|x) on each labeled "
           "sentence (Kingma's alpha).", check=AT_LEAST_0),
    Option('class_info', 0.0, "--prior class: weight W of a reward W * I(x; y) under q(y|x) on the unlabeled sentences "
           "(the information their predicted classes carry), so that y is used before z learns what y could carry.",
           check=AT_LEAST_0),
    Option('class_init', 0, "--prior class: before training, fit a mixture of unigrams to the train sentences by EM "
           "(Nigam et al. 2000; known labels clamped, the best of 10 restarts) and train q(y|x) on its classes for N "
           "steps, so that the classes start as clusters of words (0: a random start).", check=AT_LEAST_0),
    Option('latent', ModelConfig.latent, 'gaussian, or categorical:M,K: z is M categorical variables with K classes each (uniform '
           'prior; the code has M x K dimensions and --z-dim is not used).'),
    Option('discrete', ModelConfig.discrete, "How a discrete latent is trained: enum (the mixture's component summed out exactly by "
           "TraceEnum_ELBO), concrete (Gumbel-softmax relaxation, see --tau), reinforce (score function "
           "with a learned baseline, TraceGraph_ELBO); auto: enum for mixture:K, concrete for "
           "categorical."),
    Option('tau', '1.0,0.5,2000', "concrete: the relaxation's temperature START,END,STEPS, falling exponentially from START to END over STEPS steps."),
    Option('straight_through', ModelConfig.straight_through, 'concrete: one-hot draws in the forward pass, relaxed gradients.'),
    Option('elbo', 'trace', 'trace (Trace_ELBO, sampled KL) or meanfield (TraceMeanField_ELBO, analytic KL).', choices=('trace', 'meanfield')),
    Option('kl_schedule', 'linear:0,2000', 'KL weight per step: constant[:b], linear:start,steps, logistic:k,x0 (Bowman), cyclical:cycles,ratio.'),
    Option('word_keep', 0.75, 'Word dropout keep rate k in [0, 1]: decoder inputs become <unk> with prob. 1-k in training '
           '(0: an inputless decoder, which reads <unk> in evaluation and decoding too).', check=UNIT),
    Option('free_bits', 0.9, 'Free bits: KL floor per latent dimension in nats, batch-averaged (Kingma et al. 2016; with a'
           ' non-diag guide the total KL is floored at this x z-dim; 0: off).', check=OFF_AT_0),
    Option('skip', True, "z also adds a learned linear term to the decoder's logits at every step (a skip connection "
           "past the LSTM, Dieng et al. 2019)."),
    Option('bow', 0.0, "Weight of a bag-of-words term in training: the sentence's words predicted from z alone (Zhao"
           " et al. 2017), so that z carries them early; 0: off (the default: with the KL floor it costs likelihood"
           " and keeps about as much of the sentence). Evaluation and decoding do not use it.", check=OFF_AT_0),
    Option('aggressive', 0, "He et al. 2019's aggressive encoder updates: before each step, up to N steps that update "
           'the encoder alone until their loss stops falling, then a step of the decoder alone; the phase ends at the '
           'first validation whose mutual information I(x;z) does not rise (0: off).', check=AT_LEAST_0),
    Option('pretrain_steps', 0, 'Train as an autoencoder (beta ~ 0) for N steps, then re-initialize the decoder (Li et al. '
           '2019).', check=AT_LEAST_0),
    Option('iw_particles', 1, 'K > 1: train on the K-sample importance-weighted bound (IWAE, Burda et al. 2016), which '
           'targets log p(x) rather than the ELBO; validation and best.pt use the same bound.', check=AT_LEAST_1),
    Option('init_decoder', '', "Start the decoder from this run's best.pt (a --model lm run on the same data and sizes); z's"
           " initial-state layer starts at zero, so the VAE begins as that language model."),
    Option('init_from', '', "Start every weight from this run's best.pt (same data and architecture), with a fresh "
           "optimizer: fine-tune a trained model, e.g. with --iw-particles."),
    Option('batch_size', 32, 'Sentences per minibatch.', check=AT_LEAST_1),
    Option('lr', 0.001, 'Adam learning rate.', check=POSITIVE),
    Option('lr_decay', 1.0, 'Multiply the learning rate by this after each validation without a better ELBO (1: off).', check=DECAY),
    Option('lr_schedule', 'constant', 'constant, or linear / cosine: the learning rate falls from --lr to 0 over the '
           'run\'s --max-steps (or --max-epochs), which a short budget ends on (Li et al. 2020, budgeted training).',
           choices=LR_SCHEDULES),
    Option('clip_norm', 5.0, 'Clip the global gradient norm to this (0: off).', check=OFF_AT_0),
    Option('ema', 0.999, 'Validate, select and save as best.pt an exponential moving average of the weights with this '
           'decay per step (e.g. 0.999: about the last 1,000 steps; Polyak averaging; taken every 4 steps), while '
           'training goes on with the raw weights (0: off).', check=FRACTION),
    Option('max_epochs', 0, 'Stop after this many epochs (0: no limit).', check=AT_LEAST_0, resumable=True),
    Option('max_steps', 0, 'Stop after this many steps in all (0: no limit).', check=AT_LEAST_0, resumable=True),
    Option('max_minutes', 0.0, 'Stop after this many minutes of training in all (0: no limit).', check=NO_LIMIT_AT_0, resumable=True),
    Option('eval_every', 500, 'Validate and checkpoint every N steps.', check=AT_LEAST_1, resumable=True),
    Option('patience', 4, 'Stop after N validations without a better score (see --select; 0: never).', check=AT_LEAST_0,
           resumable=True),
    Option('select', 'floored', "The validation score that picks best.pt and counts against --patience: elbo (the bound "
           "trained on), floored (that bound with the KL counted as at least the --free-bits floor, as training "
           "counts it: below the floor it follows the reconstruction; the document and labeled models use their "
           "bound) or bleu (the greedy "
           "reconstruction BLEU of the first 100 validation sentences of at most --max-len tokens: an autoencoder's).",
           choices=('elbo', 'floored', 'bleu')),
    Option('log', 'csv', 'Experiment log beside metrics.csv (always written): csv (that alone), tensorboard '
           '(RUN/tensorboard) or mlflow (RUN/mlflow.db, a SQLite store); each backend is an optional extra.', choices=BACKENDS,
           resumable=True),
    Option('seed', 0, 'Random seed (batches, initialization, sampling).', check=SEED),
    Option('device', 'auto', 'auto, cpu, cuda or cuda:N.', resumable=True),
    Option('amp', 'off', 'bf16: mixed precision (autocast) for the training step: CUDA tensor cores, or AMX on recent '
           'Xeons (1.7-2x faster at 650 units); off: float32.', choices=('off', 'bf16'), resumable=True),
    Option('compile', 'auto', 'step: replay each batch shape\'s step (guide, model, ELBO) from a TorchScript trace, '
           'bitwise the eager step, without Pyro\'s per-step Python (the sentence VAE and LM in float32; other models, '
           'and a step found to differ, run eager); auto: step on CUDA, where a step is mostly Python, off on the CPU, '
           'where tracing each shape costs more than it saves at Bowman\'s size; decoder: torch.compile the decoder; '
           'off: eager. docs/performance.md has the measurements.',
           choices=('auto', 'off', 'step', 'decoder'), resumable=True),
]
OPTION = {o.name: o for o in OPTIONS}
RESUMABLE = {o.name for o in OPTIONS if o.resumable}
CHOICES = {o.name: o.choices for o in OPTIONS if o.choices}

TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(o.name, type(o.default), dataclasses.field(default=o.default)) for o in OPTIONS])
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = ("Every train option (OPTIONS), with its default; for --model lm, MODEL_DEFAULTS's options "
                       "that read z are off unless given.")

# The options that read z, off for the language model (it has none) unless given, and then an error
MODEL_DEFAULTS = {"lm": dict(skip=False, bow=0.0)}
_table_init = TrainConfig.__init__


def _init(self, **options):
    options = {**MODEL_DEFAULTS.get(options.get("model", "vae"), {}), **options}
    if options.get("enc_hidden", -1) == -1:  # stored resolved, so a run keeps its sizes if the rule changes
        hidden, both = (options.get(k, OPTION[k].default) for k in ("hidden", "bidirectional"))
        options["enc_hidden"] = hidden // 2 if both and hidden > 1 else 0
    _table_init(self, **options)


TrainConfig.__init__ = _init


def config_from(preset="default", **options):
    """A TrainConfig: the table's defaults, then the preset's, then ``options``."""
    if preset not in PRESETS:
        raise SVAEError(f"--preset {preset!r}: use one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset], **options, "preset": preset})


def resumed_config(out_dir, overrides):
    """The run's TrainConfig with the allowed overrides applied; an error for any other change."""
    stored = read_config(out_dir)["train"]
    for key, value in overrides.items():
        if key not in RESUMABLE and value != stored.get(key):
            raise SVAEError(f"{flag(key)} {value} differs from the run's {stored.get(key)}; "
                            f"a resumed run keeps its data and model settings")
    return TrainConfig(**{**stored, **{k: v for k, v in overrides.items() if k in RESUMABLE}})


def check_config(c):
    """Every option value, before any work: a one-line SVAEError naming the first bad one."""
    for o in OPTIONS:
        value = getattr(c, o.name)
        if o.choices and value not in o.choices:
            raise SVAEError(f"{o.flag} {value!r}: use one of {', '.join(o.choices)}")
        if o.check is not None:
            allowed, what = o.check
            if not ((not isinstance(value, float) or math.isfinite(value)) and allowed(value)):
                raise SVAEError(f"{o.flag} {value}: must be {what}")
    check_backend(c.log)
    if c.class_info > 0 and not is_class_prior(c.prior):
        raise SVAEError(f"--class-info {c.class_info}: the reward is on the classes of --prior class")
    if c.class_init and not is_class_prior(c.prior):
        raise SVAEError(f"--class-init {c.class_init}: it starts the classes of --prior class")
    for name in ("init_decoder", "init_from"):
        run = getattr(c, name)
        if run and not os.path.isfile(os.path.join(run, BEST)):
            raise SVAEError(f"{flag(name)} {run}: not a trained run (no {BEST})")
    if c.init_decoder and c.init_from:
        raise SVAEError("--init-decoder and --init-from: give one")
    if c.model == "lm":
        if c.iw_particles > 1:
            raise SVAEError("--iw-particles > 1 is for a VAE (the LM's likelihood is exact)")
        if c.bow > 0:
            raise SVAEError("--bow predicts words from z: it is for a VAE, not --model lm")
        if c.skip:
            raise SVAEError("--skip adds z to the logits: it is for a VAE, not --model lm")
        if c.select == "bleu":
            raise SVAEError("--select bleu scores reconstructions: it is for a VAE, not --model lm")
    else:
        _check_latent(c)
    _check_aggressive(c)
    parse_schedule(c.kl_schedule, c.max_steps or c.max_epochs or None)
    if c.lr_schedule != "constant" and not (c.max_steps or c.max_epochs):
        raise SVAEError(f"--lr-schedule {c.lr_schedule} falls to 0 at the end of the run: give --max-steps or --max-epochs")


def _check_aggressive(c):
    if not c.aggressive:
        return
    if c.model == "lm" or is_chain_prior(c.prior) or is_class_prior(c.prior):
        raise SVAEError("--aggressive trains the sentence VAE's encoder: not with --model lm, --prior class or chain")
    head = guide_class(c.guide)
    if not issubclass(head, SingleSite) or head.point_estimate or c.latent != "gaussian":
        raise SVAEError(f"--aggressive needs a Gaussian q(z|x) whose mutual information with x ends its phase: "
                        f"not the {c.guide} guide" + (f" or --latent {c.latent}" if c.latent != "gaussian" else ""))


def _check_latent(c):
    if c.z_dim <= 0:
        raise SVAEError("--z-dim must be positive for a VAE (use --model lm for no latent)")
    if is_chain_prior(c.prior):
        documents = read_store_info(c.data)["options"].get("documents", "none") if is_store(c.data) else c.documents
        if documents == "none":
            raise SVAEError("--prior chain models documents: give --documents blank (an empty line between "
                            "documents) or --documents lines (a document per line)")
        if c.guide not in DOCUMENT_GUIDES:
            raise SVAEError(f"--prior chain: use --guide {', '.join(DOCUMENT_GUIDES)}, not {c.guide!r}")
        if c.iw_particles > 1 or c.pretrain_steps or c.latent != "gaussian" or c.select == "bleu":
            raise SVAEError("--prior chain trains on its ELBO: no --iw-particles, --pretrain-steps, --latent or "
                            "--select bleu")
        if c.init_decoder or c.init_from:
            raise SVAEError("--prior chain: --init-decoder and --init-from are for the sentence VAE")
        return
    if c.guide in DOCUMENT_GUIDES:
        raise SVAEError(f"--guide {c.guide} is a guide of the document model: add --prior chain")
    make_guide(c.guide, 4, c.z_dim)  # a valid family and argument
    if is_class_prior(c.prior):
        parse_classes(c.prior, ["?", "?"])  # a valid K; the corpus's labels are checked when it is read
        labeled = read_store_info(c.data).get("labels") if is_store(c.data) else c.labels == "tab"
        if c.prior == "class" and not labeled:
            raise SVAEError("--prior class: the corpus has no labels; give --labels tab (lines LABEL<TAB>sentence), "
                            "or the number of classes for an unlabeled corpus, class:K")
        if guide_class(c.guide).prior != "standard" or c.latent != "gaussian":
            raise SVAEError(f"--prior class: q(z | x, y) is a single-site guide over a Gaussian z, not {c.guide!r}")
        if c.iw_particles > 1 or c.pretrain_steps:
            raise SVAEError("--prior class trains on its enumerated ELBO: no --iw-particles or --pretrain-steps")
        if c.init_decoder or c.init_from or c.select == "bleu":
            raise SVAEError("--prior class: --init-decoder, --init-from and --select bleu are for the sentence VAE")
        return
    if c.prior not in ("standard", "hier") and not parse_mixture(c.prior):
        raise SVAEError(f"--prior {c.prior!r}: use one of standard, hier, mixture:K, class[:K]")
    discrete = estimator(c.prior, c.latent, c.discrete)  # a valid latent and estimator
    wanted = guide_class(c.guide).prior
    if wanted != ("standard" if parse_mixture(c.prior) else c.prior):
        raise SVAEError(f"guide {c.guide!r} goes with --prior {wanted}, not {c.prior!r}")
    if c.latent != "gaussian" and c.guide != "diag":
        raise SVAEError(f"--latent {c.latent} has its own q(z|x); leave --guide at diag")
    if discrete and c.iw_particles > 1:
        raise SVAEError("--iw-particles > 1 is for a Gaussian latent; a discrete one trains on the ELBO")
    if discrete == "concrete":
        parse_tau(c.tau)


STORE_OPTIONS = tuple(StoreOptions.__dataclass_fields__)  # fixed by a prepared store


def store_options(c):
    return StoreOptions(**{k: getattr(c, k) for k in STORE_OPTIONS})


def check_store_options(data, given):
    """Options given with ``--data STORE`` must agree with the store's (they are its tokenizer's)."""
    if not is_store(data):
        return
    stored = read_store_info(data)["options"]
    for key in STORE_OPTIONS:
        if key in given and given[key] != stored.get(key, getattr(StoreOptions(), key)):
            raise SVAEError(f"{flag(key)} {given[key]}: the store {data} was prepared with {stored[key]}; "
                            f"prepare another store to change it")
