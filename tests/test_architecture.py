"""The shape of the house (docs/design.md): every import points down one order of modules,
recipes import the library and never another recipe, no module is over 550 lines, and the
core inference path imports none of the optional extras."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lower first: a module may import only modules before it (functions' own imports included).
ORDER = [
    "errors", "config", "device", "audio", "text", "download", "reports", "features", "augment", "corpora", "data",
    "kernels", "model", "lm", "decoding", "scoring", "checkpoint", "inference", "alignment", "optim", "distributed", "training",
    "callbacks", "evaluation", "experiment", "classify", "adaptation", "__init__", "cli", "__main__",
    "recipes", "recipes.tts", "recipes.synth",
]
RECIPE_SHARED = {"recipes", "recipes.tts", "recipes.synth"}  # what a recipe may import besides the library


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "asr").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT / "asr").with_suffix("").parts)
        found[name.removesuffix(".__init__") if name != "__init__" else name] = path
    return found


def imports(path: Path) -> set[str]:
    """The asr modules that ``path`` imports anywhere in it, as names relative to the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "asr":
            base = node.module[4:] if node.module != "asr" else ""
            for alias in node.names:  # "from asr import checkpoint" imports the module asr.checkpoint
                candidate = f"{base}.{alias.name}" if base else alias.name
                out.add(candidate if candidate in modules() else base or "__init__")
        elif isinstance(node, ast.Import):
            out |= {a.name[4:] for a in node.names if a.name.startswith("asr.")}
    return out


def rank(name: str) -> int:
    if name in ORDER:
        return ORDER.index(name)
    assert name.startswith("recipes."), f"{name} is not placed in ORDER (tests/test_architecture.py)"
    return len(ORDER)  # every runnable recipe sits at the top


def test_every_import_points_down():
    wrong = []
    for name, path in modules().items():
        for target in imports(path) - {name}:
            if rank(target) >= rank(name) and not (name.startswith("recipes.") and target in RECIPE_SHARED):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_recipes_do_not_import_each_other():
    recipes = {n for n in modules() if n.startswith("recipes.") and n not in RECIPE_SHARED}
    crossing = [f"{n} imports {t}" for n in recipes for t in imports(modules()[n]) if t in recipes and t != n]
    assert not crossing, crossing


def test_no_module_is_over_550_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 550}
    assert not long, long


def test_transcribing_imports_no_optional_extra(tmp_path):
    """`pip install .` without extras must run `asr transcribe`: the CLI and inference modules
    import neither kenlm nor tensorboard nor matplotlib (beam search with an LM imports kenlm
    when it is asked for)."""
    code = ("import sys, asr.cli, asr.inference, asr.evaluation; "
            "print(sorted(m for m in ('kenlm', 'tensorboard', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
