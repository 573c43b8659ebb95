"""The one attack contract: one registry of both families' recipes, one result type, no cycle."""

import ast
from pathlib import Path

import pytest

import raysteal.attacks  # noqa: F401  (registers the collaborative recipes)
import raysteal.extraction  # noqa: F401  (registers the sequential recipes)
from raysteal.attacks import AttackConfig, AttackResult
from raysteal.attacks.registry import FAMILIES, KNOWLEDGE, get_recipe, recipe_names, register_recipe
from raysteal.errors import ConfigError
from raysteal.extraction import ExtractionConfigBase

ROOT = Path(__file__).resolve().parents[1] / "raysteal"


def test_every_recipe_is_registered_once_with_its_family_config_and_knowledge():
    names = recipe_names()
    assert names == sorted(recipe_names("collaborative") + recipe_names("sequential"))
    assert {"ptd", "pta", "pta_pre", "ptq", "ptaq", "ptaq_pre", "qsd", "aux_frozen", "popularity"} == set(recipe_names("collaborative"))
    assert {"dfme", "bahsd", "seq_ptd", "seq_ptq", "seq_ptaq"} == set(recipe_names("sequential"))
    for name in names:
        recipe = get_recipe(name)
        assert recipe.name == name and recipe.family in FAMILIES and set(recipe.needs) <= set(KNOWLEDGE)
        assert recipe.config_cls.family == recipe.family
        base = AttackConfig if recipe.family == "collaborative" else ExtractionConfigBase
        assert issubclass(recipe.config_cls, base)
        assert get_recipe(name, recipe.family) is recipe
    assert [name for name in names if get_recipe(name).resumable] == ["bahsd", "dfme"]


def test_a_sequential_recipe_needs_what_its_config_says():
    # the runner reads uses_queries / uses_real_sequences from the config; the registry's needs agree
    for name in recipe_names("sequential"):
        recipe = get_recipe(name, "sequential")
        assert ("queries" in recipe.needs) == recipe.config_cls.uses_queries, name
        real = recipe.config_cls.uses_real_sequences
        if isinstance(real, bool):  # BAHSD's depends on its source
            assert ("target_data" in recipe.needs) == real, name


@pytest.mark.parametrize(
    ("name", "family", "message"),
    [
        (
            "dfme",
            "collaborative",
            r"^attack: 'dfme' attacks sequential targets \(SASRec.*\); this target is collaborative, whose attacks are: aux_frozen, popularity,",
        ),
        (
            "ptq",
            "sequential",
            r"^attack: 'ptq' attacks collaborative targets \(BPR-MF, NeuMF, LMF\); this target is sequential, whose attacks are: bahsd, .*'seq_ptq'$",
        ),
        ("nosuch", "sequential", r"^attack: unknown sequential attack 'nosuch'; known: bahsd, dfme, seq_ptaq, seq_ptd, seq_ptq$"),
        ("nosuch", "collaborative", r"^attack: unknown attack 'nosuch'; known attacks: aux_frozen, .*, qsd$"),
        ("nosuch", None, r"^attack: unknown attack 'nosuch'; known attacks: aux_frozen, bahsd, .*seq_ptq$"),
    ],
)
def test_an_unknown_name_is_one_line_naming_the_known_ones(name, family, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_recipe(name, family)
    assert "\n" not in str(err.value)


def test_registering_checks_family_knowledge_and_repeats():
    with pytest.raises(ValueError, match="family"):
        register_recipe("x", dict, needs=(), summary="")
    with pytest.raises(ValueError, match="unknown knowledge"):
        register_recipe("x", AttackConfig, needs=("weights",), summary="")
    with pytest.raises(ValueError, match="registered twice"):
        register_recipe("ptd", AttackConfig, needs=(), summary="")(lambda *a: None)


def test_one_result_type_for_both_families():
    import raysteal.attacks.base as collaborative
    import raysteal.extraction.result as sequential

    assert collaborative.run_attack.__annotations__["return"] == sequential.run_extraction.__annotations__["return"] == "AttackResult"
    result = AttackResult(clone="model", queries=3)  # type: ignore[arg-type]
    assert result.info == {} and not hasattr(result, "student")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_import_cycle_between_the_families():
    # extraction builds on attacks (the registry, the result, Zhu's stealing loss); never the reverse
    for path in (ROOT / "attacks").glob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("raysteal.extraction")}, path.name
    # the registry is a leaf both families build on: it imports neither (it names their packages)
    assert {m for m in _imports(ROOT / "attacks" / "registry.py") if m.startswith("raysteal")} == {"raysteal.errors"}
