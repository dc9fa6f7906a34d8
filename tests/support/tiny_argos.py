"""Build tiny but real argostranslate packages (`.argosmodel`) for tests.

Each package holds a randomly initialised one-layer MarianMT model converted to CTranslate2,
a sentencepiece model trained on a few hundred caption-like lines, a blank spaCy pipeline for
sentence splitting and `metadata.json`, zipped under one top-level folder exactly like the
packages argostranslate publishes. The translations are gibberish, but every stage of the
real argostranslate path (install by path, sentence splitting, tokenisation, CTranslate2
decoding) runs on them.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}

_ZH_LINES = [
    "视网膜中央静脉阻塞",
    "视盘水肿，边界模糊",
    "黄斑区硬性渗出",
    "荧光素眼底血管造影示荧光素渗漏",
    "棉絮斑及微动脉瘤",
    "玻璃膜疣",
    "吲哚菁绿血管造影",
    "光学相干断层扫描示黄斑水肿",
    "无赤光眼底像",
    "患者男，62岁，右眼视力下降2周",
]
_EN_LINES = [
    "Central retinal vein occlusion",
    "Optic disc edema with blurred margins",
    "Hard exudates in the macula",
    "Fundus fluorescein angiography shows fluorescein leakage",
    "Cotton-wool spots and microaneurysms",
    "Drusen",
    "Indocyanine green angiography",
    "Optical coherence tomography shows macular edema",
    "Red-free fundus photograph",
    "A 62-year-old man with vision loss in the right eye for 2 weeks",
]


def _training_lines() -> list[str]:
    lines = []
    for index in range(300):
        lines.append(f"{_ZH_LINES[index % 10]}，{_ZH_LINES[(index * 3 + 1) % 10]}。")
        lines.append(f"{_EN_LINES[index % 10]}, {_EN_LINES[(index * 7 + 2) % 10].lower()}.")
    return lines


def _train_sentencepiece(path: Path) -> list[str]:
    """Train a small unigram model on caption-like lines; return its pieces in id order."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines()),
        model_writer=model,
        vocab_size=240,
        hard_vocab_limit=False,
        character_coverage=1.0,
        model_type="unigram",
        unk_id=0,
        eos_id=1,
        bos_id=-1,
        pad_id=-1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return [processor.id_to_piece(index) for index in range(processor.get_piece_size())]


def _build_ctranslate2_model(work: Path, spm_path: Path, pieces: list[str], from_code: str, to_code: str, seed: int) -> Path:
    """Random MarianMT saved with its MarianTokenizer, converted by CTranslate2's converter."""
    import ctranslate2
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    hf_dir = work / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (hf_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    shutil.copy(spm_path, hf_dir / "source.spm")
    shutil.copy(spm_path, hf_dir / "target.spm")
    tokenizer = MarianTokenizer(
        str(hf_dir / "source.spm"), str(hf_dir / "target.spm"), str(hf_dir / "vocab.json"),
        source_lang=from_code, target_lang=to_code,
    )
    size = len(vocab)
    config = MarianConfig(
        vocab_size=size,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        pad_token_id=size - 1,
        eos_token_id=0,
        decoder_start_token_id=size - 1,
        forced_eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    with torch.no_grad():
        # Keep end-of-sentence unlikely so every output has some tokens; decoding stops at
        # CTranslate2's maximum length, which max_position_embeddings covers.
        model.final_logits_bias[0, 0] = -20.0
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    model_dir = work / "model"
    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(model_dir), force=True)
    return model_dir


def _save_blank_spacy(path: Path, language: str) -> None:
    """A blank spaCy pipeline; argostranslate adds its own rule-based sentencizer on load."""
    import spacy

    spacy.blank(language).to_disk(path)


def build_tiny_argos_package(
    out_dir: Path, from_code: str, to_code: str, package_version: str = "0.1", seed: int = 0
) -> Path:
    """Write `<out_dir>/translate-<from>_<to>-<version>.argosmodel` and return its path."""
    out_dir = Path(out_dir)
    name = f"translate-{from_code}_{to_code}-{package_version.replace('.', '_')}"
    work = out_dir / f"build-{name}"
    package_dir = work / name
    package_dir.mkdir(parents=True, exist_ok=True)
    pieces = _train_sentencepiece(package_dir / "sentencepiece.model")
    model_dir = _build_ctranslate2_model(work, package_dir / "sentencepiece.model", pieces, from_code, to_code, seed)
    shutil.copytree(model_dir, package_dir / "model", dirs_exist_ok=True)
    _save_blank_spacy(package_dir / "spacy", from_code)
    metadata = {
        "package_version": package_version,
        "argos_version": "1.11.0",
        "from_code": from_code,
        "from_name": LANGUAGE_NAMES[from_code],
        "to_code": to_code,
        "to_name": LANGUAGE_NAMES[to_code],
        "type": "translate",
        "code": name,
        "languages": [],
        "links": [],
    }
    (package_dir / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    (package_dir / "README.md").write_text(
        f"Tiny random {from_code}->{to_code} test package; its output is meaningless.\n", encoding="utf-8"
    )
    archive = out_dir / f"{name}.argosmodel"
    partial = archive.with_suffix(".argosmodel.part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted(package_dir.rglob("*")):
            if file.is_file():
                bundle.write(file, file.relative_to(work).as_posix())
    partial.replace(archive)
    shutil.rmtree(work)
    return archive
