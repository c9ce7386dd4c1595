"""TextStatsAdapter: the load-once-per-worker pattern.

``setup()`` builds the adapter's "model" (a stopword table and a small
sentiment lexicon with stemmed lookup) exactly once per worker process,
before the worker reports ready; every call reuses it. ``model_info()``
exposes the load count and load time so a test (or a user) can see that
``load_count`` stays 1 however many calls the worker serves.

A real adapter would load a tokenizer, an ML model or open a database
connection in the same place, and release it in ``teardown()``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from typing import Any, Dict, FrozenSet, List

from snakepit_bridge import BaseAdapter, tool

# How many times a model was loaded in this process (across instances), so
# a per-request instantiation bug would show up as load_count > 1.
_PROCESS_LOADS = 0
_PROCESS_LOADS_LOCK = threading.Lock()

_STOPWORDS = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours yourself yourselves
"""

_LEXICON = {
    "good": 1.0, "great": 2.0, "excellent": 2.5, "love": 2.0, "like": 0.5, "happy": 1.5, "nice": 1.0,
    "fast": 0.5, "clean": 0.5, "win": 1.0, "best": 2.0, "fun": 1.0, "calm": 0.5, "safe": 0.5,
    "bad": -1.0, "terrible": -2.5, "awful": -2.0, "hate": -2.0, "sad": -1.5, "slow": -0.5,
    "bug": -1.0, "crash": -1.5, "leak": -1.0, "broken": -1.5, "worst": -2.0, "lose": -1.0, "fail": -1.0,
}

_WORD_RE = re.compile(r"[A-Za-z']+")


def _stem(word: str) -> str:
    # A deliberately tiny suffix stripper: enough for "crashes" -> "crash".
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


class TextStatsAdapter(BaseAdapter):
    """Word statistics and a lexicon sentiment score over a per-worker model."""

    def __init__(self) -> None:
        self.stopwords: FrozenSet[str] = frozenset()
        self.lexicon: Dict[str, float] = {}
        self.load_count = 0
        self.load_seconds = 0.0
        self.loaded_at = 0.0
        self._calls = 0
        self._lock = threading.Lock()

    def setup(self) -> None:
        global _PROCESS_LOADS
        t0 = time.perf_counter()
        self.stopwords = frozenset(_STOPWORDS.split())
        # Index the lexicon under stems too, so inflected forms score.
        lexicon = dict(_LEXICON)
        for word, score in _LEXICON.items():
            lexicon.setdefault(_stem(word), score)
        self.lexicon = lexicon
        self.load_count += 1
        with _PROCESS_LOADS_LOCK:
            _PROCESS_LOADS += 1
        self.loaded_at = time.time()
        self.load_seconds = time.perf_counter() - t0

    def teardown(self) -> None:
        self.lexicon = {}
        self.stopwords = frozenset()

    def _require_model(self) -> None:
        if not self.lexicon:
            raise RuntimeError("TextStatsAdapter.setup() has not run: the model is not loaded")

    @tool(description="Word counts, top content words and a lexicon sentiment score")
    def analyze(self, text: str, top: int = 5) -> Dict[str, Any]:
        """Analyse a text.

        Args:
            text: the text to analyse.
            top: how many of the most frequent content words to return.
        """
        self._require_model()
        with self._lock:
            self._calls += 1
        words = [w.lower().strip("'") for w in _WORD_RE.findall(text)]
        words = [w for w in words if w]
        content = [w for w in words if w not in self.stopwords]
        scored = [(w, self.lexicon.get(w, self.lexicon.get(_stem(w), 0.0))) for w in content]
        hits: List[Dict[str, Any]] = [{"word": w, "score": s} for w, s in scored if s]
        total = sum(s for _, s in scored)
        return {
            "words": len(words),
            "unique_words": len(set(words)),
            "content_words": len(content),
            "stopword_ratio": round(1 - len(content) / len(words), 4) if words else 0.0,
            "top": [{"word": w, "count": c} for w, c in Counter(content).most_common(max(top, 0))],
            "sentiment": round(total / len(content), 4) if content else 0.0,
            "label": "positive" if total > 0 else "negative" if total < 0 else "neutral",
            "lexicon_hits": hits,
        }

    @tool(description="Facts about the loaded model; load_count stays 1 for the worker's life")
    def model_info(self) -> Dict[str, Any]:
        with self._lock:
            calls = self._calls
        return {
            "load_count": self.load_count,
            "process_load_count": _PROCESS_LOADS,
            "load_seconds": self.load_seconds,
            "loaded_at_unix": self.loaded_at,
            "vocabulary_size": len(self.lexicon),
            "stopwords": len(self.stopwords),
            "analyze_calls": calls,
            "pid": os.getpid(),
        }
