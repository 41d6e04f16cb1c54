"""The n-gram baseline of evaluate.py: an interpolated Kneser-Ney model over token ids, fitted on train.bin, whose
bits per token and per note the model must beat; and the longest runs of tokens that samples share with train.bin
(memorization), found through shared k-grams."""
import numpy as np

MEMO_K = 16  # runs are found through shared 16-grams; shorter ones count as "< 16"


def split_pieces(ids, start_id):
    """A token stream of back-to-back pieces -> one array per piece."""
    starts = np.flatnonzero(ids == start_id)
    return [ids[a:b] for a, b in zip(starts, list(starts[1:]) + [len(ids)])]


class KneserNey:
    """Interpolated Kneser-Ney over token ids with one discount; the lowest order is interpolated with a uniform
    distribution, so no token has zero probability. Pieces are padded on the left, so every token has a history.

    The counts live in sorted numpy arrays: a k-gram is the exact integer sum of t_i * B^(k-1-i) with B = vocab+1
    (the pad is B-1), so nothing collides while B^n < 2^64, and lookups are binary searches. That lets it fit the
    whole training split of the corpus in seconds and a few hundred MB."""

    def __init__(self, n, vocab_size, discount=0.75):
        if (vocab_size + 1) ** n >= 2**64:
            raise ValueError(f"a {n}-gram over {vocab_size} tokens does not fit one 64-bit key")
        self.n, self.V, self.D, self.B = n, vocab_size, discount, np.uint64(vocab_size + 1)
        self.keys, self.counts = {}, {}       # k -> sorted k-gram keys, their counts (raw at n, continuation below)
        self.hist, self.total, self.distinct = {}, {}, {}  # k -> sorted histories, count after each, distinct next

    def grams(self, seq, k):
        """Keys of the k-grams of `seq` (uint64 array), one per window."""
        keys = np.zeros(max(len(seq) - k + 1, 0), dtype=np.uint64)
        for t in range(k):
            keys = keys * self.B + seq[t:len(seq) - k + 1 + t]
        return keys

    def padded(self, piece):
        return np.concatenate([np.full(self.n - 1, self.V, dtype=np.uint64), np.asarray(piece, dtype=np.uint64)])

    def fit(self, pieces):
        n = self.n
        self.keys[n], self.counts[n] = np.unique(np.concatenate([self.grams(self.padded(p), n) for p in pieces]
                                                                or [np.zeros(0, np.uint64)]), return_counts=True)
        for k in range(n - 1, 0, -1):  # continuation counts: in how many contexts does a gram appear
            self.keys[k], self.counts[k] = np.unique(self.keys[k + 1] % self.B ** np.uint64(k), return_counts=True)
        for k in range(1, n + 1):  # the keys are sorted, so each history's grams sit side by side
            self.hist[k], first, self.distinct[k] = np.unique(self.keys[k] // self.B, return_index=True,
                                                              return_counts=True)
            self.total[k] = np.add.reduceat(self.counts[k], first) if len(first) else first
        return self

    @staticmethod
    def lookup(keys, values, query):
        """values[keys == query] for each query, 0 where a query is absent."""
        if not len(keys):
            return np.zeros(len(query), dtype=values.dtype)
        i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        return np.where(keys[i] == query, values[i], 0)

    def probs(self, seq):
        """P(seq[i] | the n-1 tokens before it) for every i >= n-1 of a padded sequence."""
        p = np.full(len(seq) - self.n + 1, 1.0 / self.V)
        for k in range(1, self.n + 1):
            g = self.grams(seq, k)[self.n - k:]  # the k-gram ending at each predicted token
            h = g // self.B
            total = self.lookup(self.hist[k], self.total[k], h).astype(float)
            distinct = self.lookup(self.hist[k], self.distinct[k], h)
            c = self.lookup(self.keys[k], self.counts[k], g)
            seen = total > 0  # an unseen history leaves the lower order's estimate as it is
            p = np.where(seen, (np.maximum(c - self.D, 0) + self.D * distinct * p) / np.where(seen, total, 1), p)
        return p

    def prob(self, history, token):
        """P(token | the last n-1 tokens of history)."""
        return float(self.probs(self.padded(list(history) + [token])[-self.n:])[-1])

    def nats(self, piece):
        """Negative log-likelihood of a piece's tokens after its first (START)."""
        return float(-np.log(self.probs(self.padded(piece))[1:]).sum())


def longest_runs(samples, train, k=MEMO_K):
    """For each sample (int array), the longest run it shares with `train` (int array), or k-1 if none reaches k."""
    def hashes(a):
        h = np.zeros(max(len(a) - k + 1, 0), dtype=np.uint64)
        if not len(h):  # shorter than k: no k-gram to share
            return h
        for t in range(k):
            h = h * np.uint64(1_000_003) + a[t:len(a) - k + 1 + t].astype(np.uint64)
        return h
    th = hashes(train)
    order = np.argsort(th, kind="stable")
    sorted_h = th[order]
    runs = []
    for s in samples:
        best = k - 1
        for i, h in enumerate(hashes(s)):
            lo, hi = np.searchsorted(sorted_h, h), np.searchsorted(sorted_h, h, side="right")
            for j in order[lo:hi]:
                if i > 0 and j > 0 and s[i - 1] == train[j - 1]:
                    continue  # inside a longer run that started earlier
                n = min(len(s) - i, len(train) - j)
                eq = s[i:i + n] == train[j:j + n]
                best = max(best, n if eq.all() else int(np.argmin(eq)))
        runs.append(best)
    return runs
