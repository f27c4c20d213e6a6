"""A character CTC head on the audio encoder, and joint CTC / LLM decoding.

The head reads the encoder's output (the same frames the connector reads) and predicts characters
with CTC.  It has no language model inside, so it is a check on the LLM's tendency to write what is
likely rather than what was said.  During decoding, :class:`CTCPrefixLogitsProcessor` rescores the
LLM's top candidates for the next token with the CTC prefix probability of the characters they
spell (hybrid CTC/attention decoding, Watanabe et al. 2017, as in ESPnet), for greedy and beam search:

    score(prefix + token) = (1 - w) * log p_llm(token | prefix, audio)
                            + w * (log p_ctc(prefix + token ... | audio) - log p_ctc(prefix ... | audio))

where ``p_ctc(chars ...)`` is the probability that the audio's character sequence starts with
``chars``, and for end-of-text the probability that it is exactly ``chars``.  Characters are the
lowercased letters, digits, apostrophe and space of the text (:func:`to_chars`).

Unlike ESPnet's, the LLM's tokens and the head's labels differ: a token may spell nothing new
(punctuation, a newline).  Scored 0 it would win by postponing the characters still to come, so such
a token scores as the best token that spells something, less ``silent_penalty`` (log 2).  Special
tokens other than end-of-text are ruled out while the head is in use.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BLANK = 0
CHARS = ["<blank>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
CHAR_INDEX = {c: i for i, c in enumerate(CHARS)}


def to_chars(text: str, partial: bool = False) -> str:
    """The CTC head's view of a text: NFKD, lowercase, a-z 0-9 ' and single spaces.  Other
    characters (punctuation, newlines) separate words.  ``partial``: the text is a prefix of a
    longer one, so a trailing separator is kept (it says the word has ended)."""
    t = unicodedata.normalize("NFKD", text).lower().replace("’", "'").replace("-", " ")
    t = re.sub(r" +", " ", re.sub(r"[^a-z0-9' ]", " ", t)).lstrip()
    return t if partial else t.rstrip()


def char_ids(text: str) -> list[int]:
    return [CHAR_INDEX[c] for c in to_chars(text)]


@dataclass
class CTCHeadConfig:
    """stack: encoder frames concatenated per CTC frame (Whisper: 50 Hz -> 25 Hz at 2);
    dim / layers: a pre-norm Transformer over the stacked frames."""

    dim: int = 256
    layers: int = 2
    heads: int = 4
    stack: int = 2
    dropout: float = 0.1


class CTCHead(nn.Module):
    def __init__(self, input_dim: int, config: CTCHeadConfig):
        super().__init__()
        self.config = config
        self.inp = nn.Linear(input_dim * config.stack, config.dim)
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, 4 * config.dim, config.dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.body = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Linear(config.dim, len(CHARS))
        self.drop = nn.Dropout(config.dropout)

    @torch.no_grad()
    def start_as_identity(self, layers) -> None:
        """Zero the residual branches' output projections of these body layers (pre-norm blocks), so
        each passes its input through unchanged: a head grown by new top layers computes what the
        smaller one did, and the new layers still learn (their other weights keep their init)."""
        for i in layers:
            layer = self.body.layers[i]
            for lin in (layer.self_attn.out_proj, layer.linear2):
                lin.weight.zero_()
                lin.bias.zero_()

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) encoder output, (B,) lengths -> (B, T', V) log-probs, (B,) lengths (T' = T // stack)."""
        b, t, d = hidden.shape
        k = self.config.stack
        t2 = max(t // k, 1)
        if t < k:  # a clip shorter than one CTC frame
            hidden = F.pad(hidden, (0, 0, 0, k - t))
        x = hidden[:, : t2 * k].reshape(b, t2, d * k)
        lengths = (lengths.to(x.device) // k).clamp(min=1)
        x = self.drop(self.inp(x.to(self.inp.weight.dtype)))
        mask = torch.arange(t2, device=x.device)[None] >= lengths[:, None]
        x = self.body(x, src_key_padding_mask=mask)
        return self.out(x).float().log_softmax(-1), lengths


def greedy_chars(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Best-path CTC decoding (collapse repeats, drop blanks)."""
    out = []
    for lp, n in zip(log_probs, lengths):
        ids = torch.unique_consecutive(lp[: int(n)].argmax(-1)).tolist()
        out.append(re.sub(r" +", " ", "".join(CHARS[i] for i in ids if i != BLANK)).strip())
    return out


class CTCPrefixScorer:
    """CTC prefix probabilities of character strings for one utterance's (T, V) log-probs.

    States are cached per string, and a new string is extended from its longest cached prefix, so
    scoring the next token of a hypothesis costs a few vectorised passes over T (the recursions
    in probability space are first-order linear, solved with cumulative log-sum-exp).
    """

    def __init__(self, log_probs: torch.Tensor):
        x = log_probs.double()
        self.x = x
        self.T = x.shape[0]
        self.cum_blank = torch.cumsum(x[:, BLANK], 0)
        self.cum = torch.cumsum(x, 0)  # (T, V)
        neg = torch.full((self.T,), float("-inf"), dtype=torch.float64)
        # state: (r_n, r_b, prefix log-prob); the empty string ends in blank at every frame
        self.states: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {"": (neg, self.cum_blank.clone(), 0.0)}

    def _extend(self, parents: list[str], chars: list[str]) -> None:
        """Add the states of parent + char for each pair (batched over pairs)."""
        r_n = torch.stack([self.states[p][0] for p in parents])  # (K, T)
        r_b = torch.stack([self.states[p][1] for p in parents])
        idx = torch.tensor([CHAR_INDEX[c] for c in chars])
        same = torch.tensor([bool(p) and p[-1] == c for p, c in zip(parents, chars)])
        # phi[t]: paths of the parent that may be followed by c at t + 1
        phi = torch.where(same[:, None], r_b, torch.logaddexp(r_n, r_b))
        start = torch.tensor([0.0 if not p else float("-inf") for p in parents], dtype=torch.float64)
        # log of "c may start at frame s": s = 0 only for the empty parent, else phi[s - 1]
        enter = torch.cat([start[:, None], phi[:, :-1]], 1)  # (K, T)
        xc = self.x[:, idx].T  # (K, T)
        lc = torch.cumsum(xc, 1)  # log prod x[0..t, c]
        # r_n'[t] = sum_{s<=t} enter[s] * prod_{u=s..t} x[u, c]
        new_n = lc + torch.logcumsumexp(enter - lc + xc, 1)
        # r_b'[t] = sum_{s<=t} r_n'[s-1] * prod_{u=s..t} x[u, blank]
        lb = self.cum_blank[None]
        xb = self.x[:, BLANK][None]
        prev_n = torch.cat([torch.full_like(new_n[:, :1], float("-inf")), new_n[:, :-1]], 1)
        new_b = lb + torch.logcumsumexp(prev_n - lb + xb, 1)
        psi = torch.logsumexp(enter + xc, 1)
        for k, (p, c) in enumerate(zip(parents, chars)):
            self.states[p + c] = (new_n[k], new_b[k], float(psi[k]))

    def prefix_scores(self, strings: Sequence[str]) -> list[float]:
        """log P(the audio's characters start with s) for each string."""
        todo = {s for s in strings if s not in self.states}
        while todo:
            # extend each missing string's longest cached prefix by one character, all at once
            parents, chars, nxt = [], [], set()
            for s in todo:
                n = len(s) - 1
                while s[:n] not in self.states:
                    n -= 1
                parents.append(s[:n])
                chars.append(s[n])
                if n + 1 < len(s):
                    nxt.add(s)
            pairs = dict.fromkeys(zip(parents, chars))  # a shared parent+char once
            self._extend([p for p, _ in pairs], [c for _, c in pairs])
            todo = nxt
        return [self.states[s][2] for s in strings]

    def keep_only(self, strings: set[str]) -> None:
        """Forget every cached state but these strings' (and the empty one's): a decoder calls this
        with its live prefixes each step, so memory stays (hypotheses x candidates x frames)."""
        self.states = {k: v for k, v in self.states.items() if k in strings or not k}

    def full_score(self, s: str) -> float:
        """log P(the audio's characters are exactly s)."""
        self.prefix_scores([s])
        r_n, r_b, _ = self.states[s]
        return float(torch.logaddexp(r_n[-1], r_b[-1]))


class CTCPrefixLogitsProcessor:
    """A transformers LogitsProcessor for joint CTC / LLM decoding (see the module docstring).

    Rows of ``input_ids`` are the generated tokens of each hypothesis: row r belongs to utterance
    r // num_beams.  Only the LLM's ``top_k`` candidates per row, and end-of-text, are scored; the rest
    are ruled out.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer, weight: float,
                 num_beams: int = 1, top_k: int = 8, silent_penalty: float = math.log(2),
                 max_length_ratio: float = 0.0, max_length_margin: int = 10):
        self.scorers = [CTCPrefixScorer(lp[: int(n)]) for lp, n in zip(log_probs, lengths)]
        # max_length_ratio > 0: hypotheses longer than ratio x the best path's characters (+ margin) must end
        self.max_chars = ([int(max_length_ratio * len(text) + max_length_margin)
                           for text in greedy_chars(log_probs, lengths)] if max_length_ratio > 0 else None)
        self.tokenizer = tokenizer
        self.weight = float(weight)
        self.num_beams = num_beams
        self.top_k = top_k
        self.silent_penalty = silent_penalty
        self.eos = set(_as_list(getattr(tokenizer, "eos_token_id", None)))
        self.special = sorted(set(getattr(tokenizer, "all_special_ids", [])) - self.eos)
        self._text: dict[tuple[int, ...], str] = {}

    def _decode(self, ids: tuple[int, ...]) -> str:
        if ids not in self._text:
            self._text[ids] = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return self._text[ids]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        log_p = scores.float().log_softmax(-1)
        if self.special:  # turn markers other than end-of-text never belong in a transcript
            log_p[:, self.special] = float("-inf")
        top = log_p.topk(min(self.top_k, log_p.shape[-1]), -1).indices
        out = torch.full_like(log_p, float("-inf"))
        w = self.weight
        prefixes = [tuple(ids) for ids in input_ids.tolist()]
        bases = [to_chars(self._decode(prefix), partial=True) for prefix in prefixes]
        live: dict[int, set[str]] = {}
        for row, base in enumerate(bases):
            live.setdefault(row // self.num_beams, set()).add(base)
        for utterance, strings in live.items():  # states of dropped hypotheses are not needed again
            self.scorers[utterance].keep_only(strings)
        for row, (prefix, base) in enumerate(zip(prefixes, bases)):
            scorer = self.scorers[row // self.num_beams]
            base_score = scorer.prefix_scores([base])[0]
            # past the length cap, or a prefix the head gives no probability at all (more characters
            # than frames): nothing but ending is scored (Δ of an impossible prefix would be nan)
            end = scorer.full_score(base.rstrip()) - base_score  # Δ of ending here
            capped = self.max_chars is not None and len(base) > self.max_chars[row // self.num_beams]
            if (capped or not math.isfinite(base_score)) and self.eos:
                end = end if math.isfinite(end) else -1e4  # ending must stay possible, however unlikely
                for c in self.eos:
                    if c < log_p.shape[-1]:
                        llm = log_p[row, c] if torch.isfinite(log_p[row, c]) else 0.0
                        out[row, c] = (1 - w) * llm + w * end
                continue
            spelled, silent, ends = {}, [], []
            # end-of-text is always a candidate, in the LLM's top k or not: once the hypothesis has
            # spelled all the audio holds, the CTC score can end it (else only the LLM could)
            candidates = top[row].tolist()
            candidates += [e for e in self.eos if e not in candidates and e < log_p.shape[-1]]
            for c in candidates:
                if not torch.isfinite(log_p[row, c]):
                    continue
                if c in self.eos:
                    ends.append(c)
                    continue
                chars = to_chars(self._decode(prefix + (c,)), partial=True)
                if chars == base:
                    silent.append(c)  # punctuation, casing: spells nothing new
                else:
                    spelled[c] = chars
            delta = dict(zip(spelled, (v - base_score for v in scorer.prefix_scores(list(spelled.values())))))
            # a token that spells nothing (punctuation after a space, a second newline) only
            # postpones the characters still to come: it scores as the best token that spells
            # something, less silent_penalty, so that waiting never wins and never loops
            best = max(delta.values(), default=0.0)
            delta.update({c: best - self.silent_penalty for c in silent})
            delta.update({c: end for c in ends})
            for c, d in delta.items():
                out[row, c] = (1 - w) * log_p[row, c] + w * d
        return out


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]
