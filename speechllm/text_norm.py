"""Text normalisation for scoring (WER/CER) and for matching sentences across corpora.

`normalize` follows Whisper's evaluation protocol (Radford et al. 2022, appendix C): English text goes
through Whisper's ``EnglishTextNormalizer`` (transformers' port: numbers to digits, "mr." -> "mister",
British -> American spelling, fillers dropped); other languages through ``BasicTextNormalizer``
(lower case, symbols and brackets removed). The English normaliser needs Whisper's spelling map
(``english.json``, 1,739 entries), which the bundled tiny.en checkpoint lacks; it is read from the
``whisper-normalizer`` package's data file, located without importing that package.

`text_key` is a cheaper, stricter key (NFKC, lower case, letters and digits only) used to find the
same sentence in two corpora, e.g. to keep evaluation sentences out of synthetic training text.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
from collections.abc import Callable

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[^\w']+|_")
_APOSTROPHES = re.compile(r"(?<!\w)'|'(?!\w)")


@functools.lru_cache(maxsize=1)
def english_spelling_mapping() -> dict[str, str]:
    """Whisper's British -> American spelling map (``english.json``); empty, with a warning, if absent."""
    from speechllm.paths import package_dir

    root = package_dir("whisper_normalizer")
    path = root / "normalizers" / "english.json" if root else None
    if path is None or not path.is_file():
        log.warning("Whisper's english.json (pip package whisper-normalizer) not found: English WER is computed "
                    "without the British->American spelling map")
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def normalizer(language: str | None = "en") -> Callable[[str], str]:
    """The scoring normaliser for ``language`` (ISO 639-1 code or name; None means English)."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language is None or language.lower() in ("en", "eng", "english"):
        return EnglishTextNormalizer(english_spelling_mapping())
    return BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> str:
    """``text`` as Whisper's evaluation normaliser for ``language`` writes it (single spaces, stripped)."""
    return " ".join(normalizer(language)(text).split())


def text_key(text: str) -> str:
    """A matching key: NFKC, lower case, only letters, digits and inner apostrophes, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = _APOSTROPHES.sub(" ", _NON_WORD.sub(" ", text))
    return " ".join(text.split())
