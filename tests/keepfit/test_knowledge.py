"""Domain knowledge as data: importing the released dictionary safely, and coverage of the shipped file."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from keepfit import load_domain_knowledge
from keepfit.evaluation import load_experiments
from keepfit.flair_data import read_flair_dataframe
from keepfit.knowledge import parse_released_dictionary, uncovered_categories

# Category names of the 30 FLAIR pretraining dataframes (the keys of the released dictionary plus
# the names it lacks), as they are written in the `categories` column.
FLAIR_PRETRAINING_CATEGORIES = [
    "no diabetic retinopathy", "mild diabetic retinopathy", "moderate diabetic retinopathy",
    "severe diabetic retinopathy", "proliferative diabetic retinopathy", "no referable diabetic macular edema",
    "hard exudates", "soft exudates", "microaneurysms", "haemorrhages",
    "non clinically significant diabetic macular edema", "age related macular degeneration", "media haze",
    "drusens", "pathologic myopia", "branch retinal vein occlusion", "tessellation", "epiretinal membrane",
    "laser scar", "no laser scar", "macular scar", "central serous retinopathy", "optic disc cupping",
    "central retinal vein occlusion", "tortuous vessels", "asteroid hyalosis", "optic disc pallor",
    "optic disc edema", "shunt", "anterior ischemic optic neuropathy", "parafoveal telangiectasia",
    "retinal traction", "retinitis", "chorioretinitis", "exudates", "retinal pigment epithelium changes",
    "macular hole", "retinitis pigmentosa", "cotton wool spots", "colobomas", "optic disc pit maculopathy",
    "preretinal haemorrhage", "myelinated nerve fibers", "haemorrhagic retinopathy",
    "central retinal artery occlusion", "tilted disc", "cystoid macular edema", "post traumatic choroidal rupture",
    "choroidal folds", "vitreous haemorrhage", "macroaneurysm", "vasculitis", "branch retinal artery occlusion",
    "plaque", "haemorrhagic pigment epithelial detachment", "collaterals", "normal", "large optic cup",
    "retina detachment", "Vogt-Koyanagi syndrome", "maculopathy", "glaucoma", "optic atrophy",
    "severe hypertensive retinopathy", "disc swelling and elevation", "dragged disk", "congenital disk abnormality",
    "Bietti crystalline dystrophy", "peripheral retinal degeneration and break", "neoplasm",
    "yellow-white spots flecks", "fibrosis", "silicon oil", "no proliferative diabetic retinopathy", "no glaucoma",
    "cataract", "hypertensive retinopathy", "neovascular age related macular degeneration",
    "geographical age related macular degeneration", "acute central serous retinopathy",
    "chronic central serous retinopathy", "no cataract", "abnormal optic disc", "abnormal vessels",
    "abnormal macula", "macular edema", "scar", "nevus", "increased cup disc",
    "intraretinal microvascular abnormalities", "red small dots", "neovascularisation", "a disease",
    "superficial haemorrhages", "deep haemorrhages", "ungradable", "noisy", "normal macula",
    "macular degeneration", "diabetic retinopathy", "no hypertensive retinopathy", "mild hypertensive retinopathy",
    "moderate hypertensive retinopathy", "malignant hypertensive retinopathy", "diabetic macular edema", "myopia",
]

RELEASED_STYLE_MODULE = '''"""A dictionary module laid out like the release's."""
import pathlib
pathlib.Path({marker!r}).write_text("imported")

definitions = {{"no diabetic retinopathy": ["no diabetic retinopathy", "no microaneurysms"],
                "cataract": ["opacity seen through"
                             " the lens"],
                "Vogt-Koyanagi syndrome": ["Vogt-Koyanagi syndrome"]}}

abbreviations = {{"cataract": "CAT"}}
'''


def test_shipped_knowledge_covers_flair_and_registered_categories(tmp_path):
    """Every category of the FLAIR pretraining CSVs and of every registered experiment has descriptions."""
    csv_path = tmp_path / "all_categories.csv"
    pd.DataFrame(
        {
            "image": [f"{i}.png" for i in range(len(FLAIR_PRETRAINING_CATEGORIES))],
            "atributes": ["[]"] * len(FLAIR_PRETRAINING_CATEGORIES),
            "categories": [repr([name]) for name in FLAIR_PRETRAINING_CATEGORIES],
        }
    ).to_csv(csv_path, index=False)
    frame = read_flair_dataframe(csv_path, banned=[])
    csv_categories = {c for cats in frame["categories"] for c in cats}
    assert len(csv_categories) == len(FLAIR_PRETRAINING_CATEGORIES)
    registry_categories = {c for spec in load_experiments().experiments.values() for c in spec.classes}
    knowledge = load_domain_knowledge()
    assert uncovered_categories(knowledge, csv_categories) == []
    assert uncovered_categories(knowledge, registry_categories) == []
    for must in ("normal macula", "abnormal macula", "increased cup disc", "hypertensive", "no hypertensive"):
        assert knowledge[must], must


def test_released_dictionary_is_parsed_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    checkout = tmp_path / "KeepFIT-CFP"
    module = checkout / "keepfit" / "modeling" / "dictionary.py"
    module.parent.mkdir(parents=True)
    module.write_text(RELEASED_STYLE_MODULE.format(marker=str(marker)))
    knowledge = parse_released_dictionary(checkout)
    assert not marker.exists()
    assert knowledge == {
        "no diabetic retinopathy": ["no diabetic retinopathy", "no microaneurysms"],
        "cataract": ["opacity seen through the lens"],
        "Vogt-Koyanagi syndrome": ["Vogt-Koyanagi syndrome"],
    }


def test_knowledge_import_command_writes_yaml_that_pretraining_and_evaluation_read(tmp_path):
    from flows.cli import app

    marker = tmp_path / "ran"
    module = tmp_path / "checkout" / "flair" / "modeling" / "dictionary.py"
    module.parent.mkdir(parents=True)
    module.write_text(RELEASED_STYLE_MODULE.format(marker=str(marker)))
    out = tmp_path / "released.yaml"
    result = CliRunner().invoke(app, ["knowledge", "import", str(tmp_path / "checkout"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 categories" in result.output and not marker.exists()
    loaded = load_domain_knowledge(out)
    assert loaded["cataract"] == ["opacity seen through the lens"]
    assert loaded["vogt-koyanagi syndrome"] == ["Vogt-Koyanagi syndrome"]
    assert out.read_text().startswith("# Domain knowledge imported from")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("definitions = dict(a=['x'])\n", "not a literal dictionary"),
        ("other = {'a': ['x']}\n", "no top-level `definitions"),
        ("definitions = {'a': [1]}\n", "list of strings"),
        ("definitions = {'a': ['x']\n", "cannot parse"),
    ],
)
def test_bad_dictionary_files_fail_with_the_file_and_reason(tmp_path, text, message):
    from flows.cli import app

    path = tmp_path / "dictionary.py"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        parse_released_dictionary(path)
    result = CliRunner().invoke(app, ["knowledge", "import", str(path), "--out", str(tmp_path / "k.yaml")])
    assert result.exit_code == 2 and "dictionary.py" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "k.yaml").exists()
