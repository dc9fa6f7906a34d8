"""Step 4b: fill the caption language a book did not print (zh->en, en->zh) by machine translation.

argostranslate runs offline from `.argosmodel` packages installed by path. Key ophthalmic terms
come from a glossary (`pipeline/data/glossary_zh_en.tsv`, extensible with user TSVs) so that
`视网膜中央静脉阻塞` always becomes `central retinal vein occlusion`: the terms are protected
before translation and the glossary's target term is written into the output. Figure
cross-references (`同图1-1`) are carried over the same way. Translations are cached by
(text sent to the engine, direction, package version), in memory and optionally in SQLite,
so a rebuild does not translate again. With no package for a direction the build still
completes: the caption is marked missing and one warning per direction says how to install one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.metadata
import json
import logging
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from pipeline.clean import (
    DATA_DIR,
    Language,
    find_cross_references,
    is_cjk,
    normalise_punctuation,
)
from foundation.records import Pair

logger = logging.getLogger(__name__)

GLOSSARY_FILE = DATA_DIR / "glossary_zh_en.tsv"
INSTALL_HINT = (
    "install a package by path with `argostranslate.package.install_from_path('translate-{src}_{tgt}.argosmodel')` "
    "or the translator's package_files option (see docs/translation.md)"
)


# --- glossary ----------------------------------------------------------------------------


class GlossaryEntry(BaseModel):
    """One term pair; English variants are other spellings recognised in English source text."""

    zh: str = Field(description="Chinese term.")
    en: str = Field(description="English term written into translations.")
    en_variants: list[str] = Field(default_factory=list, description="Other English spellings of the same term.")


class TermMatch(BaseModel):
    """A protected span of source text and the text that replaces it in the translation."""

    start: int = Field(description="Start offset in the source text.")
    end: int = Field(description="End offset (exclusive) in the source text.")
    source: str = Field(description="The matched source text.")
    target: str = Field(description="Its fixed translation.")


class Glossary:
    """Ophthalmic term pairs, matched longest first so compound terms win over their parts."""

    def __init__(self, entries: Sequence[GlossaryEntry]):
        self.entries = list(entries)
        zh_to_en: dict[str, str] = {}
        en_to_zh: dict[str, str] = {}
        for entry in self.entries:
            zh_to_en[entry.zh] = entry.en
            for spelling in (entry.en, *entry.en_variants):
                en_to_zh.setdefault(spelling.lower() if not _is_abbreviation(spelling) else spelling, entry.zh)
        self._zh_to_en = zh_to_en
        self._en_to_zh = en_to_zh
        self._zh_pattern = _alternation(zh_to_en)
        words = [term for term in en_to_zh if not _is_abbreviation(term)]
        abbreviations = [term for term in en_to_zh if _is_abbreviation(term)]
        self._en_word_pattern = (
            re.compile(rf"(?<![A-Za-z0-9-])(?:{'|'.join(_escaped_longest_first(words))})(?![A-Za-z0-9-])", re.IGNORECASE)
            if words
            else None
        )
        self._en_abbreviation_pattern = (
            re.compile(rf"(?<![A-Za-z0-9])(?:{'|'.join(_escaped_longest_first(abbreviations))})(?![A-Za-z0-9])")
            if abbreviations
            else None
        )

    @classmethod
    def from_files(cls, paths: Sequence[Path]) -> Glossary:
        """Read glossary TSVs (zh, en, en_variants); later files override earlier ones."""
        merged: dict[str, GlossaryEntry] = {}
        for path in paths:
            for entry in read_glossary(Path(path)):
                merged[entry.zh] = entry
        return cls(list(merged.values()))

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, text: str, language: Language) -> list[TermMatch]:
        """Non-overlapping glossary terms in `text` with their translation, in order."""
        matches: list[TermMatch] = []
        if language == "zh":
            if self._zh_pattern is not None:
                for match in self._zh_pattern.finditer(text):
                    matches.append(TermMatch(start=match.start(), end=match.end(), source=match.group(0), target=self._zh_to_en[match.group(0)]))
            return matches
        for pattern in (self._en_word_pattern, self._en_abbreviation_pattern):
            if pattern is None:
                continue
            for match in pattern.finditer(text):
                if any(match.start() < m.end and m.start < match.end() for m in matches):
                    continue
                key = match.group(0) if pattern is self._en_abbreviation_pattern else match.group(0).lower()
                matches.append(TermMatch(start=match.start(), end=match.end(), source=match.group(0), target=self._en_to_zh[key]))
        return sorted(matches, key=lambda m: m.start)

    def translate_term(self, term: str, source: Language) -> str | None:
        """The fixed translation of one glossary term, or None when it is not in the glossary."""
        if source == "zh":
            return self._zh_to_en.get(term)
        return self._en_to_zh.get(term) or self._en_to_zh.get(term.lower())


def _is_abbreviation(term: str) -> bool:
    return any(ch.isupper() for ch in term) and not any(ch.islower() for ch in term.replace("/", ""))


def _escaped_longest_first(terms: Sequence[str]) -> list[str]:
    return [re.escape(term) for term in sorted(set(terms), key=len, reverse=True)]


def _alternation(terms: dict[str, str]) -> re.Pattern[str] | None:
    return re.compile("|".join(_escaped_longest_first(list(terms)))) if terms else None


def read_glossary(path: Path) -> list[GlossaryEntry]:
    """Read one glossary TSV: header `zh en en_variants`, '#' comments, variants split by ';'."""
    entries: list[GlossaryEntry] = []
    with open(path, encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or rows[0][:2] != ["zh", "en"]:
        raise ValueError(f"{path}: a glossary needs a header row 'zh<TAB>en<TAB>en_variants'")
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}: glossary row {line_number} needs a Chinese and an English term: {row!r}")
        variants = [v.strip() for v in row[2].split(";") if v.strip()] if len(row) > 2 else []
        entries.append(GlossaryEntry(zh=row[0].strip(), en=row[1].strip(), en_variants=variants))
    return entries


@functools.lru_cache(maxsize=4)
def _builtin_glossary() -> Glossary:
    return Glossary.from_files([GLOSSARY_FILE])


def load_glossary(extra_files: Sequence[Path] = (), use_builtin: bool = True) -> Glossary:
    """The built-in glossary extended (and overridden) by user TSV files."""
    if not extra_files and use_builtin:
        return _builtin_glossary()
    return Glossary.from_files(([GLOSSARY_FILE] if use_builtin else []) + [Path(p) for p in extra_files])


def protected_spans(text: str, source: Language, glossary: Glossary) -> list[TermMatch]:
    """Spans kept out of machine translation: figure cross-references, then glossary terms."""
    target: Language = "en" if source == "zh" else "zh"
    spans: list[TermMatch] = []
    for ref in find_cross_references(text):
        label = f"{ref.figure_id}{ref.panel or ''}"
        if target == "en":
            rendered = f"Same patient as Figure {label}" if ref.kind == "same_case" else f"(see Figure {label})"
        else:
            rendered = f"同图{label}" if ref.kind == "same_case" else f"（见图{label}）"
        spans.append(TermMatch(start=ref.start, end=ref.end, source=text[ref.start:ref.end], target=rendered))
    for match in glossary.find(text, source):
        if not any(match.start < s.end and s.start < match.end for s in spans):
            spans.append(match)
    return sorted(spans, key=lambda s: s.start)


# --- results and the translator interface ------------------------------------------------


class TranslationResult(BaseModel):
    """One text's translation and where it came from."""

    source_text: str = Field(description="Text that was translated (the printed caption).")
    text: str | None = Field(description="Translation, or None when no package covers the direction.")
    source: Language = Field(description="Language of source_text.")
    target: Language = Field(description="Language of text.")
    origin: Literal["machine", "missing"] = Field(description="'machine' translated, or 'missing' when it could not be.")
    engine: str | None = Field(None, description="Engine and version, e.g. 'argostranslate 1.11.0'.")
    package: str | None = Field(None, description="Direction and package version, e.g. 'zh->en 1.9'.")
    glossary_terms: list[str] = Field(default_factory=list, description="Source terms whose glossary translation was enforced.")
    cached: bool = Field(False, description="True when every engine call for this text came from the cache.")


class Translator(Protocol):
    """Anything that translates a batch of texts in one direction."""

    def translate(self, texts: list[str], source: Language, target: Language) -> list[TranslationResult]: ...


class TranslatorOptions(BaseModel):
    """How the argostranslate translator finds packages, glossaries and its cache."""

    packages_dir: Path | None = Field(
        None,
        description="Directory argostranslate installs packages into and loads them from (its ARGOS_PACKAGES_DIR); "
        "None keeps argostranslate's own setting.",
    )
    package_files: list[Path] = Field(
        default_factory=list, description=".argosmodel files to install by path before translating."
    )
    argos_home: Path | None = Field(
        None,
        description="Folder for argostranslate's data, config and cache directories (used when argostranslate is "
        "first imported); None keeps the user's defaults.",
    )
    chunk_type: str = Field(
        "SPACY",
        description="argostranslate sentence splitter (ARGOS_CHUNK_TYPE) unless the environment sets one; SPACY "
        "works offline, the default splitter downloads stanza models.",
    )
    glossary_files: list[Path] = Field(default_factory=list, description="Extra glossary TSVs (zh, en, en_variants).")
    use_builtin_glossary: bool = Field(True, description="Start from the project's ophthalmic glossary.")
    cache_path: Path | None = Field(None, description="SQLite file that keeps translations across runs; None: memory only.")
    beam_size: int = Field(4, ge=1, description="Beam size for CTranslate2 decoding.")
    max_batch_size: int = Field(32, ge=1, description="Sentences per CTranslate2 batch.")
    max_decoding_length: int = Field(256, ge=1, description="Longest translation of one sentence, in tokens.")


# --- cache -------------------------------------------------------------------------------


class TranslationCache:
    """(text, direction, package) -> translation, in memory and optionally in an SQLite file."""

    def __init__(self, path: Path | None = None):
        self._memory: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS translations (text TEXT, direction TEXT, package TEXT, translation TEXT, "
                "PRIMARY KEY (text, direction, package))"
            )
            self._db.commit()

    def get(self, text: str, direction: str, package: str) -> str | None:
        key = (text, direction, package)
        with self._lock:
            if key in self._memory:
                return self._memory[key]
            if self._db is None:
                return None
            row = self._db.execute(
                "SELECT translation FROM translations WHERE text=? AND direction=? AND package=?", key
            ).fetchone()
        if row is not None:
            self._memory[key] = row[0]
            return row[0]
        return None

    def put_many(self, items: Sequence[tuple[str, str, str, str]]) -> None:
        with self._lock:
            for text, direction, package, translation in items:
                self._memory[(text, direction, package)] = translation
            if self._db is not None and items:
                self._db.executemany("INSERT OR REPLACE INTO translations VALUES (?, ?, ?, ?)", items)
                self._db.commit()

    def __len__(self) -> int:
        return len(self._memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# --- argostranslate setup ----------------------------------------------------------------

_ARGOS_LOCK = threading.RLock()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block (argostranslate reads them at import)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _chunk_type_name(options: TranslatorOptions) -> str:
    return (os.environ.get("ARGOS_CHUNK_TYPE") or options.chunk_type).upper()


def _import_argos(options: TranslatorOptions) -> Any:
    """Import argostranslate configured for this translator and return its `settings` module.

    argostranslate reads its directories and sentence splitter from the environment when first
    imported, so they are set around that import; later translators update `settings` directly.
    With the spaCy splitter, importing `argostranslate.sbd` would download a multilingual spaCy
    model; the import therefore runs with the rule-based splitter name and switches after.
    """
    with _ARGOS_LOCK:
        chunk_name = _chunk_type_name(options)
        if "argostranslate.settings" not in sys.modules:
            env = {"ARGOS_CHUNK_TYPE": "ARGOSTRANSLATE" if chunk_name == "SPACY" else chunk_name}
            if options.packages_dir is not None:
                env["ARGOS_PACKAGES_DIR"] = str(options.packages_dir)
            if options.argos_home is not None:
                env["XDG_DATA_HOME"] = str(options.argos_home / "data")
                env["XDG_CONFIG_HOME"] = str(options.argos_home / "config")
                env["XDG_CACHE_HOME"] = str(options.argos_home / "cache")
            with _environment(env):
                import argostranslate.package  # noqa: F401
                import argostranslate.sbd  # noqa: F401
                import argostranslate.settings
                import argostranslate.translate  # noqa: F401
        import argostranslate.sbd as sbd
        from argostranslate import settings

        settings.chunk_type = settings.chunk_type_mapping[chunk_name]
        if settings.chunk_type == settings.ChunkType.SPACY and sbd._cached_spacy_path is None:
            sbd._cached_spacy_path = _blank_multilingual_spacy(Path(settings.cache_dir))
        return settings


def _default_package_dirs(options: TranslatorOptions) -> list[Path]:
    """Where argostranslate will look for packages, worked out without importing it."""
    if options.packages_dir is not None:
        return [Path(options.packages_dir)]
    if options.argos_home is not None:  # this translator's own home, whatever another one set up
        return [options.argos_home / "data" / "argos-translate" / "packages"]
    if "argostranslate.settings" in sys.modules:
        return [Path(d) for d in sys.modules["argostranslate.settings"].package_dirs]
    if os.environ.get("ARGOS_PACKAGES_DIR"):
        return [Path(os.environ["ARGOS_PACKAGES_DIR"])]
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return [data_home / "argos-translate" / "packages"]


def _maybe_installed(options: TranslatorOptions, source: Language, target: Language) -> bool:
    """False only when no package directory holds a package for this direction."""
    for directory in _default_package_dirs(options):
        for metadata_file in directory.glob("*/metadata.json"):
            try:
                metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return True  # unreadable: let argostranslate decide
            if (
                str(metadata.get("from_code", "")).split("_")[0] == source
                and str(metadata.get("to_code", "")).split("_")[0] == target
            ):
                return True
    return False


def _blank_multilingual_spacy(cache_dir: Path) -> Path:
    """A blank multilingual spaCy pipeline for packages that ship no sentence splitter of their own.

    argostranslate adds its rule-based sentencizer to it; this stands in for the downloadable
    `xx_sent_ud_sm` model when there is no network.
    """
    import spacy

    path = cache_dir / "spacy-blank-xx"
    if not (path / "config.cfg").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        spacy.blank("xx").to_disk(path)
    return path


def install_packages(files: Sequence[Path], options: TranslatorOptions | None = None) -> list[Path]:
    """Install `.argosmodel` files by path with argostranslate into options.packages_dir (or argos's own).

    Returns the package folders the installation created.
    """
    options = options or TranslatorOptions()
    packages_dir = options.packages_dir
    settings = _import_argos(options)
    import argostranslate.package

    installed: list[Path] = []
    with _ARGOS_LOCK:
        target = Path(packages_dir) if packages_dir is not None else _default_package_dirs(options)[0]
        target.mkdir(parents=True, exist_ok=True)
        previous = settings.package_data_dir
        settings.package_data_dir = target
        try:
            for file in files:
                path = Path(file)
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: translation package file not found")
                before = {p.name for p in target.iterdir()}
                argostranslate.package.install_from_path(path)
                new = sorted(p for p in target.iterdir() if p.name not in before)
                installed.extend(new)
                logger.info("Installed translation package %s into %s", path.name, target)
        finally:
            settings.package_data_dir = previous
    return installed


class _LoadedPackage:
    """An installed argostranslate package ready to translate one direction."""

    def __init__(self, package: Any, options: TranslatorOptions):
        from argostranslate.translate import Language as ArgosLanguage
        from argostranslate.translate import PackageTranslation

        self.package = package
        self.label = f"{package.from_code}->{package.to_code} {package.package_version}"
        self.translation = PackageTranslation(
            ArgosLanguage(package.from_code, package.from_name), ArgosLanguage(package.to_code, package.to_name), package
        )
        self.options = options
        self._model: Any = None

    def translate_batch(self, texts: Sequence[str]) -> list[str]:
        """Split each text into sentences, decode all sentences in one CTranslate2 batch, rejoin."""
        import ctranslate2
        from argostranslate import settings

        if self._model is None:
            self._model = ctranslate2.Translator(
                str(self.package.package_path / "model"),
                device=settings.device,
                inter_threads=settings.inter_threads,
                intra_threads=settings.intra_threads,
                compute_type=settings.compute_type,
            )
        sentence_counts: list[int] = []
        tokenised: list[list[str]] = []
        for text in texts:
            sentences = [s for s in self.translation.sentencizer.split_sentences(text) if s.strip()] or [text]
            sentence_counts.append(len(sentences))
            tokenised.extend(self.package.tokenizer.encode(sentence) for sentence in sentences)
        prefix = self.package.target_prefix
        outputs = self._model.translate_batch(
            tokenised,
            target_prefix=[[prefix]] * len(tokenised) if prefix else None,
            replace_unknowns=True,
            max_batch_size=self.options.max_batch_size,
            batch_type="examples",
            beam_size=self.options.beam_size,
            num_hypotheses=1,
            length_penalty=0.2,
            max_decoding_length=self.options.max_decoding_length,
        )
        decoded = []
        for output in outputs:
            value = self.package.tokenizer.decode(output.hypotheses[0])
            if prefix and value.startswith(prefix):
                value = value[len(prefix):]
            decoded.append(value.strip())
        results: list[str] = []
        position = 0
        target_is_zh = self.package.to_code.startswith("zh")
        for count in sentence_counts:
            parts = decoded[position:position + count]
            position += count
            results.append(("" if target_is_zh else " ").join(p for p in parts if p))
        return results


# --- the argostranslate translator -------------------------------------------------------

_PLACEHOLDER = "QX{index}Q"
_PLACEHOLDER_RE = re.compile(r"QX\s?(\d+)\s?Q")


def restore_placeholders(translated: str, spans: Sequence[TermMatch]) -> str | None:
    """Put each span's target back for its placeholder; None when the engine lost or repeated one."""
    found = [int(m.group(1)) for m in _PLACEHOLDER_RE.finditer(translated)]
    if sorted(found) != list(range(len(spans))):
        return None
    return _PLACEHOLDER_RE.sub(lambda m: f" {spans[int(m.group(1))].target} ", translated)


def _join_pieces(pieces: Sequence[str], target: Language) -> str:
    if target == "zh":
        return "".join(piece.strip() for piece in pieces)
    return " ".join(piece.strip() for piece in pieces if piece.strip())


class ArgosTranslator:
    """Translator on installed argostranslate packages with glossary enforcement and a cache."""

    def __init__(self, options: TranslatorOptions | None = None):
        self.options = options or TranslatorOptions()
        self.glossary = load_glossary(self.options.glossary_files, self.options.use_builtin_glossary)
        self.cache = TranslationCache(self.options.cache_path)
        self.engine = f"argostranslate {importlib.metadata.version('argostranslate')}"
        self._packages: dict[tuple[str, str], _LoadedPackage | None] = {}
        self._warned: set[tuple[str, str]] = set()
        self.engine_calls = 0
        if self.options.package_files:
            install_packages(self.options.package_files, self.options)

    def _package_for(self, source: Language, target: Language) -> _LoadedPackage | None:
        key = (source, target)
        if key not in self._packages and not _maybe_installed(self.options, source, target):
            self._packages[key] = None  # importing argostranslate (spaCy, torch) costs seconds: skip it
        if key not in self._packages:
            _import_argos(self.options)
            import argostranslate.package
            from packaging.version import InvalidVersion, Version

            directories = [d for d in _default_package_dirs(self.options) if d.is_dir()]
            candidates = [
                p
                for p in argostranslate.package.get_installed_packages(directories)
                if p.type == "translate" and p.from_code.split("_")[0] == source and p.to_code.split("_")[0] == target
            ]

            def version_key(package: Any) -> Version:
                try:
                    return Version(package.package_version)
                except InvalidVersion:
                    return Version("0")

            chosen = max(candidates, key=version_key) if candidates else None
            self._packages[key] = _LoadedPackage(chosen, self.options) if chosen is not None else None
            if chosen is not None:
                logger.info("Translating %s->%s with %s (%s)", source, target, chosen.package_path.name, self.engine)
        return self._packages[key]

    def available(self, source: Language, target: Language) -> bool:
        """True when an installed package translates this direction."""
        return self._package_for(source, target) is not None

    def _warn_missing(self, source: Language, target: Language) -> None:
        if (source, target) in self._warned:
            return
        self._warned.add((source, target))
        where = self.options.packages_dir or "argostranslate's package directory"
        logger.warning(
            "No %s->%s translation package is installed in %s: captions that need %s->%s translation are left "
            "missing. To fill them, %s.",
            source, target, where, source, target, INSTALL_HINT.format(src=source, tgt=target),
        )

    def translate(self, texts: list[str], source: Language, target: Language) -> list[TranslationResult]:
        """Translate a batch in one direction; glossary terms and cross-references keep fixed translations."""
        if source == target:
            raise ValueError(f"source and target language are both {source!r}")
        loaded = self._package_for(source, target)
        protected = [protected_spans(text, source, self.glossary) for text in texts]
        if loaded is None:
            self._warn_missing(source, target)
            return [
                TranslationResult(source_text=text, text=None, source=source, target=target, origin="missing",
                                  glossary_terms=[s.source for s in spans])
                for text, spans in zip(texts, protected)
            ]
        direction = f"{source}->{target}"
        with_placeholders = [self._with_placeholders(text, spans) for text, spans in zip(texts, protected)]
        first_pass, first_cached = self._engine(loaded, direction, with_placeholders)
        outputs: list[str | None] = [
            restore_placeholders(out, spans) if spans else out for out, spans in zip(first_pass, protected)
        ]
        cached = list(first_cached)
        # Where the engine lost a placeholder, translate the pieces between protected spans instead.
        retry = [i for i, out in enumerate(outputs) if out is None]
        pieces_by_text = {i: self._between_spans(texts[i], protected[i]) for i in retry}
        flat = [piece for i in retry for piece in pieces_by_text[i] if piece.strip()]
        piece_out, piece_cached = self._engine(loaded, direction, flat)
        translated_pieces = iter(zip(piece_out, piece_cached))
        for i in retry:
            assembled: list[str] = []
            all_cached = cached[i]
            for index, piece in enumerate(pieces_by_text[i]):
                if piece.strip():
                    text_out, was_cached = next(translated_pieces)
                    assembled.append(text_out)
                    all_cached = all_cached and was_cached
                if index < len(protected[i]):
                    assembled.append(protected[i][index].target)
            outputs[i] = _join_pieces(assembled, target)
            cached[i] = all_cached
        results = []
        for text, spans, out, was_cached in zip(texts, protected, outputs, cached):
            results.append(
                TranslationResult(
                    source_text=text,
                    text=normalise_punctuation(out or "", target),
                    source=source,
                    target=target,
                    origin="machine",
                    engine=self.engine,
                    package=loaded.label,
                    glossary_terms=[s.source for s in spans],
                    cached=was_cached,
                )
            )
        return results

    @staticmethod
    def _with_placeholders(text: str, spans: Sequence[TermMatch]) -> str:
        pieces: list[str] = []
        position = 0
        for index, span in enumerate(spans):
            pieces.append(text[position:span.start])
            pieces.append(f" {_PLACEHOLDER.format(index=index)} " if not _cjk_side(text, span) else _PLACEHOLDER.format(index=index))
            position = span.end
        pieces.append(text[position:])
        return re.sub(r"[ ]{2,}", " ", "".join(pieces)).strip()

    @staticmethod
    def _between_spans(text: str, spans: Sequence[TermMatch]) -> list[str]:
        pieces: list[str] = []
        position = 0
        for span in spans:
            pieces.append(text[position:span.start])
            position = span.end
        pieces.append(text[position:])
        return pieces

    def _engine(self, loaded: _LoadedPackage, direction: str, texts: Sequence[str]) -> tuple[list[str], list[bool]]:
        """Translate through the cache: only texts never seen with this package reach the engine."""
        outputs: list[str | None] = [self.cache.get(text, direction, loaded.label) for text in texts]
        cached = [out is not None for out in outputs]
        todo = sorted({text for text, out in zip(texts, outputs) if out is None})
        if todo:
            self.engine_calls += 1
            translated = dict(zip(todo, loaded.translate_batch(todo)))
            self.cache.put_many([(text, direction, loaded.label, translated[text]) for text in todo])
            outputs = [out if out is not None else translated[text] for text, out in zip(texts, outputs)]
        return [out or "" for out in outputs], cached

    def close(self) -> None:
        self.cache.close()


def _cjk_side(text: str, span: TermMatch) -> bool:
    before = text[span.start - 1] if span.start > 0 else ""
    after = text[span.end] if span.end < len(text) else ""
    return (bool(before) and is_cjk(before)) or (bool(after) and is_cjk(after))


# --- pairs -------------------------------------------------------------------------------


def _present(text: str | None) -> bool:
    return bool(text and text.strip())


def fill_missing_language(pairs: list[Pair], translator: Translator) -> list[Pair]:
    """Return copies of the pairs with the missing caption language machine-translated.

    Printed captions are marked 'printed'; translated ones 'machine' with the engine and package
    in `translation_engine`; where no package covers the direction the caption stays None,
    its origin 'missing', and the pair gets a reason (the translator warns once per direction).
    """
    updated = [pair.model_copy(deep=True) for pair in pairs]
    needs: dict[tuple[Language, Language], list[int]] = {("zh", "en"): [], ("en", "zh"): []}
    for index, pair in enumerate(updated):
        if _present(pair.caption_en) and pair.caption_en_origin == "missing":
            pair.caption_en_origin = "printed"
        if _present(pair.caption_zh) and pair.caption_zh_origin == "missing":
            pair.caption_zh_origin = "printed"
        if _present(pair.caption_zh) and not _present(pair.caption_en):
            needs[("zh", "en")].append(index)
        elif _present(pair.caption_en) and not _present(pair.caption_zh):
            needs[("en", "zh")].append(index)
    for (source, target), indices in needs.items():
        if not indices:
            continue
        texts = [getattr(updated[i], f"caption_{source}") for i in indices]
        for index, result in zip(indices, translator.translate(texts, source, target)):
            pair = updated[index]
            if result.origin == "machine" and result.text:
                setattr(pair, f"caption_{target}", result.text)
                setattr(pair, f"caption_{target}_origin", "machine")
                pair.translation_engine = f"{result.engine} ({result.package})"
                pair.reasons.append(f"caption_{target} machine-translated from the printed {source} caption ({result.package})")
            else:
                setattr(pair, f"caption_{target}", None)
                setattr(pair, f"caption_{target}_origin", "missing")
                pair.reasons.append(f"caption_{target} missing: no {source}->{target} translation package installed")
    return updated
